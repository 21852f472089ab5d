import keras
import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from conftest import run_mirrored_like_one_device
from keras_compact.callbacks import DropoutSchedule, TargetedDropoutRamp
from keras_compact.layers import TargetedDropout


def _identity_probe(fan_in=40, units=25, target_rate=0.5, drop_rate=0.5, granularity="weight"):
    """A linear Dense whose output on the identity matrix is its (masked) kernel."""
    dense = keras.layers.Dense(units, use_bias=False)
    layer = TargetedDropout(dense, target_rate, drop_rate, granularity, seed=0)
    layer.build((None, fan_in))
    return layer, np.eye(fan_in, dtype="float32")


def test_only_candidate_weights_are_dropped_at_about_drop_rate():
    layer, probe = _identity_probe(target_rate=0.6, drop_rate=0.3)
    kernel = layer.layer.kernel.numpy()
    ranks = np.argsort(np.argsort(np.abs(kernel), axis=0), axis=0)
    candidates = ranks < int(0.6 * 40)
    dropped = np.stack([np.asarray(layer(probe, training=True)) == 0 for _ in range(60)])  # the bound below scales
    assert not dropped[:, ~candidates].any()  # the top 40% by magnitude are never dropped
    fraction = dropped[:, candidates].mean()
    draws = dropped[:, candidates].size
    assert abs(fraction - 0.3) < 4 * np.sqrt(0.3 * 0.7 / draws), fraction


def _expected_thresholds(kernel, rate):
    return np.sort(np.abs(kernel), axis=0)[int(rate * kernel.shape[0])]


def test_thresholds_are_kept_for_refresh_steps_and_recomputed_when_the_rate_changes():
    layer, probe = _identity_probe(target_rate=0.5, drop_rate=0.0)
    layer.refresh_steps = 3
    kernel = layer.layer.kernel.numpy()
    layer(probe, training=True)
    np.testing.assert_allclose(layer.thresholds.numpy(), _expected_thresholds(kernel, 0.5))
    layer.layer.kernel.assign(2 * kernel)
    for _ in range(2):  # steps 1 and 2 keep the thresholds of step 0
        layer(probe, training=True)
        np.testing.assert_allclose(layer.thresholds.numpy(), _expected_thresholds(kernel, 0.5))
    layer(probe, training=True)  # step 3 recomputes
    np.testing.assert_allclose(layer.thresholds.numpy(), _expected_thresholds(2 * kernel, 0.5))
    layer.set_rates(target_rate=0.25)
    layer(probe, training=True)  # a new rate recomputes at once
    np.testing.assert_allclose(layer.thresholds.numpy(), _expected_thresholds(2 * kernel, 0.25))


def test_fresh_selection_every_step_targets_exactly_the_smallest_weights():
    dense = keras.layers.Dense(25, use_bias=False)
    layer = TargetedDropout(dense, target_rate=0.6, drop_rate=1.0, seed=0, refresh_steps=1)
    layer.build((None, 40))
    kernel = dense.kernel.numpy()
    dropped = np.asarray(layer(np.eye(40, dtype="float32"), training=True)) == 0
    np.testing.assert_array_equal(dropped, np.argsort(np.argsort(np.abs(kernel), axis=0), axis=0) < 24)
    assert not hasattr(layer, "thresholds")  # nothing cached


def test_unit_granularity_drops_whole_low_norm_units():
    layer, probe = _identity_probe(target_rate=0.4, drop_rate=0.5, granularity="unit")
    norms = np.linalg.norm(layer.layer.kernel.numpy(), axis=0)
    candidates = np.argsort(np.argsort(norms)) < int(0.4 * 25)
    dropped_units = []
    for _ in range(200):
        zero = np.asarray(layer(probe, training=True)) == 0
        assert np.all(zero.all(axis=0) == zero.any(axis=0))  # whole columns or nothing
        dropped_units.append(zero.all(axis=0))
    dropped_units = np.array(dropped_units)
    assert not dropped_units[:, ~candidates].any()
    assert abs(dropped_units[:, candidates].mean() - 0.5) < 4 * np.sqrt(0.25 / dropped_units[:, candidates].size)


def test_inference_runs_the_wrapped_layer_untouched_and_kernel_is_never_changed():
    layer, probe = _identity_probe(target_rate=1.0, drop_rate=1.0)
    before = layer.layer.kernel.numpy().copy()
    assert np.all(np.asarray(layer(probe, training=True)) == 0)
    np.testing.assert_array_equal(np.asarray(layer(probe)), before)
    np.testing.assert_array_equal(layer.layer.kernel.numpy(), before)


@pytest.mark.parametrize(
    "inner, shape",
    [
        (keras.layers.Conv1D(4, 3), (2, 9, 3)),
        (keras.layers.Conv2D(4, 3), (2, 7, 7, 3)),
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (2, 7, 7, 3)),
    ],
)
def test_convolutions_are_masked_per_filter(inner, shape):
    layer = TargetedDropout(inner, target_rate=1.0, drop_rate=1.0)
    x = np.random.default_rng(0).uniform(size=shape).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(inner(x)))
    bias_only = np.broadcast_to(inner.bias.numpy(), layer(x, training=True).shape)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), bias_only)


def test_save_and_load_keeps_wrapper_and_rates(tmp_path):
    model = keras.Sequential(
        [keras.Input((12,)), TargetedDropout(keras.layers.Dense(5), 0.3, 0.7, "unit", seed=3, name="td")]
    )
    model.get_layer("td").set_rates(target_rate=0.45)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras").get_layer("td")
    assert isinstance(restored, TargetedDropout) and restored.granularity == "unit"
    assert float(restored.target_rate.numpy()) == pytest.approx(0.45)
    assert float(restored.drop_rate.numpy()) == pytest.approx(0.7)
    x = np.ones((2, 12), "float32")
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(target_rate=1.5), ValueError, "target_rate=1.5"),
        (dict(drop_rate=-0.1), ValueError, "drop_rate=-0.1"),
        (dict(granularity="filter"), ValueError, "granularity='filter'"),
        (dict(refresh_steps=0), ValueError, "refresh_steps=0"),
        (dict(refresh_steps=2.5), ValueError, "refresh_steps=2.5"),
        (dict(refresh_steps=True), ValueError, "refresh_steps=True"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        TargetedDropout(keras.layers.Dense(3), **kwargs)


def test_unsupported_layer_type_lists_what_is_supported():
    with pytest.raises(TypeError, match="Dense, Conv1D, Conv2D, Conv3D, DepthwiseConv2D, .*SeparableConv2D. Received: layer=LSTM"):
        TargetedDropout(keras.layers.LSTM(3))


def _small_model():
    model = keras.Sequential(
        [
            keras.Input((16,)),
            TargetedDropout(keras.layers.Dense(8, activation="relu"), 0.0, 0.5),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(128, 16)).astype("float32"), np.arange(128) % 2


def test_ramp_raises_the_target_rate_and_logs_it():
    history = _small_model().fit(*_data(), epochs=5, verbose=0, callbacks=[TargetedDropoutRamp((0.0, 0.8))])
    np.testing.assert_allclose(history.history["target_rate"], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    np.testing.assert_allclose(history.history["drop_rate"], [0.5] * 5)


def test_ramp_accepts_tfmot_schedules_per_step():
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=8)
    ramp = TargetedDropoutRamp(schedule, unit="step")
    history = _small_model().fit(*_data(), batch_size=32, epochs=2, verbose=0, callbacks=[ramp])
    # 4 steps per epoch: the last step of each epoch is step 3, then 7.
    expected = [float(schedule(step)[1]) for step in (3, 7)]
    np.testing.assert_allclose(history.history["target_rate"], expected, atol=1e-6)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: TargetedDropoutRamp((0.0, 0.8), unit="step", end=7), id="targeted_dropout_ramp"),
    # The same position bookkeeping; DropoutSchedule retraces the step at each new rate (10 s on JAX).
    pytest.param(lambda: DropoutSchedule(final_rate=0.4, schedule="linear", unit="step", end=7), id="dropout_schedule",
                 marks=pytest.mark.tensorflow_backend("the targeted_dropout_ramp case covers the bookkeeping on JAX")),
])
def test_step_schedules_start_again_on_a_second_fit(make):
    callback = make()
    model = _small_model()
    logged = "target_rate" if isinstance(callback, TargetedDropoutRamp) else "dropout_rate"
    first = model.fit(*_data(), batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    second = model.fit(*_data(), batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    assert first.history[logged] == second.history[logged]
    np.testing.assert_allclose(first.history[logged][0], 3 / 7 * (0.8 if logged == "target_rate" else 0.4), atol=1e-6)


def test_curriculum_dropout_rises_towards_the_final_rate():
    callback = DropoutSchedule(final_rate=0.5)
    history = _small_model().fit(*_data(), epochs=4, verbose=0, callbacks=[callback])
    gamma = 10.0 / 3
    expected = [0.5 * (1 - np.exp(-gamma * t)) for t in range(4)]
    np.testing.assert_allclose(history.history["dropout_rate"], expected, atol=1e-6)


def test_ramp_without_targeted_dropout_layers_is_an_error():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="no TargetedDropout layer"):
        model.fit(*_data(), epochs=1, verbose=0, callbacks=[TargetedDropoutRamp()])


def test_ramp_rejects_rates_outside_unit_interval():
    with pytest.raises(ValueError, match="target_rate=1.2"):
        TargetedDropoutRamp(target_rate=(0.0, 1.2))


def test_callbacks_round_trip_through_their_config():
    ramp = TargetedDropoutRamp(target_rate=(0.1, 0.8), drop_rate=0.4, schedule="polynomial", start=1, end=5)
    clone = TargetedDropoutRamp(**ramp.get_config())
    assert clone.get_config() == ramp.get_config()
    schedule = DropoutSchedule(final_rate=0.3, gamma=2.0, unit="step")
    assert DropoutSchedule(**schedule.get_config()).get_config() == schedule.get_config()
    assert DropoutSchedule(**schedule.get_config()).rate_at(3) == pytest.approx(0.3 * (1 - np.exp(-6.0)))


_MIRRORED_SCRIPT = """
    import keras
    from keras_compact import TargetedDropout
    from keras_compact.callbacks import TargetedDropoutRamp
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:512] / 16).astype("float32")
    y = digits.target[:512]

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((64,)),
            TargetedDropout(keras.layers.Dense(32, activation="relu"), 0.5, 0.5, seed=1, refresh_steps=4),
            keras.layers.Dense(10),
        ])
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def train(model):
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0,
                  callbacks=[TargetedDropoutRamp(target_rate=(0.0, 0.6), unit="step")])
        return model.get_weights()
"""


@pytest.mark.tensorflow_backend("tf.distribute")
def test_trains_under_mirrored_strategy_on_two_cpus_like_one_device():
    # Both replicas draw the same mask from the same seed, so the averaged gradient is one device's.
    run_mirrored_like_one_device(_MIRRORED_SCRIPT)
