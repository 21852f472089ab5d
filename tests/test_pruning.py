import keras
import numpy as np
import pytest

from keras_compact.layers import TargetedDropout
from keras_compact.pruning import PruningMask, prune, shrink, strip


def _model():
    return keras.Sequential(
        [
            keras.Input((9, 9, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise"),
            keras.layers.Flatten(),
            TargetedDropout(keras.layers.Dense(37, activation="relu", name="hidden"), 0.5, 0.5),
            keras.layers.Dense(10, name="classes"),
        ]
    )


def _kernels(model):
    return {layer.name: layer.kernel.numpy() for layer in model._flatten_layers() if hasattr(layer, "kernel")}


@pytest.mark.parametrize("sparsity", [0.0, 0.33, 0.5, 0.9, 0.99])
def test_weight_pruning_reaches_the_asked_sparsity_in_every_layer(sparsity):
    report = prune(_model(), sparsity)
    assert {layer.name for layer in report.layers} == {"conv", "depthwise", "hidden", "classes"}
    for layer in report.layers:
        assert layer.zeros == round(sparsity * layer.weights), layer


def test_pruned_weights_are_the_smallest_of_each_unit():
    model = _model()
    before = {name: np.abs(k) for name, k in _kernels(model).items()}
    report = prune(model, 0.6)
    after = _kernels(report.model)
    for name in ("conv", "hidden", "classes"):
        magnitude = before[name].reshape(-1, before[name].shape[-1])
        zero = after[name].reshape(magnitude.shape) == 0
        for unit in range(magnitude.shape[1]):
            assert magnitude[zero[:, unit], unit].max() <= magnitude[~zero[:, unit], unit].min()


def test_unit_pruning_zeroes_whole_units_and_keeps_the_classes():
    report = prune(_model(), 0.25, granularity="unit")
    assert "classes" not in {layer.name for layer in report.layers}
    for layer in report.layers:
        assert layer.pruned_units == round(0.25 * layer.units)
        assert layer.zeros == layer.pruned_units * layer.weights // layer.units


def test_fine_tuning_keeps_the_zeros_and_strip_leaves_plain_layers():
    model = _model()
    report = prune(model, 0.8)
    pruned = report.model
    assert sum(isinstance(layer, PruningMask) for layer in pruned.layers) == 4
    zeros = {name: k == 0 for name, k in _kernels(pruned).items()}
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(64, 9, 9, 3)).astype("float32"), np.arange(64) % 10
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=2, verbose=0)
    plain = strip(pruned)
    assert not any(isinstance(layer, (PruningMask, TargetedDropout)) for layer in plain.layers)
    for name, kernel in _kernels(plain).items():
        assert np.all(kernel[zeros[name]] == 0), name
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(pruned(x)), atol=1e-5)


def test_strip_recurses_into_nested_models_and_leaves_the_pruned_model_as_it_was():
    masked = PruningMask(keras.layers.Dense(8, activation="relu", name="inner_dense"))
    inner = keras.Sequential([keras.Input((16,)), masked], name="inner")
    inputs = keras.Input((16,))
    pruned = keras.Model(inputs, keras.layers.Dense(3, name="out")(inner(inputs)))
    mask = (np.arange(16 * 8).reshape(16, 8) % 2).astype("float32")
    masked.mask.assign(mask)  # the kernel itself keeps its values under the mask, as while fine-tuning
    before = [w.copy() for w in pruned.get_weights()]
    plain = strip(pruned)
    assert not any(isinstance(layer, PruningMask) for layer in plain._flatten_layers())
    stripped = next(layer for layer in plain._flatten_layers() if layer.name == "inner_dense")
    np.testing.assert_array_equal(stripped.kernel.numpy() == 0, mask == 0)
    x = np.random.default_rng(0).uniform(size=(8, 16)).astype("float32")
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(pruned(x)), atol=1e-5)
    for a, b in zip(before, pruned.get_weights()):
        np.testing.assert_array_equal(a, b)  # strip wrote nothing into the pruned model


def test_layer_scope_ranks_each_layers_weights_together():
    model = _model()
    before = {name: np.abs(k) for name, k in _kernels(model).items()}
    report = prune(model, 0.6, scope="layer")
    for layer in report.layers:
        assert layer.zeros == round(0.6 * layer.weights)
    for name, kernel in _kernels(report.model).items():
        zero = kernel == 0
        assert before[name][zero].max() <= before[name][~zero].min(), name


def test_scope_is_for_weights():
    with pytest.raises(ValueError, match="scope='layer' chooses where weights are ranked"):
        prune(_model(), 0.5, granularity="unit", scope="layer")


def test_global_scope_prunes_the_asked_fraction_of_all_weights():
    report = prune(_model(), 0.7, scope="global")
    assert report.sparsity == pytest.approx(0.7, abs=1e-4)


def test_model_without_prunable_layers_is_an_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Activation("relu")])
    with pytest.raises(ValueError, match="has no prunable layer"):
        prune(model, 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sparsity=1.5), "sparsity=1.5"),
        (dict(sparsity=0.5, granularity="filter"), "granularity='filter'"),
        (dict(sparsity=0.5, scope="net"), "scope='net'"),
        (dict(sparsity=0.5, layers=["nope"]), r"\['nope'\] are not prunable"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune(_model(), **kwargs)


def _shrinkable(kind):
    if kind == "dense":
        return keras.Sequential(
            [
                keras.Input((20,)),
                TargetedDropout(keras.layers.Dense(40, activation="relu"), 0.5, 0.5, "unit"),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(30, activation="tanh"),
                keras.layers.Dense(5),
            ]
        ), (20,)
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(12, 3, padding="same"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(24, activation="relu"),
            keras.layers.Dense(4),
        ]
    ), (12, 12, 3)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_shrink_removes_pruned_units_with_identical_outputs(kind):
    model, shape = _shrinkable(kind)
    report = prune(model, 0.5, granularity="unit")
    smaller = shrink(report.model)
    x = np.random.default_rng(0).uniform(size=(16,) + shape).astype("float32")
    np.testing.assert_allclose(np.asarray(smaller(x)), np.asarray(report.model(x)), atol=1e-5)
    assert smaller.count_params() < 0.6 * model.count_params()
    widths = [layer.kernel.shape[-1] for layer in smaller.layers if hasattr(layer, "kernel")]
    originals = [layer.kernel.shape[-1] for layer in model._flatten_layers() if hasattr(layer, "kernel")]
    assert widths[:-1] == [round(w / 2) for w in originals[:-1]] and widths[-1] == originals[-1]


def test_shrink_names_the_layer_whose_units_reach_a_residual_add():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu", name="branch")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Add(name="residual")([inputs, hidden]))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'branch'.*reach Add 'residual', which combines several inputs"):
        shrink(prune(model, 0.5, granularity="unit").model)


def test_shrink_names_the_layer_whose_units_branch():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu", name="fork")(inputs)
    outputs = [keras.layers.Dense(2, name="a")(hidden), keras.layers.Dense(3, name="b")(hidden)]
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"'fork'.*feed 2 layers \['a', 'b'\], not one"):
        shrink(prune(model, 0.5, granularity="unit", layers=["fork"]).model)


@pytest.mark.tensorflow_backend("exports; the export from a JAX process is tested in test_backends.py")
def test_shrunk_model_exports_smaller_and_agrees_in_litert(tmp_path):
    from tflite_export import export

    model, shape = _shrinkable("dense")
    pruned = prune(model, 0.5, granularity="unit").model
    x = np.random.default_rng(1).uniform(size=(32,) + shape).astype("float32")
    full = export(pruned, tmp_path / "full.tflite", verify_with=x, sparse=False)
    small = export(shrink(pruned), tmp_path / "small.tflite", verify_with=x)
    assert small.bytes < 0.7 * full.bytes
    assert small.inputs == full.inputs
    assert small.max_abs_diff < 1e-5
    np.testing.assert_allclose(
        np.asarray(shrink(pruned)(x)), np.asarray(pruned(x)), atol=1e-5
    )
