"""Pruning during training: prunable() + GradualPruning."""

import keras
import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from keras_compact.callbacks import GradualPruning, TargetedDropoutRamp
from keras_compact.layers import TargetedDropout
from keras_compact.pruning import PruningMask, prunable, strip


def _model(dropout=False):
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")
    return keras.Sequential(
        [
            keras.Input((12,)),
            TargetedDropout(hidden, 0.0, 1.0, seed=1) if dropout else hidden,
            keras.layers.Dense(3, name="out"),
        ]
    )


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)


def _compiled(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _zeros(model):
    return {layer.target.name: int(np.sum(np.asarray(layer.mask) == 0)) for layer in model.layers
            if isinstance(layer, PruningMask)}


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.zeros = []

    def on_train_batch_begin(self, batch, logs=None):
        self.zeros.append(_zeros(self.model))


def test_prunable_wraps_every_supported_layer_with_masks_of_ones_and_leaves_the_model_alone():
    model = _model()
    ready = prunable(model)
    assert [type(layer).__name__ for layer in ready.layers] == ["PruningMask", "PruningMask"]
    assert all(np.all(np.asarray(layer.mask) == 1) for layer in ready.layers)
    x, _ = _data()
    np.testing.assert_allclose(np.asarray(ready(x)), np.asarray(model(x)), atol=1e-6)
    assert ready.layers[0].target is not model.get_layer("hidden")  # its own layers, same weights


def test_prunable_reaches_into_nested_models_and_keeps_targeted_dropout():
    inner = keras.Sequential([keras.Input((12,)), TargetedDropout(keras.layers.Dense(8, name="deep"), 0.5, 0.5)],
                             name="inner")
    inputs = keras.Input((12,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
    ready = prunable(model)
    masks = [layer for layer in ready._flatten_layers() if isinstance(layer, PruningMask)]
    assert sorted(layer.target.name for layer in masks) == ["deep", "top"]
    assert any(isinstance(layer.layer, TargetedDropout) for layer in masks)


def test_every_scheduled_step_has_the_exact_sparsity_of_the_schedule():
    model = _compiled(prunable(_model()))
    x, y = _data()
    schedule = GradualPruning(0.8, begin_step=2, end_step=10, frequency=3)
    recorder = _Recorder()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[schedule, recorder])  # 12 steps
    sizes = {"hidden": 12 * 16, "out": 16 * 3}
    current = 0.0
    for step, zeros in enumerate(recorder.zeros):
        if step in (2, 5, 8, 10):  # begin, every 3 steps, and end_step
            current = 0.8 * (1 - (1 - (step - 2) / 8) ** 3)
        assert zeros == {name: round(current * size) for name, size in sizes.items()}, step


def test_pruned_weights_stay_pruned_and_strip_leaves_plain_layers_with_the_zeros():
    model = _compiled(prunable(_model()))
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[GradualPruning(0.7, frequency=4)])
    assert history.history["sparsity"][-1] == pytest.approx(0.7, abs=0.01)
    plain = strip(model)
    assert not any(isinstance(layer, PruningMask) for layer in plain.layers)
    kernels = [layer.kernel.numpy() for layer in plain.layers]
    assert np.mean(np.concatenate([k.ravel() for k in kernels]) == 0) == pytest.approx(0.7, abs=0.01)
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(model(x)), atol=1e-5)


def test_unit_granularity_removes_whole_units_with_their_biases():
    model = _compiled(prunable(_model(), granularity="unit"))
    assert [layer.target.name for layer in model.layers if isinstance(layer, PruningMask)] == ["hidden"]
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[GradualPruning(0.5, frequency=2)])
    mask, bias_mask = np.asarray(model.layers[0].mask), np.asarray(model.layers[0].bias_mask)
    assert np.sum(~mask.any(axis=0)) == 8 and np.array_equal(mask.any(axis=0), bias_mask == 1)


@pytest.mark.parametrize(
    "schedule, final",
    [
        (tfmot.sparsity.keras.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=8, frequency=2), 0.6),
        (tfmot.sparsity.keras.ConstantSparsity(0.3, begin_step=0, frequency=1), 0.3),
        (lambda step: min(0.05 * step, 0.5), 0.5),
    ],
)
def test_any_schedule_callable_and_tfmot_schedules_set_the_sparsity(schedule, final):
    model = _compiled(prunable(_model()))
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[GradualPruning(schedule, frequency=1)])
    assert history.history["sparsity"][-1] == pytest.approx(final, abs=0.01)


def test_saved_mid_training_the_masks_and_the_schedule_resume(tmp_path):
    model = _compiled(prunable(_model()))
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[GradualPruning(0.8, end_step=24, frequency=4)])
    zeros = _zeros(model)
    assert 0 < sum(zeros.values())
    model.save(tmp_path / "half.keras")
    restored = keras.models.load_model(tmp_path / "half.keras")
    assert _zeros(restored) == zeros and int(restored.optimizer.iterations.numpy()) == 12
    history = restored.fit(x, y, batch_size=8, epochs=1, verbose=0,
                           callbacks=[GradualPruning(0.8, end_step=24, frequency=4)])
    assert history.history["sparsity"][-1] == pytest.approx(0.8, abs=0.01)


def test_targeted_dropout_inside_a_mask_keeps_drawing_and_ramps():
    model = _compiled(prunable(_model(dropout=True)))
    x, y = _data()
    ramp = TargetedDropoutRamp(target_rate=(0.0, 0.9), drop_rate=0.5, unit="step", end=10)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[GradualPruning(0.5, end_step=10, frequency=2), ramp])
    dropout = model.layers[0].layer
    assert isinstance(dropout, TargetedDropout)
    assert int(np.asarray(dropout.seed_generator.state)[1]) == 12  # one draw per step, written back
    assert float(dropout.target_rate.numpy()) == pytest.approx(0.9)


def test_numpy_scalars_are_numbers():
    model = _compiled(prunable(_model()))
    schedule = GradualPruning(np.float32(0.5), begin_step=np.int64(0), frequency=np.int32(2), power=np.float64(3))
    history = model.fit(*_data(), batch_size=8, epochs=1, verbose=0, callbacks=[schedule])
    assert history.history["sparsity"][-1] == pytest.approx(0.5, abs=0.01)


def test_gradual_pruning_without_masks_says_what_to_do():
    model = _compiled(_model())
    with pytest.raises(ValueError, match="no PruningMask layer.*prunable"):
        model.fit(*_data(), epochs=1, verbose=0, callbacks=[GradualPruning(0.5)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target_sparsity=1.5), "target_sparsity=1.5"),
        (dict(target_sparsity=0.5, frequency=0), "frequency=0"),
        (dict(target_sparsity=0.5, power=-1), "power=-1"),
        (dict(target_sparsity=0.5, scope="net"), "scope='net'"),
        (dict(target_sparsity=0.5, begin_step=5, end_step=5), "end_step=5"),
        (dict(target_sparsity=0.5, begin_step=np.int64(-1)), r"begin_step=np.int64\(-1\)"),
        (dict(target_sparsity=float("nan")), "target_sparsity=nan"),
    ],
)
def test_bad_gradual_pruning_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualPruning(**kwargs)


def test_a_dataset_of_unknown_length_needs_an_end_step():
    import tensorflow as tf

    model = _compiled(prunable(_model()))
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).filter(lambda a, b: True)
    with pytest.raises(ValueError, match="needs end_step here.*unknown length"):
        model.fit(dataset, epochs=1, verbose=0, callbacks=[GradualPruning(0.5)])
    history = model.fit(dataset, epochs=2, verbose=0, callbacks=[GradualPruning(0.5, end_step=12, frequency=2)])
    assert history.history["sparsity"][-1] == pytest.approx(0.5, abs=0.01)


def test_a_schedule_outside_the_unit_interval_is_named():
    model = _compiled(prunable(_model()))
    with pytest.raises(ValueError, match="sparsity \\(from the schedule at step 0\\)=2.0"):
        model.fit(*_data(), epochs=1, verbose=0, callbacks=[GradualPruning(lambda step: 2.0)])
