"""Growing layers and the fan-in / fan-out penalties (non-parametric networks)."""

import keras
import numpy as np
import pytest

from conftest import gradients
from keras_compact.pruning import grow, prune, shrink
from keras_compact.regularizers import FanIn, FanOut


def _functional():
    inputs = keras.Input((10, 10, 2))
    h = keras.layers.Conv2D(6, 3, name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="norm")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(5, 3, activation="relu", name="conv2")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(7, activation="tanh", name="dense")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


@pytest.mark.parametrize("name", ["conv1", "conv2", "dense"])
def test_grown_model_computes_what_the_model_did(name):
    model = _functional()
    x = np.random.default_rng(0).uniform(size=(4, 10, 10, 2)).astype("float32")
    wider = grow(model, name, 4)
    np.testing.assert_allclose(np.asarray(wider(x)), np.asarray(model(x)), atol=1e-5)
    assert wider.get_layer(name).kernel.shape[-1] == model.get_layer(name).kernel.shape[-1] + 4
    new_incoming = wider.get_layer(name).kernel.numpy()[..., -4:]
    assert np.any(new_incoming != 0)  # from the layer's initializer, so the new units can learn


def test_grow_keeps_a_sequential_model_sequential_and_leaves_the_original():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    before = [w.copy() for w in model.get_weights()]
    wider = grow(model, "hidden", 3)
    assert isinstance(wider, keras.Sequential) and wider.get_layer("hidden").units == 7
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_grow_then_prune_and_shrink_returns_to_the_original_width():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    wider = grow(model, "hidden", 4)
    kernel, bias = wider.get_layer("hidden").get_weights()
    kernel[:, 4:], bias[4:] = 0.0, 0.0  # as the fan-in penalty would leave them
    wider.get_layer("hidden").set_weights([kernel, bias])
    back = shrink(prune(wider, 0.5, granularity="unit").model)
    assert back.get_layer("hidden").units == 4
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize(
    "name, units, message",
    [
        ("nope", 2, "layer_name='nope'"),
        ("norm", 2, r"Dense and convolution layers \(Dense, Conv1D, .*SeparableConv2D\).*layer_name='norm', a BatchNormalization"),
        ("out", 2, "'out' are a model output"),
        ("dense", 0, "units=0"),
        ("dense", 1.5, "units=1.5"),
    ],
)
def test_bad_grow_arguments_raise_clear_errors(name, units, message):
    with pytest.raises(ValueError, match=message):
        grow(_functional(), name, units)


def test_fan_in_is_the_sum_of_each_units_incoming_norm():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype("float32")
    expected = 0.1 * np.linalg.norm(kernel.reshape(-1, 5), axis=0).sum()
    assert float(FanIn(factor=0.1)(kernel)) == pytest.approx(expected, rel=1e-5)
    l1 = 0.1 * np.abs(kernel).sum()
    assert float(FanIn(factor=0.1, p=1)(kernel)) == pytest.approx(l1, rel=1e-5)


def test_fan_out_is_the_sum_of_each_input_units_outgoing_norm():
    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 5)).astype("float32")
    expected = 0.2 * np.linalg.norm(np.moveaxis(kernel, -2, 0).reshape(4, -1), axis=1).sum()
    assert float(FanOut(factor=0.2)(kernel)) == pytest.approx(expected, rel=1e-5)


def test_penalties_have_a_finite_gradient_at_a_dead_unit():
    kernel = keras.Variable(np.zeros((4, 3), "float32"))
    (gradient,) = gradients(lambda: FanIn(factor=1.0)(kernel) + FanOut(factor=1.0)(kernel), variables=[kernel])
    assert np.all(np.isfinite(gradient))


def test_penalties_drive_units_to_zero_in_training():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)),
                              keras.layers.Dense(32, activation="relu", kernel_regularizer=FanIn(factor=0.02)),
                              keras.layers.Dense(2, kernel_regularizer=FanOut(factor=0.02))])
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    norms = lambda: np.linalg.norm(model.layers[0].kernel.numpy(), axis=0)  # noqa: E731
    start = norms()
    model.fit(x, y, epochs=30, verbose=0)
    assert np.sum(norms() < 0.05 * start.mean()) >= 16  # most of 32 units are not needed for one feature


def test_penalties_round_trip_through_keras_serialization(tmp_path):
    for penalty in (FanIn(factor=0.01, p=1), FanOut(factor=0.5)):
        restored = keras.regularizers.deserialize(keras.regularizers.serialize(penalty))
        assert type(restored) is type(penalty) and restored.get_config() == penalty.get_config()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=FanIn(factor=0.3))])
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").layers[0].kernel_regularizer.get_config()["factor"] == 0.3


@pytest.mark.parametrize("kwargs, message", [(dict(factor=-1), "factor=-1"), (dict(p=0.5), "p=0.5"),
                                             (dict(factor=float("nan")), "factor=nan")])
def test_bad_penalty_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FanIn(**kwargs)
