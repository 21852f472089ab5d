import math

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from conftest import gradients
from keras_compact import HadamardClassifier
from keras_compact.ops import (
    hadamard_class_matrix,
    hadamard_matrix,
    hadamard_size,
    orthogonal_class_matrix,
    transform_factors,
    walsh_hadamard_transform,
)
from tflite_export import _flatbuffer as fb
from tflite_export import export, predict

# (N, C): N a power of two, N not one, C > N, C + 1 a power of two.
_SHAPES = [(64, 10), (100, 10), (10, 40), (12, 15), (2048, 1000)]


def _reference_logits(x, num_classes, alpha, bias=0.0):
    """alpha * H[1:C+1] @ pad(x / ||x||), with scipy's Hadamard matrix."""
    num_features = x.shape[1]
    size = 2 ** math.ceil(math.log2(max(num_features, num_classes + 1)))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    padded = np.pad(unit, [(0, 0), (0, size - num_features)])
    return alpha * padded @ scipy.linalg.hadamard(size)[1 : num_classes + 1].T + bias


def _classifier(num_features, num_classes, **kwargs):
    layer = HadamardClassifier(num_classes, **kwargs)
    layer.build((None, num_features))
    return layer


@pytest.mark.parametrize("size", [1, 2, 4, 64, 1024])
def test_hadamard_matrix_equals_scipy(size):
    np.testing.assert_array_equal(hadamard_matrix(size), scipy.linalg.hadamard(size))


@pytest.mark.parametrize("implementation", ["matmul", "fwht"])
@pytest.mark.parametrize("num_features, num_classes", _SHAPES)
def test_logits_equal_scaled_hadamard_rows_of_padded_unit_input(
    rng, num_features, num_classes, implementation
):
    x = rng.normal(size=(16, num_features)).astype("float32")
    layer = _classifier(num_features, num_classes, implementation=implementation)
    alpha = float(layer.alpha.numpy())
    np.testing.assert_allclose(
        layer(x), _reference_logits(x, num_classes, alpha), rtol=1e-4, atol=1e-4 * alpha
    )


def test_class_vectors_are_orthogonal_rows_of_the_padded_matrix():
    for num_features, num_classes in _SHAPES:
        size = hadamard_size(num_features, num_classes)
        rows = hadamard_matrix(size)[1 : num_classes + 1]
        np.testing.assert_array_equal(rows @ rows.T, size * np.eye(num_classes))
        np.testing.assert_array_equal(
            hadamard_class_matrix(num_features, num_classes), rows[:, :num_features]
        )


def test_class_vectors_are_orthogonal_in_input_space_when_n_is_a_multiple_of_the_row_block():
    # Rows 1..10 differ only in their low 4 bits, so any N divisible by 16 keeps them orthogonal.
    for num_features in (16, 48, 64, 512):
        matrix = hadamard_class_matrix(num_features, 10)
        np.testing.assert_array_equal(matrix @ matrix.T, num_features * np.eye(10))


def test_no_class_dominates_non_negative_features(rng):
    # Row 0 (all ones) would win on every non-negative input; the classifier skips it.
    x = np.maximum(rng.normal(size=(2000, 128)), 0).astype("float32")
    predicted = np.argmax(_classifier(128, 10)(x), axis=1)
    assert set(predicted.tolist()) == set(range(10))


def test_orthogonal_matrix_has_orthonormal_rows_or_columns_scaled_to_hadamard_norms():
    rows = orthogonal_class_matrix(64, 10, seed=3)
    np.testing.assert_allclose(rows @ rows.T, 64 * np.eye(10), atol=1e-3)
    columns = orthogonal_class_matrix(10, 40, seed=3)
    np.testing.assert_allclose(columns.T @ columns, 40 * np.eye(10), atol=1e-3)
    # The average squared norm of a class vector is N, as for a Hadamard row.
    assert np.mean(np.sum(columns**2, axis=1)) == pytest.approx(10, rel=1e-5)
    np.testing.assert_array_equal(rows, orthogonal_class_matrix(64, 10, seed=3))
    assert not np.allclose(rows, orthogonal_class_matrix(64, 10, seed=4))


def test_orthogonal_classifier_computes_scaled_matrix_product(rng):
    x = rng.normal(size=(8, 64)).astype("float32")
    layer = _classifier(64, 10, matrix="orthogonal", seed=7)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = float(layer.alpha.numpy()) * unit @ orthogonal_class_matrix(64, 10, seed=7).T
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("matrix", ["hadamard", "orthogonal"])
def test_the_only_trainable_weight_is_the_scale(matrix):
    layer = _classifier(512, 1000, matrix=matrix)
    assert [w.shape for w in layer.trainable_weights] == [()]
    assert layer.non_trainable_weights == []
    assert layer.count_params() == 1


def test_scale_and_bias_start_as_in_the_authors_code():
    layer = _classifier(64, 25, use_bias=True)
    assert float(layer.alpha.numpy()) == pytest.approx(1 / 5)
    bias = layer.bias.numpy()
    assert bias.shape == (25,) and np.all(np.abs(bias) <= 1 / 5) and np.std(bias) > 0
    assert len(layer.trainable_weights) == 2


def test_fixed_scale_leaves_nothing_to_train(rng):
    x = rng.normal(size=(4, 64)).astype("float32")
    layer = _classifier(64, 10, scale=16.0)
    assert layer.trainable_weights == []
    np.testing.assert_allclose(layer(x), _reference_logits(x, 10, 16.0), rtol=1e-5, atol=1e-5)


def test_unnormalized_logits_use_the_raw_features(rng):
    x = rng.normal(size=(4, 64)).astype("float32")
    layer = _classifier(64, 10, scale=1.0, normalize=False)
    np.testing.assert_allclose(layer(x), x @ hadamard_class_matrix(64, 10).T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("radix", [2, 4, 64, 1024])
@pytest.mark.parametrize("size", [1, 2, 8, 512, 2048])
def test_walsh_hadamard_transform_equals_the_dense_product(rng, size, radix):
    x = rng.normal(size=(3, size)).astype("float32")
    np.testing.assert_allclose(
        walsh_hadamard_transform(x, radix=radix), x @ scipy.linalg.hadamard(size), rtol=1e-4, atol=1e-3
    )


def test_transform_factors_multiply_to_the_size():
    for size in (1, 2, 512, 2048, 32768):
        for radix in (2, 8, 64):
            factors = transform_factors(size, radix)
            assert math.prod(factors) == size and max(factors) <= max(radix, 1)


def test_transform_path_equals_matmul_path_in_values_and_gradients(rng):
    x = rng.normal(size=(32, 2048)).astype("float32")
    layers = [_classifier(2048, 1000, implementation=name, use_bias=True) for name in ("matmul", "fwht")]
    layers[1].set_weights(layers[0].get_weights())
    results = []
    for layer in layers:
        found = gradients(lambda x: keras.ops.sum(keras.ops.sin(layer(x))), inputs=[x], variables=layer.trainable_weights)
        results.append([np.asarray(layer(x))] + found)
    for got, expected in zip(results[1], results[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_auto_implementation_picks_the_transform_for_large_shapes():
    assert not _classifier(512, 10).uses_transform
    assert _classifier(2048, 1000).uses_transform
    assert not _classifier(2048, 1000, matrix="orthogonal").uses_transform


def test_all_zero_features_give_finite_logits_and_gradients():
    x = np.zeros((2, 64), "float32")
    layer = _classifier(64, 10, use_bias=True)
    logits = np.asarray(layer(x))
    (gradient,) = gradients(lambda x: keras.ops.sum(layer(x)[:, 3]), inputs=[x])
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(gradient))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(implementation="fwht", use_bias=True),
        dict(matrix="orthogonal", seed=11, scale=4.0),
    ],
)
def test_saved_model_round_trip_recomputes_the_matrix(tmp_path, rng, kwargs):
    model = keras.Sequential(
        [keras.Input((2048,)), HadamardClassifier(1000, name="classifier", **kwargs)]
    )
    if "scale" not in kwargs:
        model.layers[-1].alpha.assign(3.5)
    x = rng.normal(size=(4, 2048)).astype("float32")
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert restored.layers[-1].get_config() == model.layers[-1].get_config()
    # The 2048 x 1000 matrix (8 MB in float32) is not in the file.
    assert (tmp_path / "model.keras").stat().st_size < 100_000


def test_orthogonal_seed_drawn_once_and_kept_in_the_config():
    layer = HadamardClassifier(10, matrix="orthogonal")
    seed = layer.get_config()["seed"]
    assert isinstance(seed, int)
    assert HadamardClassifier.from_config(layer.get_config()).seed == seed


def test_mixed_precision_policy_keeps_the_classifier_in_float32(rng):
    x = rng.normal(size=(4, 64)).astype("float32")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), HadamardClassifier(10)])
        logits = model(x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[0].compute_dtype == "float16"
    assert logits.dtype == "float32" and np.all(np.isfinite(logits))


def test_trains_on_real_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), HadamardClassifier(10)]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=20, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.93
    assert float(model.layers[-1].alpha.numpy()) > 1 / math.sqrt(10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=1), "num_classes must be an integer >= 2. Received: num_classes=1"),
        (dict(num_classes=2.5), "num_classes=2.5"),
        (dict(num_classes=True), "num_classes=True"),
        (dict(num_classes=10, scale=0.0), "scale must be 'learned' or a positive finite number. Received: scale=0.0"),
        (dict(num_classes=10, scale=-2), "scale=-2"),
        (dict(num_classes=10, scale=float("inf")), "scale=inf"),
        (dict(num_classes=10, scale="fixed"), "scale='fixed'"),
        (dict(num_classes=10, matrix="walsh"), "matrix must be one of ('hadamard', 'orthogonal'). Received: matrix='walsh'"),
        (dict(num_classes=10, seed=-1), "seed=-1"),
        (dict(num_classes=10, implementation="fft"), "implementation='fft'"),
        (dict(num_classes=10, matrix="orthogonal", implementation="fwht"), "needs matrix='hadamard'"),
        (dict(num_classes=10, use_bias="yes"), "use_bias='yes'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        HadamardClassifier(**kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize("shape", [(8, 8), (None,)])
def test_inputs_other_than_batch_by_features_are_rejected(shape):
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, N\) with a known N"):
        HadamardClassifier(10)(keras.Input(shape))


def _exported_classifier(tmp_path, num_features, num_classes, name, **kwargs):
    model = keras.Sequential(
        [keras.Input((num_features,), name="features"), HadamardClassifier(num_classes, **kwargs)]
    )
    return model, export(model, tmp_path / f"{name}.tflite", num_random_examples=32)


@pytest.mark.tensorflow_backend("exports in this process; test_backends.py exports from JAX")
def test_export_writes_the_transform_without_the_matrix(tmp_path):
    small_model, small = _exported_classifier(tmp_path, 512, 10, "small")
    large_model, large = _exported_classifier(tmp_path, 2048, 1000, "large")
    matmul_model, matmul = _exported_classifier(tmp_path, 512, 10, "matmul", implementation="matmul")
    assert small.classifier_lowerings == {small_model.layers[-1].name: "fwht"}
    assert matmul.classifier_lowerings == {matmul_model.layers[-1].name: "matmul"}
    assert "TRANSPOSE" in large.operators and "TRANSPOSE" not in matmul.operators
    # The 2048 x 1000 matrix would take 8 MB in float32; the transform stores 16 x 16 blocks.
    assert large.bytes < 20_000
    assert matmul.bytes - small.bytes > 512 * 10 * 4 - 4096
    for report in (small, large, matmul):
        assert report.builtin_only and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4
    # The layers keep the user's settings after the export.
    assert large_model.layers[-1].implementation == "auto"
    assert large_model.layers[-1].transform_radix == 64


@pytest.mark.tensorflow_backend("exports in this process; test_backends.py exports from JAX")
@pytest.mark.parametrize("implementation", ["matmul", "fwht"])
def test_explicit_implementation_is_kept_by_the_export(tmp_path, implementation):
    model, report = _exported_classifier(tmp_path, 256, 10, implementation, implementation=implementation)
    assert report.classifier_lowerings == {model.layers[-1].name: implementation}
    assert report.top1_agreement == 1.0


class _RowsFromZero(HadamardClassifier):
    """A user's subclass with its own matrix: the Hadamard rows 0..C-1 (row 0 all ones)."""

    def _class_matrix(self, num_features):
        return hadamard_matrix(num_features)[: self.num_classes, :num_features]


@pytest.mark.tensorflow_backend("exports in this process; test_backends.py exports from JAX")
def test_a_subclass_of_the_classifier_is_exported_as_itself(tmp_path):
    # The export's lowered copy used to rebuild every classifier as a HadamardClassifier, so a
    # subclass's own matrix was lost and the file disagreed with the model (benchmarks/fixed_classifier.py).
    model = keras.Sequential([keras.Input((64,), name="features"), _RowsFromZero(10, implementation="matmul", name="rows")])
    x = np.random.default_rng(0).normal(size=(32, 64)).astype("float32")
    report = export(model, tmp_path / "rows.tflite", verify_with=x)
    assert report.top1_agreement == 1.0
    np.testing.assert_allclose(predict(report.path, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


@pytest.mark.tensorflow_backend("exports in this process; test_backends.py exports from JAX")
def test_dynamic_int8_stores_the_hadamard_matrix_exactly(tmp_path):
    model = keras.Sequential([keras.Input((512,), name="features"), HadamardClassifier(10, implementation="matmul")])
    model.layers[-1].alpha.assign(2.7)
    report = export(model, tmp_path / "int8.tflite", num_random_examples=32, quantization="dynamic")
    parsed = fb.read(open(report.path, "rb").read())
    subgraph = parsed.subgraphs[0]
    int8 = [t for t in subgraph.tensors if t.type == schema.TensorType.INT8 and list(t.shape) == [10, 512]]
    assert len(int8) == 1
    tensor = int8[0]
    values = np.frombuffer(bytes(parsed.buffers[tensor.buffer].data), dtype=np.int8).reshape(10, 512)
    # Every entry is +-127 with the signs of the Hadamard rows, and 127 steps of the scale are alpha.
    np.testing.assert_array_equal(values, 127 * hadamard_class_matrix(512, 10).astype(np.int8))
    np.testing.assert_allclose(np.asarray(tensor.quantization.scale) * 127, 2.7, rtol=1e-6)
    assert report.top1_agreement == 1.0


@pytest.mark.tensorflow_backend("exports in this process; test_backends.py exports from JAX")
@pytest.mark.parametrize("implementation", ["matmul", "fwht"])
def test_trained_digits_classifier_exports_with_full_agreement(tmp_path, digits, implementation):
    (x_train, y_train), (x_test, y_test) = digits
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(64, activation="relu"),
            HadamardClassifier(10, use_bias=True, implementation=implementation),
            keras.layers.Softmax(),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, verbose=0)
    report = export(model, tmp_path / "digits.tflite", verify_with=x_test)
    assert report.builtin_only
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5
    np.testing.assert_allclose(predict(report.path, x_test), model.predict(x_test, verbose=0), atol=1e-5)


def test_orthogonal_seed_none_comes_from_keras_and_leaves_numpy_alone():
    keras.utils.set_random_seed(3)
    numpy_state = np.random.get_state()[1].copy()
    first = HadamardClassifier(10, matrix="orthogonal").seed
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    keras.utils.set_random_seed(3)
    assert HadamardClassifier(10, matrix="orthogonal").seed == first
    assert HadamardClassifier(10, matrix="orthogonal", seed=np.int64(5)).seed == 5
