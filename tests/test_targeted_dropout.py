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


def _sorted_candidates(kernel, rate):
    """The sort's selection: per column, |w| strictly below the floor(rate * fan_in) + 1-th smallest."""
    magnitudes = np.abs(kernel)
    return magnitudes < np.sort(magnitudes, axis=0)[int(np.floor(rate * kernel.shape[0]))]


def _candidates(layer, kernel):
    return np.abs(kernel) < layer.thresholds.numpy()


def test_thresholds_are_kept_for_refresh_steps_and_searched_again_when_the_rate_changes():
    layer, probe = _identity_probe(target_rate=0.5, drop_rate=0.0)
    layer.refresh_steps = 3
    kernel = layer.layer.kernel.numpy()
    layer(probe, training=True)
    kept = layer.thresholds.numpy()
    np.testing.assert_array_equal(_candidates(layer, kernel), _sorted_candidates(kernel, 0.5))
    moved = kernel * np.random.default_rng(1).uniform(0.5, 1.5, size=kernel.shape).astype("float32")
    layer.layer.kernel.assign(moved)
    for _ in range(2):  # steps 1 and 2 keep the thresholds of step 0
        layer(probe, training=True)
        np.testing.assert_array_equal(layer.thresholds.numpy(), kept)
    layer(probe, training=True)  # step 3 searches again
    np.testing.assert_array_equal(_candidates(layer, moved), _sorted_candidates(moved, 0.5))
    layer.set_rates(target_rate=0.25)
    layer(probe, training=True)  # a new rate searches at once
    np.testing.assert_array_equal(_candidates(layer, moved), _sorted_candidates(moved, 0.25))


def test_one_is_the_default_refresh_steps():
    assert TargetedDropout(keras.layers.Dense(3)).refresh_steps == 1


def test_fresh_selection_every_step_targets_exactly_the_smallest_weights():
    dense = keras.layers.Dense(25, use_bias=False)
    layer = TargetedDropout(dense, target_rate=0.6, drop_rate=1.0, seed=0)
    layer.build((None, 40))
    kernel = dense.kernel.numpy()
    dropped = np.asarray(layer(np.eye(40, dtype="float32"), training=True)) == 0
    np.testing.assert_array_equal(dropped, np.argsort(np.argsort(np.abs(kernel), axis=0), axis=0) < 24)


def test_every_training_step_targets_exactly_floor_rate_times_fan_in_smallest_weights():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data[:640] / 16).astype("float32"), digits.target[:640]
    keras.utils.set_random_seed(0)
    wrapper = TargetedDropout(keras.layers.Dense(48, activation="relu"), 0.0, 0.66, seed=1)
    model = keras.Sequential([keras.Input((64,)), wrapper, keras.layers.Dense(10)])
    # A large learning rate moves many weights across their unit's threshold at every step.
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for step in range(60):  # train_on_batch hands back the state after each step, on JAX too
        rate = min(step, 50) / 50 * 0.8  # a ramp per step, then constant
        wrapper.set_rates(target_rate=rate)
        kernel = wrapper.layer.kernel.numpy()
        model.train_on_batch(x[step % 20 * 32:][:32], y[step % 20 * 32:][:32])
        candidates = _candidates(wrapper, kernel)
        np.testing.assert_array_equal(candidates, _sorted_candidates(kernel, rate), err_msg=f"step {step}")
        np.testing.assert_array_equal(candidates.sum(axis=0), int(np.floor(np.float32(rate) * 64)))


def _search(values, count, start, passes=None):
    from keras_compact.ops import targeting

    values = np.asarray(values, "float32")
    spacing = np.full(values.shape[1], 1e-3, "float32")
    kwargs = {} if passes is None else dict(passes=passes)
    found, measured = targeting.search_thresholds(
        keras.ops.convert_to_tensor(values), keras.ops.convert_to_tensor(count, "int32"),
        keras.ops.convert_to_tensor(np.asarray(start, "float32")), keras.ops.convert_to_tensor(spacing), **kwargs
    )
    assert np.all(np.asarray(measured) > 0)
    return values < np.asarray(found)[None, :]


def _sorted_below(values, count):
    values = np.asarray(values, "float32")
    return values < np.sort(values, axis=0)[min(count, len(values) - 1)] if count < len(values) else np.ones_like(values, bool)


@pytest.mark.parametrize("passes", [None, 0], ids=["counting", "band_only"])
def test_search_selects_what_the_sort_selects_from_a_nearby_start(passes):
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(size=(200, 40)))
    moved = np.abs(values + rng.normal(scale=0.01, size=values.shape))
    for count in (0, 1, 57, 150, 199, 200):
        start = np.sort(values, axis=0)[min(count, 199)]
        np.testing.assert_array_equal(_search(moved, count, start, passes), _sorted_below(moved, count), err_msg=f"count {count}")


def test_search_from_far_away_falls_back_to_the_sort():
    values = np.abs(np.random.default_rng(1).normal(size=(300, 20)))
    for start in (np.zeros(20), np.full(20, 50.0)):
        np.testing.assert_array_equal(_search(values, 120, start, passes=1), _sorted_below(values, 120))


def test_search_follows_the_sorts_tie_rule():
    rng = np.random.default_rng(2)
    values = np.abs(rng.normal(size=(100, 6)))
    values[:70, 0] = 0.0  # more zeros than the count: no candidates
    values[:40, 1] = 0.0  # fewer zeros than the count: all of them and the smallest others
    values[45:55, 2] = np.sort(values[:, 2])[50]  # ten values tie across the count-th and count+1-th
    start = np.sort(values, axis=0)[50] + 1e-3
    selected = _search(values, 50, start)
    np.testing.assert_array_equal(selected, _sorted_below(values, 50))
    assert selected[:, 0].sum() == 0 and selected[:, 1].sum() == 50 and selected[:, 2].sum() < 50


def test_a_column_tied_at_zero_stays_settled_while_the_others_are_counted():
    from keras_compact.ops import targeting

    rng = np.random.default_rng(3)
    values = np.abs(rng.normal(size=(200, 8))).astype("float32")
    values[:150, 0] = 0.0  # the sort's threshold is 0: no candidates
    start = np.sort(values, axis=0)[100]
    moved = np.where(values > 0, np.abs(values + rng.normal(scale=0.02, size=values.shape)), 0).astype("float32")
    found, settled, _ = targeting.counted_thresholds(
        keras.ops.convert_to_tensor(moved), keras.ops.convert_to_tensor(100, "int32"),
        keras.ops.convert_to_tensor(start), keras.ops.convert_to_tensor(np.full(8, 1e-3, "float32")),
    )
    assert bool(np.asarray(settled)[0]) and float(np.asarray(found)[0]) == 0.0  # no sort needed for it
    np.testing.assert_array_equal(moved < np.asarray(targeting.sort_unsettled(
        keras.ops.convert_to_tensor(moved), keras.ops.convert_to_tensor(100, "int32"), found, settled))[None, :],
        _sorted_below(moved, 100))


def test_drops_take_exactly_the_drop_rate_in_expectation():
    from keras_compact.ops import targeting

    targeted = keras.ops.convert_to_tensor(np.ones((50, 40), bool))
    seed = keras.random.SeedGenerator(0)
    for rate in (0.0, 1.0):
        assert np.asarray(targeting.dropped(targeted, rate, seed)).mean() == rate
    draws = np.stack([np.asarray(targeting.dropped(targeted, 0.3, seed)) for _ in range(100)])
    assert abs(draws.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / draws.size)  # 0.3 * 256 is not whole: dithered


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


@pytest.mark.parametrize("name, refresh_steps", [("targeted_dropout_refresh64", 64), ("targeted_dropout_refresh1", 1)])
def test_files_saved_before_the_search_load_and_train(name, refresh_steps):
    # Saved by the code of commit e7c8cfb (thresholds sorted; no `spacing` variable, none of the
    # threshold state with refresh_steps=1): Sequential(Input(6), TargetedDropout(Dense(4), 0.5, 0.5,
    # seed=3, name="td"), Dense(2)), one epoch of SGD on 8 examples.
    from pathlib import Path

    model = keras.models.load_model(Path(__file__).parent / "data" / f"{name}.keras")
    wrapper = model.get_layer("td")
    assert wrapper.refresh_steps == refresh_steps and float(wrapper.target_rate.numpy()) == 0.5
    assert int(wrapper.steps.numpy()) == (1 if refresh_steps == 64 else 0)  # the state saved, or none
    kernel = wrapper.layer.kernel.numpy()
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), (x @ kernel + wrapper.layer.bias.numpy()) @
                               model.layers[1].kernel.numpy() + model.layers[1].bias.numpy(), rtol=1e-5, atol=1e-6)
    saved = wrapper.thresholds.numpy()
    model.train_on_batch(x, np.zeros((8, 2), "float32"))
    if refresh_steps == 64:  # step 1 of 64 keeps the thresholds the file holds
        np.testing.assert_array_equal(wrapper.thresholds.numpy(), saved)
    else:  # the first step sorts, as none were saved
        np.testing.assert_array_equal(_candidates(wrapper, kernel), _sorted_candidates(kernel, 0.5))


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
    from keras_compact import TargetedDropout
    from keras_compact.callbacks import TargetedDropoutRamp

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((64,)),
            TargetedDropout(keras.layers.Dense(32, activation="relu"), 0.5, 0.5, seed=1),
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
    run_mirrored_like_one_device(_MIRRORED_SCRIPT, examples=512)
