"""The shared argument checks (`keras_compact._checks`) that every layer, model and callback uses."""

import keras
import numpy as np
import pytest

from keras_compact._checks import check_rate, check_seed, is_int, is_number
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
