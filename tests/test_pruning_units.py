"""Unit pruning by criterion, merging, shrinking functional models."""

import keras
import numpy as np
import pytest

from keras_compact.pruning import PruningMask, _reconstruct, prune, shrink


TAYLOR = pytest.mark.tensorflow_backend("criterion='taylor' differentiates with tf.GradientTape")


def _tiny(taylor_ready=True):
    """x = [1, 0]: unit 0 is active (norm 1), unit 1 silent (norm 5), unit 2 half active (norm 0.5)."""
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(3, activation="relu", use_bias=False, name="hidden"),
            keras.layers.Dense(1, use_bias=False, name="out"),
        ]
    )
    model.get_layer("hidden").set_weights([np.array([[1.0, 0.0, 0.5], [0.0, 5.0, 0.0]], "float32")])
    model.get_layer("out").set_weights([np.array([[1.0], [1.0], [4.0]], "float32")])
    if taylor_ready:
        model.compile(loss="mse")
    return model, np.array([[1.0, 0.0], [1.0, 0.0]], "float32"), np.zeros((2, 1), "float32")


def _pruned_units(report, name="hidden"):
    layer = next(l for l in report.model.layers if isinstance(l, PruningMask) and l.target.name == name)
    return set(np.flatnonzero(~np.asarray(layer.mask).any(axis=0)))


@pytest.mark.parametrize(
    "criterion, expected",
    [
        ("magnitude", {0, 2}),  # weight norms 1, 5, 0.5
        ("onorm", {1, 2}),  # mean |activation| 1, 0, 0.5
        # pred = 3, d mse / d pred = 2 * 3 = 6; |a * g| = |1 * 6|, |0 * 6|, |0.5 * 24| = 6, 0, 12
        pytest.param("taylor", {0, 1}, marks=TAYLOR),
    ],
)
def test_criteria_rank_a_hand_computed_network(criterion, expected):
    model, x, y = _tiny()
    data = None if criterion == "magnitude" else (x, y)
    report = prune(model, 2 / 3, granularity="unit", criterion=criterion, data=data, layers=["hidden"])
    assert _pruned_units(report) == expected


def test_onorm_of_convolutions_averages_over_positions_and_examples():
    model = keras.Sequential([keras.Input((4, 1)), keras.layers.Conv1D(3, 1, use_bias=False, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.get_layer("conv").set_weights([np.array([[[1.0, -3.0, 2.0]]], "float32")])
    x = np.array([[[1.0], [0.0], [0.0], [0.0]], [[0.0], [0.0], [0.0], [1.0]]], "float32")
    # mean |a| per filter: 1/4, 3/4, 2/4
    report = prune(model, 1 / 3, granularity="unit", criterion="onorm", data=x, layers=["conv"])
    assert _pruned_units(report, "conv") == {0}


def test_merge_refits_the_next_layer_to_the_regularized_least_squares_solution():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="hidden"),
                              keras.layers.Dense(3, name="out")])
    x = rng.normal(size=(50, 4)).astype("float32")
    report = prune(model, 0.5, granularity="unit", criterion="onorm", data=x, merge=True)
    hidden = np.asarray(keras.Model(model.inputs[0], model.get_layer("hidden").output)(x)).astype(np.float64)
    kernel, bias = [w.astype(np.float64) for w in model.get_layer("out").get_weights()]
    kept = sorted(set(range(6)) - _pruned_units(report))
    design = np.hstack([hidden[:, kept], np.ones((50, 1))])
    gram = design.T @ design
    # The map from the kept units to all six, pulled towards keeping each kept unit as it is (as
    # channel reconstruction fits it), read by the unpruned kernel and bias.
    strength = _reconstruct.RIDGE * np.mean(np.diag(gram))
    towards = np.zeros((len(kept) + 1, 6))
    towards[np.arange(len(kept)), kept] = 1.0
    mapping = np.linalg.solve(gram + strength * np.eye(len(gram)), design.T @ hidden + strength * towards)
    new_kernel, new_bias = report.model.get_layer("out").get_weights()
    np.testing.assert_allclose(new_kernel[kept], mapping[:-1] @ kernel, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_bias, bias + mapping[-1] @ kernel, rtol=1e-4, atol=1e-5)
    assert not new_kernel[sorted(_pruned_units(report))].any()


def test_similarity_removes_a_twin_unit_and_its_twin_absorbs_its_outgoing_weights():
    rng = np.random.default_rng(1)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    kernel, bias = [w.copy() for w in model.get_layer("hidden").get_weights()]
    kernel[:, 3], bias[:] = kernel[:, 1], rng.normal(size=4)
    bias[3] = bias[1]
    model.get_layer("hidden").set_weights([kernel, bias])
    report = prune(model, 0.25, granularity="unit", criterion="similarity")
    assert _pruned_units(report) in ({1}, {3})
    x = rng.normal(size=(16, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(report.model(x)), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize(
    "criterion, merge", [("similarity", False), pytest.param("taylor", True, marks=TAYLOR), ("magnitude", True)]
)
def test_prune_never_changes_the_users_model(criterion, merge):
    model, x, y = _tiny()
    before = [w.copy() for w in model.get_weights()]
    data = (x, y) if merge or criterion == "taylor" else None
    prune(model, 0.34, granularity="unit", criterion=criterion, data=data, merge=merge)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _functional_with_batch_norm():
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(16, 3, name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="norm")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(12, 3, activation="sigmoid", name="conv2")(h)  # sigmoid(0) = 0.5: folded
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(24, activation="relu", name="dense")(h)
    model = keras.Model(inputs, keras.layers.Dense(4, name="classes")(h))
    norm = model.get_layer("norm")
    rng = np.random.default_rng(2)
    norm.set_weights([rng.uniform(0.5, 1.5, size=16).astype("float32") for _ in norm.get_weights()])
    return model


def test_shrink_of_a_functional_model_folds_constants_and_keeps_outputs():
    model = _functional_with_batch_norm()
    x = np.random.default_rng(0).uniform(size=(8, 12, 12, 3)).astype("float32")
    pruned = prune(model, 0.5, granularity="unit").model
    smaller = shrink(pruned)
    assert isinstance(smaller, keras.Model) and not isinstance(smaller, keras.Sequential)
    np.testing.assert_allclose(np.asarray(smaller(x)), np.asarray(pruned(x)), atol=1e-5)
    widths = {layer.name: layer.kernel.shape[-1] for layer in smaller.layers if hasattr(layer, "kernel")}
    assert widths == {"conv1": 8, "conv2": 6, "dense": 12, "classes": 4}
    assert smaller.get_layer("norm").gamma.shape == (8,)


def test_shrink_refuses_non_zero_constants_into_same_padding():
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, activation="sigmoid", name="c1"),
                              keras.layers.Conv2D(3, 3, padding="same", name="c2"), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'c1' exactly.*'c2'.*padding='same'"):
        shrink(prune(model, 0.5, granularity="unit", layers=["c1"]).model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(criterion="random"), "criterion='random'"),
        (dict(criterion="onorm"), "criterion='onorm' works on examples: pass data=x"),
        (dict(criterion="taylor"), r"pass data=\(x, y\)"),
        (dict(merge=True), "merge=True works on examples"),
        (dict(criterion="onorm", data=np.zeros((3, 5), "float32")), r"input shape \(2,\).*\(3, 5\)"),
        (dict(criterion="taylor", data=np.zeros((3, 2), "float32")), "needs? .*labels|pass data=\\(x, y\\)"),
        (dict(criterion="magnitude", data=np.zeros((3, 2), "float32")), "would be ignored"),
        (dict(merge="yes"), "merge='yes'"),
    ],
)
def test_bad_unit_pruning_arguments_raise_clear_errors(kwargs, message):
    model, _, _ = _tiny()
    with pytest.raises(ValueError, match=message):
        prune(model, 0.5, granularity="unit", **kwargs)


def test_criteria_and_merge_need_unit_granularity():
    model, x, _ = _tiny()
    with pytest.raises(ValueError, match="criterion='onorm' chooses whole units; use it with granularity='unit'"):
        prune(model, 0.5, criterion="onorm", data=x)


@TAYLOR
def test_taylor_needs_a_compiled_loss():
    model, x, y = _tiny(taylor_ready=False)
    with pytest.raises(ValueError, match="compile 'sequential.*' with one loss"):
        prune(model, 0.5, granularity="unit", criterion="taylor", data=(x, y))


def test_merge_names_a_layer_whose_units_branch():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu", name="fork")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([keras.layers.Dense(2)(hidden), keras.layers.Dense(2)(hidden)]))
    x = np.zeros((4, 4), "float32")
    with pytest.raises(ValueError, match="merge=True changes the layer .* 'fork' feed 2 layers"):
        prune(model, 0.5, granularity="unit", data=x, merge=True, layers=["fork"])


def test_shrink_keeps_a_softmax_class_whose_weights_are_all_zero():
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    kernel, bias = model.layers[1].get_weights()
    kernel[:, 1], bias[1] = 0.0, 0.0
    model.layers[1].set_weights([kernel, bias])
    assert shrink(model).layers[-1].units == 3


def test_add_built_and_reloaded_sequentials_keep_their_classes_and_shrink(tmp_path):
    model = keras.Sequential()
    model.add(keras.Input((20,)))
    model.add(keras.layers.Dense(8, activation="relu", name="hidden"))
    model.add(keras.layers.Dense(3, name="classes"))
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(6, 20)).astype("float32")
    for form in (model, keras.models.load_model(tmp_path / "m.keras")):
        report = prune(form, 0.5, granularity="unit", criterion="onorm", data=x, merge=True)
        assert [layer.name for layer in report.layers] == ["hidden"]
        smaller = shrink(report.model)
        assert [layer.units for layer in smaller.layers] == [4, 3]
        np.testing.assert_allclose(np.asarray(smaller(x)), np.asarray(report.model(x)), atol=1e-5)
