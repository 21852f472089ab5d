import pathlib

import keras
import numpy as np
import pytest

import keras_compact

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def shared_data():
    """`../shared/data` beside the repository: CI and every developer have it."""
    assert SHARED_DATA.is_dir(), f"the shared data folder is missing: {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's real digits, flattened to 64 features."""
    (x_train, y_train), (x_test, y_test) = keras_compact.datasets.load("digits")
    return (x_train.reshape(-1, 64), y_train), (x_test.reshape(-1, 64), y_test)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
