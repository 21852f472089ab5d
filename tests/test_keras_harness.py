"""Keras's own layer harness on every public layer, its dtype checks on (issue 21).

`keras.src.testing.TestCase.run_layer_test` is private Keras API, the harness
Keras tests its own layers with: config round trip, serialization, shapes and
dtypes eager and symbolic, a training step, and (`run_mixed_precision_check`)
the layer under `dtype="mixed_float16"`, whose outputs must have the dtype its
`compute_output_spec` says and whose weights must stay float32. If a Keras
release moves it, `test_the_harness_is_where_it_was` fails and says where to look.
"""

import importlib

import keras
import numpy as np
import pytest

from keras_compact import HadamardClassifier, ProjectionLayer, TargetedDropout
from keras_compact.layers import QRNN, FeatureBuckets, QuantizeAware, TextFeaturizer, TextViews, TokenBuckets
from keras_compact.pruning import PruningMask
from test_contract import LAYER_CASES

_ENTRY_POINT = ("keras.src.testing", "TestCase", "run_layer_test")


def _harness():
    module, cls, method = _ENTRY_POINT
    try:
        return getattr(getattr(importlib.import_module(module), cls)(), method)
    except (ImportError, AttributeError) as error:
        raise AssertionError(
            f"Keras's private layer harness {module}.{cls}.{method} is gone from Keras {keras.__version__} "
            f"({error}); find where keras/src/testing moved it and update {__file__}."
        ) from None


def test_the_harness_is_where_it_was():
    assert callable(_harness())


_X = np.random.default_rng(0).uniform(-1, 1, size=(5, 16)).astype("float32")


def _text():
    import tensorflow as tf

    return tf.constant(["Hello, world!", "", "ok"])


def _ragged():
    import tensorflow as tf

    return [tf.ragged.constant([[1, 5, 9], [2], [7, 7]], dtype=tf.int64),
            tf.ragged.constant([[0.5, 1.0, -2.0], [3.0], [1.0, 1.0]], dtype=tf.float32)]


# (name, class, constructor arguments, () -> input data, output shape, output dtype, harness options).
# The harness builds the layer from the arguments several times; a wrapper's inner layer is made afresh.
_STRINGS = dict(run_training_check=False)  # string inputs: the harness's training data cannot hold them
HARNESS_CASES = [
    ("projection_bits", ProjectionLayer, dict(num_hashes=8, num_bits=6), lambda: _X, (5, 48), "float32", {}),
    ("projection_signatures", ProjectionLayer, dict(num_hashes=8, num_bits=6, output_mode="signatures"), lambda: _X,
     (5, 8), "int32", {}),
    ("projection_ragged", ProjectionLayer, dict(num_hashes=4, num_bits=5), _ragged, (3, 20), "float32",
     # The harness's mixed-precision step rebuilds the inputs as dense KerasTensors, which the layer
     # rightly refuses as [ids, weights]: checked below with ragged inputs instead.
     dict(run_training_check=False, input_ragged=[True, True], run_mixed_precision_check=False)),
    ("hadamard", HadamardClassifier, dict(num_classes=10), lambda: _X, (5, 10), "float32", {}),
    ("hadamard_orthogonal_bias", HadamardClassifier, dict(num_classes=10, matrix="orthogonal", use_bias=True, seed=1),
     lambda: _X, (5, 10), "float32", {}),
    ("targeted_dropout", TargetedDropout, dict(layer=keras.layers.Dense(8), target_rate=0.5, drop_rate=0.5, seed=1),
     lambda: _X, (5, 8), "float32", {}),
    ("pruning_mask", PruningMask, dict(layer=keras.layers.Dense(8)), lambda: _X, (5, 8), "float32", {}),
    ("quantize_aware", QuantizeAware, dict(layer=keras.layers.Dense(8)), lambda: _X, (5, 8), "float32", {}),
    ("qrnn_bidirectional", QRNN, dict(units=4, kernel_size=2), lambda: _X.reshape(5, 4, 4), (5, 4, 8), "float32", {}),
    ("qrnn_forward", QRNN, dict(units=3, kernel_size=3, bidirectional=False), lambda: _X.reshape(5, 4, 4),
     (5, 4, 3), "float32", {}),
    ("text_featurizer", TextFeaturizer, dict(ngrams=2), _text, None, None, _STRINGS),
    ("token_buckets", TokenBuckets, dict(num_buckets=100, max_length=4), _text, (3, 4), "int32", _STRINGS),
    ("feature_buckets", FeatureBuckets, dict(num_buckets=100, max_length=4), _ragged, [(3, 4), (3, 4)],
     ["int32", "float32"], dict(run_training_check=False, input_ragged=[True, True])),
    ("text_views", TextViews, dict(views={"tokens": TokenBuckets(50, 3)}), _text, None, None, _STRINGS),
]
_TENSORFLOW_ONLY = {"projection_ragged", "text_featurizer", "token_buckets", "feature_buckets", "text_views"}


def test_every_public_layer_is_in_the_harness():
    assert {type(case.make()) for case in LAYER_CASES} <= {case[1] for case in HARNESS_CASES}


@pytest.mark.parametrize(
    "name, cls, arguments, data, shape, dtype, options",
    [
        pytest.param(*case, id=case[0],
                     marks=[pytest.mark.tensorflow_backend("strings and ragged ids")] if case[0] in _TENSORFLOW_ONLY else [])
        for case in HARNESS_CASES
    ],
)
def test_keras_layer_harness_with_mixed_precision(name, cls, arguments, data, shape, dtype, options):
    _harness()(cls, arguments, input_data=data(), expected_output_shape=shape, expected_output_dtype=dtype,
               **{"run_mixed_precision_check": True, **options})


@pytest.mark.tensorflow_backend("ragged ids")
def test_ragged_projection_under_mixed_float16_gives_what_its_output_spec_says():
    layer = ProjectionLayer(4, 5, dtype="mixed_float16")
    ids = keras.Input((None,), ragged=True, dtype="int64")
    weights = keras.Input((None,), ragged=True, dtype="float32")
    spec = layer.compute_output_spec([ids, weights])
    outputs = layer(_ragged())
    assert keras.backend.standardize_dtype(outputs.dtype) == spec.dtype and tuple(outputs.shape) == (3, 20)


@pytest.mark.parametrize("policy, expected", [("mixed_float16", "float16"), ("float64", "float64")])
def test_qrnn_computes_in_its_policy_also_with_a_mask(policy, expected):
    layer = QRNN(4, dtype=policy)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    outputs = layer(np.ones((2, 4, 3), "float32"), mask=mask)
    # What the backend makes of float64 (JAX without jax_enable_x64 computes it in float32).
    expected = keras.backend.standardize_dtype(keras.ops.ones((), expected).dtype)
    assert keras.backend.standardize_dtype(outputs.dtype) == expected
    weights = "float32" if policy.startswith("mixed") else policy  # as declared (JAX stores float64 as float32)
    assert {keras.backend.standardize_dtype(w.dtype) for w in layer.weights} == {weights}


def test_targeted_dropout_output_dtype_is_the_wrapped_layers_in_training_and_inference():
    x = np.ones((2, 16), "float32")
    for layer, expected in ((TargetedDropout(keras.layers.Dense(8), dtype="mixed_float16"), "float32"),
                            (TargetedDropout(keras.layers.Dense(8, dtype="mixed_float16")), "float16")):
        for training in (False, True):
            assert keras.backend.standardize_dtype(layer(x, training=training).dtype) == expected


def test_hadamard_classifier_under_mixed_float16_is_finite_for_a_zero_row_and_large_features():
    x = np.random.default_rng(0).normal(size=(3, 16)).astype("float32")
    x[0], x[2] = 0.0, x[2] * 300  # squares past float16's 65504
    mixed, full = HadamardClassifier(10, dtype="mixed_float16"), HadamardClassifier(10)
    got = keras.ops.convert_to_numpy(mixed(x)).astype("float32")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(full(x)), atol=2e-3)
