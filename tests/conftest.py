import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_compact

# ../shared/data beside the repository; KERAS_COMPACT_SHARED_DATA points the suite elsewhere (the
# test that the suite skips cleanly without the data points it at a folder that does not exist).
SHARED_DATA = pathlib.Path(
    os.environ.get("KERAS_COMPACT_SHARED_DATA") or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
)
_NO_SHARED_DATA = (
    f"needs the real data sets in ../shared/data beside the repository ({SHARED_DATA} is missing); "
    "CI and every developer have it"
)


def needs_shared_data(*parts):
    """`SHARED_DATA / parts`, or skip the calling test with the reason when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(_NO_SHARED_DATA if not SHARED_DATA.is_dir() else f"{path} is missing")
    return path


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture
def shared_data():
    """`../shared/data` beside the repository (CI and every developer have it); else the test skips."""
    return needs_shared_data()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's real digits, flattened to 64 features."""
    (x_train, y_train), (x_test, y_test) = keras_compact.datasets.load("digits")
    return (x_train.reshape(-1, 64), y_train), (x_test.reshape(-1, 64), y_test)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


_TWO_CPUS = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
"""


def run_with_two_logical_cpus(script, expect):
    """Runs `script` in a fresh Python whose TensorFlow sees two logical CPUs.

    Logical devices must be configured before TensorFlow starts, hence the
    subprocess. Fails with the script's stderr unless it exits 0 and prints `expect`.
    """
    result = subprocess.run(
        [sys.executable, "-c", _TWO_CPUS + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0 and expect in result.stdout, result.stderr[-3000:]
    return result.stdout
