import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact
from keras_compact import ProjectionLayer
from litert_oracle import BuiltinLSH


RAGGED = pytest.mark.tensorflow_backend("ragged feature ids are TensorFlow tensors")


def _dense_bits(layer, x):
    return np.asarray(layer(np.asarray(x, np.float32))).astype(np.int32)


def _ragged(rng, count, max_len=12):
    lengths = rng.integers(1, max_len + 1, size=count)
    ids = rng.integers(-(2**62), 2**62, size=lengths.sum(), dtype=np.int64)
    weights = rng.standard_normal(lengths.sum()).astype(np.float32)
    return (
        tf.RaggedTensor.from_row_lengths(ids, lengths),
        tf.RaggedTensor.from_row_lengths(weights, lengths),
    )


def test_bits_match_tflite_builtin_on_integer_valued_dense_inputs(rng):
    layer = ProjectionLayer(60, 12, seed=1)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int32, with_weights=True)
    x = rng.integers(0, 17, size=(2000, 64)).astype(np.float32)
    np.testing.assert_array_equal(_dense_bits(layer, x), oracle.dense(x))


def test_bits_match_tflite_builtin_on_real_mnist_pixels(shared_data):
    (x_train, _), _ = keras_compact.datasets.load("mnist", shared_data)
    pixels = np.round(x_train[:300].reshape(300, -1) * 255)  # the raw 0..255 integers
    layer = ProjectionLayer(60, 12)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int32, with_weights=True)
    np.testing.assert_array_equal(_dense_bits(layer, pixels), oracle.dense(pixels))


def test_bits_match_tflite_builtin_on_random_float_inputs(rng):
    layer = ProjectionLayer(20, 16, seed=7)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int32, with_weights=True)
    x = rng.standard_normal((3000, 37)).astype(np.float32) * rng.uniform(1e-3, 1e3, (3000, 1))
    agreement = np.mean(_dense_bits(layer, x) == oracle.dense(x))
    assert agreement >= 0.9999, agreement


@RAGGED
def test_bits_match_tflite_builtin_on_unweighted_ids(rng):
    layer = ProjectionLayer(30, 10, seed=2)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int64, with_weights=False)
    ids, _ = _ragged(rng, 1500)
    ours = np.asarray(layer(ids)).astype(np.int32)
    theirs = np.stack([oracle(row.numpy()) for row in ids])
    np.testing.assert_array_equal(ours, theirs)


@RAGGED
def test_bits_match_tflite_builtin_on_weighted_ids(rng):
    layer = ProjectionLayer(30, 10, seed=3)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int64, with_weights=True)
    ids, weights = _ragged(rng, 1500)
    ours = np.asarray(layer([ids, weights])).astype(np.int32)
    theirs = np.stack([oracle(i.numpy(), w.numpy()) for i, w in zip(ids, weights)])
    np.testing.assert_array_equal(ours, theirs)


@RAGGED
def test_bits_match_tflite_builtin_when_ids_repeat_within_and_across_rows(rng):
    # Each distinct id of a batch is hashed once; rows that repeat ids must still sum every copy.
    layer = ProjectionLayer(30, 10, seed=4)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int64, with_weights=True)
    lengths = rng.integers(1, 13, size=500)
    ids = tf.RaggedTensor.from_row_lengths(rng.integers(0, 20, size=lengths.sum()).astype(np.int64), lengths)
    weights = tf.RaggedTensor.from_row_lengths(rng.standard_normal(lengths.sum()).astype(np.float32), lengths)
    ours = np.asarray(layer([ids, weights])).astype(np.int32)
    theirs = np.stack([oracle(i.numpy(), w.numpy()) for i, w in zip(ids, weights)])
    np.testing.assert_array_equal(ours, theirs)


@RAGGED
@pytest.mark.parametrize("num_bits", [1, 8, 14, 31, 32])
def test_signatures_match_tflite_builtin_sparse_on_ids(rng, num_bits):
    layer = ProjectionLayer(7, num_bits, output_mode="signatures", seed=num_bits)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=True, feature_dtype=np.int64, with_weights=True)
    ids, weights = _ragged(rng, 300)
    ours = np.asarray(layer([ids, weights]))
    theirs = np.stack([oracle(i.numpy(), w.numpy()) for i, w in zip(ids, weights)])
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, theirs)


def test_signatures_match_tflite_builtin_sparse_on_dense_inputs(rng):
    layer = ProjectionLayer(10, 12, output_mode="signatures", seed=5)
    oracle = BuiltinLSH(layer.hash_seeds, sparse=True, feature_dtype=np.int32, with_weights=True)
    x = rng.uniform(0, 1, size=(500, 64)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), oracle.dense(x))


def test_signatures_index_one_embedding_table_per_function():
    layer = ProjectionLayer(5, 4, output_mode="signatures")
    signatures = np.asarray(layer(np.random.default_rng(0).uniform(size=(200, 9))))
    for t in range(5):
        assert np.all((signatures[:, t] >= t * 16) & (signatures[:, t] < (t + 1) * 16))


@RAGGED
def test_row_without_features_has_all_bits_zero():
    ids = tf.ragged.constant([[3, 4], []], dtype=tf.int64)
    bits = np.asarray(ProjectionLayer(4, 8)(ids))
    assert bits[0].any() and not bits[1].any()
    all_empty = tf.ragged.constant([[], []], dtype=tf.int64)
    np.testing.assert_array_equal(np.asarray(ProjectionLayer(4, 8)(all_empty)), np.zeros((2, 32)))


def test_hash_seeds_are_distinct_float32_and_depend_only_on_seed():
    seeds = ProjectionLayer(60, 12, seed=11).hash_seeds
    assert seeds.dtype == np.float32 and seeds.shape == (60, 12)
    assert len(np.unique(seeds)) == seeds.size
    np.testing.assert_array_equal(seeds, ProjectionLayer(60, 12, seed=11).hash_seeds)
    assert not np.array_equal(seeds, ProjectionLayer(60, 12, seed=12).hash_seeds)


def test_layer_has_no_weights_and_outputs_bits():
    model = keras.Sequential([keras.Input((16,))])
    model.add(ProjectionLayer(num_hashes=6, num_bits=5))
    model.add(keras.layers.Dense(3, activation="softmax"))
    projection = model.layers[0]
    assert projection.weights == [] and model.count_params() == 6 * 5 * 3 + 3
    bits = np.asarray(projection(np.random.default_rng(0).uniform(size=(4, 16))))
    assert bits.shape == (4, 30) and bits.dtype == np.float32
    assert set(np.unique(bits)) <= {0.0, 1.0}


def test_saved_file_does_not_grow_with_number_of_features(tmp_path):
    sizes = []
    for num_features in (64, 4096):
        model = keras.Sequential(
            [keras.Input((num_features,)), ProjectionLayer(60, 12), keras.layers.Dense(10)]
        )
        path = tmp_path / f"model_{num_features}.keras"
        model.save(path)
        sizes.append(path.stat().st_size)
    # A stored 4096 x 720 matrix would add megabytes; the files differ by a few bytes.
    assert abs(sizes[1] - sizes[0]) < 1024, sizes


def test_load_model_restores_identical_bits(tmp_path, rng):
    model = keras.Sequential(
        [keras.Input((50,)), ProjectionLayer(12, 9, seed=4, name="proj"), keras.layers.Dense(4)]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    x = rng.standard_normal((300, 50)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("proj")(x)), np.asarray(restored.get_layer("proj")(x))
    )
    np.testing.assert_allclose(model.predict(x, verbose=0), restored.predict(x, verbose=0))


def test_get_config_round_trip():
    layer = ProjectionLayer(3, 20, output_mode="signatures", seed=9, name="p")
    clone = ProjectionLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone.hash_seeds, layer.hash_seeds)


@RAGGED
def test_ragged_functional_model_with_weights_trains():
    ids_in = keras.Input(shape=(None,), ragged=True, dtype="int64", name="ids")
    weights_in = keras.Input(shape=(None,), ragged=True, dtype="float32", name="weights")
    bits = ProjectionLayer(8, 8)([ids_in, weights_in])
    model = keras.Model([ids_in, weights_in], keras.layers.Dense(2, activation="softmax")(bits))
    model.compile("adam", "sparse_categorical_crossentropy")
    ids, weights = _ragged(np.random.default_rng(1), 64)
    dataset = tf.data.Dataset.from_tensor_slices(((ids, weights), np.arange(64) % 2)).batch(16)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_hashes=0, num_bits=8), "num_hashes=0"),
        (dict(num_hashes=2.5, num_bits=8), "num_hashes=2.5"),
        (dict(num_hashes=4, num_bits=0), "num_bits=0"),
        (dict(num_hashes=4, num_bits=65), "num_bits=65"),
        (dict(num_hashes=4, num_bits=33, output_mode="signatures"), "num_bits=33"),
        (dict(num_hashes=4, num_bits=8, output="hashes"), "output='hashes'"),
        (dict(num_hashes=4, num_bits=8, seed=-1), "seed=-1"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ProjectionLayer(**kwargs)


@pytest.mark.parametrize("output", ["bits", "signatures"])
def test_more_than_32_bits_is_refused_with_the_builtin_limit_in_the_message(output):
    # The LiteRT kernel checks SizeOfDimension(hash, 1) <= 32: 33..64 bits used to train, then fail to run.
    with pytest.raises(ValueError, match=r"num_bits must be an integer from 1 to 32.*LSH_PROJECTION.*num_bits=33"):
        ProjectionLayer(2, 33, output_mode=output)
    assert ProjectionLayer(2, 32, output_mode=output).num_bits == 32


@pytest.mark.parametrize(
    "inputs, message",
    [
        (lambda: keras.Input((8,), dtype="int32"), "dtype=int32"),
        (lambda: keras.Input((4, 4)), r"shape=\(None, 4, 4\)"),
        pytest.param(
            lambda: keras.Input((None,), ragged=True, dtype="int32"), "dtype=int32", marks=RAGGED, id="ragged-int32"
        ),
        (lambda: keras.Input((None,)), r"with a known n.*shape=\(None, None\)"),
    ],
)
def test_wrong_input_dtype_or_rank_raises_value_error(inputs, message):
    with pytest.raises(ValueError, match=message):
        ProjectionLayer(4, 4)(inputs())


def test_wrong_eager_input_dtype_raises_value_error():
    with pytest.raises(ValueError, match="dtype=int16"):
        ProjectionLayer(4, 4)(np.zeros([2, 3], np.int16))


def test_dense_model_trains_under_xla(digits):
    (x_train, y_train), _ = digits
    model = keras.Sequential([keras.Input((64,)), ProjectionLayer(10, 8), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(x_train[:256], y_train[:256], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.layers[0].supports_jit


@RAGGED
def test_ragged_projection_opts_out_of_xla():
    ragged_layer = ProjectionLayer(4, 4)
    ragged_layer(tf.ragged.constant([[1, 2]], dtype=tf.int64))
    assert not ragged_layer.supports_jit


def test_non_finite_dense_rows_give_nan_bits_and_other_rows_are_unchanged():
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 16)).astype("float32")
    bad = x.copy()
    bad[1, 3], bad[2, 0] = np.nan, np.inf
    layer = ProjectionLayer(6, 4)
    clean, dirty = np.asarray(layer(x)), np.asarray(layer(bad))
    assert np.isnan(dirty[1]).all() and np.isnan(dirty[2]).all()
    np.testing.assert_array_equal(dirty[[0, 3]], clean[[0, 3]])
    model = keras.Sequential([keras.Input((16,)), layer, keras.layers.Dense(3, activation="softmax")])
    assert np.isnan(model.predict(bad, verbose=0)[1]).all()


@RAGGED
def test_non_finite_sparse_weights_give_nan_bits():
    ids = tf.ragged.constant([[1, 2], [3]], dtype=tf.int64)
    weights = tf.ragged.constant([[1.0, float("nan")], [2.0]], dtype=tf.float32)
    bits = np.asarray(ProjectionLayer(4, 4)([ids, weights]))
    assert np.isnan(bits[0]).all() and not np.isnan(bits[1]).any()


@pytest.mark.tensorflow_backend("other backends' compiled steps cannot raise")
def test_non_finite_inputs_to_signatures_raise():
    x = np.zeros((2, 8), "float32")
    x[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite features"):
        ProjectionLayer(4, 4, output_mode="signatures")(x)


def test_seeds_take_the_whole_64_bit_stream_and_numpy_integers():
    assert ProjectionLayer(2, 4, seed=2**40).seed == 2**40
    np.testing.assert_array_equal(ProjectionLayer(2, 4, seed=np.uint64(9)).hash_seeds, ProjectionLayer(2, 4, seed=9).hash_seeds)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        ProjectionLayer(2, 4, seed=2**64)
