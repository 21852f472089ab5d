"""The shared argument checks (`keras_compact._checks`) that every layer, model and callback uses."""

import keras
import numpy as np
import pytest

from keras_compact._checks import bool_errors, check_rate, check_seed, is_bool, is_int, is_number
from keras_compact.callbacks import DropoutSchedule, TargetedDropoutRamp
from keras_compact.layers import TargetedDropout


@pytest.mark.parametrize("value", [0, 3, np.int32(3), np.int64(-2), np.uint8(7)])
def test_integers_include_numpy_integers(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, "2", None])
def test_bools_floats_and_strings_are_not_integers(value):
    assert not is_int(value)


@pytest.mark.parametrize("value", [0, 0.5, np.float32(0.5), np.float64(-1e9), np.int16(4)])
def test_numbers_include_numpy_scalars(value):
    assert is_number(value)


@pytest.mark.parametrize("value", [float("nan"), np.float32("nan"), float("inf"), -np.inf, True, "1", None])
def test_nan_infinities_bools_and_strings_are_not_numbers(value):
    assert not is_number(value)


@pytest.mark.parametrize("value, expected", [(True, True), (np.bool_(False), True), (1, False), (0.0, False),
                                             (np.int8(1), False), ("True", False), (None, False)])
def test_bools_include_numpy_bools_and_never_0_or_1(value, expected):
    assert is_bool(value) is expected
    assert bool_errors(flag=value) == ([] if expected else [f"flag must be True or False. Received: flag={value!r}"])


def test_a_numpy_bool_is_taken_and_saved_as_a_bool(tmp_path):
    from keras_compact.layers import QRNN
    from keras_compact.pruning import prune

    layer = QRNN(4, bidirectional=np.bool_(False))
    assert layer.get_config()["bidirectional"] is False  # a Python bool: the config stays JSON
    model = keras.Sequential([keras.Input((5, 3)), layer])
    model.save(tmp_path / "qrnn.keras")
    assert keras.models.load_model(tmp_path / "qrnn.keras").layers[0].bidirectional is False
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"merge must be True or False. Received: merge=1"):
        prune(dense, 0.5, granularity="unit", merge=1)  # 1 is no bool, as everywhere else


def test_rates_accept_numpy_scalars_and_reject_nan_naming_the_argument():
    assert check_rate("drop_rate", np.float32(0.25)) == 0.25
    for bad in (float("nan"), np.float64("nan"), 1.5, -0.1, True):
        with pytest.raises(ValueError, match=r"between 0 and 1\. Received: drop_rate="):
            check_rate("drop_rate", bad)


def test_seeds_are_integers_in_32_bits():
    assert check_seed("seed", np.int64(7)) == 7 and check_seed("seed", None) is None
    for bad in (-1, 2**32, 1.0, True):
        with pytest.raises(ValueError, match="seed must be None or an integer in"):
            check_seed("seed", bad)
    with pytest.raises(ValueError, match="seed must be an integer in"):
        check_seed("seed", None, allow_none=False)


def test_layers_and_callbacks_share_the_checks():
    layer = TargetedDropout(keras.layers.Dense(2), np.float32(0.5), np.float64(0.25), seed=np.int64(3))
    assert layer.seed == 3
    with pytest.raises(ValueError, match="target_rate=nan"):
        TargetedDropout(keras.layers.Dense(2), float("nan"), 0.5)
    with pytest.raises(ValueError, match="target_rate=nan"):
        TargetedDropoutRamp(target_rate=float("nan"))
    with pytest.raises(ValueError, match="gamma must be a number > 0"):
        DropoutSchedule(gamma=float("nan"))
    assert TargetedDropoutRamp(target_rate=(np.float32(0.0), np.float32(0.5)), start=np.int64(1)).start == 1
