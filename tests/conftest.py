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


BACKEND = keras.backend.backend()


# The files of the longest tests (a fresh Python or notebook kernel each, minutes): run first, so that
# with `-n 2` the two processes share them instead of one finishing them while the other waits.
_LONG_FIRST = ("test_readme.py", "test_tutorials.py", "test_backends.py")


def pytest_collection_modifyitems(config, items):
    """The long files first (whole files, so module fixtures are made once); on another backend,
    tests marked `tensorflow_backend("why")` skip with their reason."""
    items.sort(key=lambda item: item.path.name not in _LONG_FIRST)  # stable: the rest keep their order
    if BACKEND == "tensorflow":
        return
    for item in items:
        marker = item.get_closest_marker("tensorflow_backend")
        if marker is not None:
            why = marker.args[0] if marker.args else "uses TensorFlow directly"
            item.add_marker(pytest.mark.skip(reason=f"needs the TensorFlow backend ({why}); Keras runs on {BACKEND}"))


def gradients(fn, inputs=(), variables=()):
    """The gradients of the scalar `fn(*inputs)` with respect to `inputs` and Keras `variables`.

    `fn` reads the variables as layers do; works on the TensorFlow and JAX backends.
    Returns NumPy arrays, inputs' first.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        sources = tensors + [v.value for v in variables]
        # TensorFlow says None where JAX says zeros: no path from the source to the value.
        return [np.zeros(s.shape) if g is None else np.asarray(g) for s, g in zip(sources, tape.gradient(value, sources))]
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def value(tensors, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*tensors)

        by_input, by_variable = jax.grad(value, argnums=(0, 1))(
            [jnp.asarray(x) for x in inputs], [v.value for v in variables]
        )
        return [np.asarray(g) for g in list(by_input) + list(by_variable)]
    pytest.skip(f"gradients() in the tests covers TensorFlow and JAX; Keras runs on {BACKEND}")


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


_LIKE_ONE_DEVICE = """
import numpy as np

single = train(build())
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    mirrored = build()
for a, b in zip(single, train(mirrored)):
    np.testing.assert_allclose(a, b, atol=1e-5)
print("MIRRORED-OK")
"""


_DIGITS = """
import keras
from sklearn.datasets import load_digits

digits = load_digits()
x = (digits.data[:{count}] / 16).astype("float32")
y = digits.target[:{count}]
"""


def run_mirrored_like_one_device(script, examples=256):
    """Trains `build()` with `train(model) -> weights` on one device and under MirroredStrategy
    on two logical CPUs (`script` defines both, and finds `keras` and the first `examples` of
    scikit-learn's digits as `x`, `y` in [0, 1]); fails unless the weights agree to 1e-5."""
    run_with_two_logical_cpus(_DIGITS.format(count=examples) + textwrap.dedent(script) + _LIKE_ONE_DEVICE,
                              "MIRRORED-OK")
