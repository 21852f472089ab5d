import os
import stat

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import ProjectionLayer, ProjectionNet
from tflite_export import export, predict, verify

pytestmark = pytest.mark.tensorflow_backend("converts in this process; other backends convert in a TensorFlow subprocess, tested in test_backends.py")

_BUILTIN_ONLY_PROJECTION = {"LSH_PROJECTION", "CAST", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"}


def _projection_model(num_features=64, name="pixels", **layer_kwargs):
    return keras.Sequential(
        [
            keras.Input((num_features,), name=name),
            ProjectionLayer(layer_kwargs.pop("num_hashes", 60), layer_kwargs.pop("num_bits", 12),
                            name="projection", **layer_kwargs),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def test_dense_projection_exports_to_builtin_lsh_projection_and_agrees(tmp_path, digits):
    (x_train, y_train), (x_test, y_test) = digits
    model = _projection_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=3, verbose=0)
    report = export(model, tmp_path / "model.tflite", verify_with=x_test)
    assert report.builtin_only
    assert set(report.operators) == _BUILTIN_ONLY_PROJECTION
    assert report.operators["LSH_PROJECTION"] == 1
    assert report.inputs == [("pixels", "float32", (64,))]
    assert report.num_examples == len(x_test)
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5
    assert report.bytes == os.path.getsize(report.path) and report.latency_ms > 0
    np.testing.assert_allclose(
        predict(report.path, x_test), model.predict(x_test, verbose=0), atol=1e-5
    )


def test_exported_file_stores_seeds_not_a_projection_matrix(tmp_path):
    small = export(_projection_model(64), tmp_path / "small.tflite", num_random_examples=4)
    large = export(_projection_model(2048), tmp_path / "large.tflite", num_random_examples=4)
    # Only the int32 feature ids grow with n (4 bytes each), never an n x T*d matrix.
    assert large.bytes - small.bytes < (2048 - 64) * 4 + 1024


def test_signatures_feed_an_embedding_through_sparse_lsh_projection(tmp_path):
    inputs = keras.Input((32,), name="features")
    signatures = ProjectionLayer(8, 6, output_mode="signatures")(inputs)
    embedded = keras.layers.Embedding(8 * 2**6, 4)(signatures)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(embedded))
    model = keras.Model(inputs, outputs)
    report = export(model, tmp_path / "sig.tflite", num_random_examples=200)
    assert report.builtin_only and "LSH_PROJECTION" in report.operators
    assert "CAST" not in report.operators
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5


def test_weighted_sparse_ids_export_with_resizable_inputs(tmp_path):
    ids = keras.Input(shape=(None,), ragged=True, dtype="int64", name="ids")
    weights = keras.Input(shape=(None,), ragged=True, dtype="float32", name="weights")
    bits = ProjectionLayer(20, 10)([ids, weights])
    model = keras.Model([ids, weights], keras.layers.Dense(5, activation="softmax")(bits))
    report = export(model, tmp_path / "ids.tflite", num_random_examples=300)
    assert report.inputs == [("ids", "int64", (-1,)), ("weights", "float32", (-1,))]
    assert report.builtin_only and report.top1_agreement == 1.0
    samples = [
        tf.ragged.constant([[1, 2, 3], [7]], dtype=tf.int64),
        tf.ragged.constant([[0.5, 1.0, -2.0], [3.0]], dtype=tf.float32),
    ]
    np.testing.assert_allclose(predict(report.path, samples), model(samples).numpy(), atol=1e-5)


def test_projection_net_exports_its_projection_network(tmp_path, digits):
    _, (x_test, _) = digits
    trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    net = ProjectionNet(trainer, _projection_model())
    report = export(net, tmp_path / "net.tflite", verify_with=x_test[:50])
    assert "LSH_PROJECTION" in report.operators and report.top1_agreement == 1.0


def test_plain_keras_model_exports_with_batch_of_one(tmp_path, digits):
    _, (x_test, _) = digits
    model = keras.Sequential(
        [keras.Input((64,), name="pixels"), keras.layers.Dense(10, activation="softmax")]
    )
    report = export(model, tmp_path / "plain.tflite", verify_with=x_test)
    assert report.inputs == [("pixels", "float32", (1, 64))]
    assert report.builtin_only and report.top1_agreement == 1.0


def test_export_leaves_only_the_file_behind(tmp_path):
    export(_projection_model(), tmp_path / "out" / "model.tflite", num_random_examples=4)
    assert os.listdir(tmp_path / "out") == ["model.tflite"]


def test_failed_export_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="verify_with"):
        export(_projection_model(), tmp_path / "model.tflite", verify_with=[np.zeros((3, 64))] * 2)
    assert os.listdir(tmp_path) == []


def test_projection_that_does_not_read_a_model_input_is_rejected(tmp_path):
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(8)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(ProjectionLayer(4, 4, name="late")(hidden)))
    with pytest.raises(ValueError, match="'late' must read model inputs directly"):
        export(model, tmp_path / "model.tflite")
    assert not (tmp_path / "model.tflite").exists()


def test_non_model_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="Received: model=Dense"):
        export(keras.layers.Dense(3), tmp_path / "model.tflite")


def test_export_that_fails_in_litert_keeps_the_previous_file(tmp_path, monkeypatch):
    from tflite_export import _verify

    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")

    def broken_runtime(runner, inputs, argument="examples"):
        raise RuntimeError("LiteRT could not run the model")

    monkeypatch.setattr(_verify, "run_litert", broken_runtime)
    with pytest.raises(RuntimeError, match="could not run"):
        export(_projection_model(), path, num_random_examples=2)
    assert os.listdir(tmp_path) == ["model.tflite"] and path.read_bytes() == b"previous export"


def test_example_without_features_is_one_zero_weight_feature_in_the_file(tmp_path):
    ids = keras.Input(shape=(None,), ragged=True, dtype="int64", name="ids")
    weights = keras.Input(shape=(None,), ragged=True, dtype="float32", name="weights")
    model = keras.Model([ids, weights], keras.layers.Dense(4)(ProjectionLayer(6, 5)([ids, weights])))
    report = export(model, tmp_path / "ids.tflite", num_random_examples=8)
    empty = [tf.ragged.constant([[]], dtype=tf.int64), tf.ragged.constant([[]], dtype=tf.float32)]
    padded = [np.array([[0]], np.int64), np.array([[0.0]], np.float32)]
    np.testing.assert_allclose(predict(report.path, padded), model(empty).numpy(), atol=1e-6)


def _pruned_mlp(sparsity):
    from keras_compact.pruning import prune

    model = keras.Sequential(
        [
            keras.Input((784,), name="pixels"),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return prune(model, sparsity).model


def test_pruned_model_exports_sparse_when_smaller_and_reports_both_sizes(tmp_path):
    report = export(_pruned_mlp(0.9), tmp_path / "sparse.tflite", num_random_examples=20)
    assert report.sparse and report.sparse_bytes == report.bytes
    assert report.sparse_bytes < report.dense_bytes / 4
    assert report.weight_sparsity == pytest.approx(0.9, abs=1e-3)
    assert report.builtin_only and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5
    assert "DENSIFY" in report.operators


def test_auto_keeps_dense_when_weights_are_not_sparse(tmp_path):
    report = export(_pruned_mlp(0.0), tmp_path / "dense.tflite", num_random_examples=4)
    assert not report.sparse and report.sparse_bytes is None and report.bytes == report.dense_bytes


def test_dynamic_int8_on_sparse_weights_keeps_what_the_stock_runtime_runs(tmp_path):
    report = export(_pruned_mlp(0.9), tmp_path / "q.tflite", quantization="dynamic", num_random_examples=20)
    # LiteRT's default XNNPack delegate cannot prepare sparse int8 FULLY_CONNECTED
    # (measured with ai-edge-litert 2.3), so "auto" keeps the dense int8 file.
    assert not report.sparse and report.bytes == report.dense_bytes < 300_000
    assert report.sparse_bytes < report.dense_bytes
    assert report.top1_agreement >= 0.95
    with pytest.raises(ValueError, match="cannot run the sparse encoding"):
        export(_pruned_mlp(0.9), tmp_path / "forced.tflite", quantization="dynamic", sparse=True)
    assert not (tmp_path / "forced.tflite").exists()


@pytest.mark.parametrize(
    "kwargs, message", [(dict(quantization="int4"), "quantization='int4'"), (dict(sparse="yes"), "sparse='yes'")]
)
def test_bad_export_options_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export(_pruned_mlp(0.5), tmp_path / "m.tflite", **kwargs)


def _small_projection_model():
    return keras.Sequential(
        [keras.Input((16,), name="features"), ProjectionLayer(6, 4), keras.layers.Dense(3, activation="softmax")]
    )


def test_examples_with_nan_or_inf_are_left_out_of_the_comparison_and_reported(tmp_path):
    x = np.random.default_rng(0).uniform(size=(20, 16)).astype("float32")
    x[3, 2], x[7, 0] = np.nan, -np.inf
    with pytest.warns(UserWarning, match="2 of the 20 examples have NaN or infinite inputs"):
        report = export(_small_projection_model(), tmp_path / "m.tflite", verify_with=x)
    assert (report.num_examples, report.non_finite_examples) == (18, 2)
    assert report.top1_agreement == 1.0 and np.isfinite(report.max_abs_diff)
    assert "2 with NaN/inf inputs left out" in str(report)


def test_only_non_finite_examples_fail_and_write_nothing(tmp_path):
    x = np.full((4, 16), np.nan, "float32")
    with pytest.raises(ValueError, match="Every one of the 4 examples to compare on has NaN or infinite inputs"):
        export(_small_projection_model(), tmp_path / "m.tflite", verify_with=x)
    assert list(tmp_path.iterdir()) == []


def test_new_files_get_0666_less_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    old_umask = os.umask(0o022)
    try:
        export(model, tmp_path / "new.tflite", num_random_examples=2)
        assert stat.S_IMODE(os.stat(tmp_path / "new.tflite").st_mode) == 0o644
        for mode in (0o644, 0o600, 0o664):
            target = tmp_path / f"old-{mode:o}.tflite"
            target.write_bytes(b"old")
            os.chmod(target, mode)
            export(model, target, num_random_examples=2)
            assert stat.S_IMODE(os.stat(target).st_mode) == mode
    finally:
        os.umask(old_umask)


def test_unwritable_targets_fail_before_converting_and_name_the_users_path(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    (tmp_path / "folder.tflite").mkdir()
    with pytest.raises(IsADirectoryError, match=f"{tmp_path / 'folder.tflite'}: it is a directory"):
        export(model, tmp_path / "folder.tflite")
    (tmp_path / "plain_file").write_text("x")
    with pytest.raises(NotADirectoryError, match="plain_file is not a directory") as error:
        export(model, tmp_path / "plain_file" / "m.tflite")
    assert ".tmp-" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.tflite", "plain_file"]


def test_predict_and_verify_check_the_examples_against_the_file(tmp_path):
    model = _small_projection_model()
    path = tmp_path / "m.tflite"
    export(model, path, num_random_examples=4)
    x = np.random.default_rng(0).uniform(size=(5, 16)).astype("float32")
    with pytest.raises(ValueError, match=r"examples for input 'features' must have shape \(examples,\) \+ \(16,\)\. Received shape: \(5, 15\)"):
        predict(path, x[:, :15])
    with pytest.raises(ValueError, match=r"one example needs a leading axis: x\[None\]"):
        predict(path, x[0])
    assert predict(path, x[:1]).shape == (1, 3)
    with pytest.raises(ValueError, match=r"inputs for input 'features' must have shape \(examples,\) \+ \(16,\)"):
        verify(model, path, x[:, :15])
    with pytest.raises(FileNotFoundError, match="No such .tflite file"):
        predict(tmp_path / "absent.tflite", x)


def test_representative_data_errors_name_representative_data(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"representative_data for input .* must have shape"):
        export(model, tmp_path / "m.tflite", quantization="int8", representative_data=np.zeros((10, 5), "float32"))


@pytest.mark.parametrize("with_projection", [True, False], ids=["projection", "plain"])
def test_inputs_are_written_in_the_keras_order_and_a_list_means_it_everywhere(tmp_path, with_projection):
    # The converter orders a signature's inputs by name; the Keras model here has "zzz_extra" first,
    # and export writes the file's inputs in the model's order, so one list means the same to all.
    extra = keras.Input((3,), name="zzz_extra")
    pixels = keras.Input((16,), name="pixels")
    features = ProjectionLayer(4, 4)(pixels) if with_projection else keras.layers.Dense(8)(pixels)
    joined = keras.layers.Concatenate()([keras.layers.Dense(4)(extra), features])
    model = keras.Model([extra, pixels], keras.layers.Dense(3, activation="softmax")(joined))
    rng = np.random.default_rng(0)
    x = [rng.uniform(size=(40, 3)).astype("float32"), rng.uniform(size=(40, 16)).astype("float32")]
    report = export(model, tmp_path / "m.tflite", verify_with=x)
    assert [name for name, _, _ in report.inputs] == ["zzz_extra", "pixels"]
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5
    assert verify(model, report.path, x).top1_agreement == 1.0
    np.testing.assert_allclose(predict(report.path, x), model.predict(x, verbose=0), atol=1e-5)
    by_name = {"pixels": x[1], "zzz_extra": x[0]}
    np.testing.assert_allclose(predict(report.path, by_name), model.predict(x, verbose=0), atol=1e-5)


def _worker_folder(folder, model, examples, **options):
    """A work folder as `_other_backend` writes it for `tflite_export._convert_worker`."""
    from tflite_export import _other_backend

    folder.mkdir()
    _other_backend.write_job(str(folder), model, [examples], None, options)
    return folder


def test_the_worker_that_converts_for_other_backends_reports_or_passes_the_error_back(tmp_path, digits):
    import pickle

    from tflite_export import _convert_worker

    (_, _), (x_test, _) = digits
    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(10, activation="softmax")])
    work = _worker_folder(tmp_path / "good", model, x_test[:20], quantization=None)
    assert _convert_worker.main([str(work)]) == 0
    result = pickle.loads((work / "result.pkl").read_bytes())
    assert result["report"].num_examples == 20 and [name for name, _, _ in result["report"].inputs] == ["pixels"]
    assert result["report"].top1_agreement == 1.0 and (work / "model.tflite").stat().st_size == result["report"].bytes
    # A refusal raised there comes back as the error itself, for the calling process to raise.
    work = _worker_folder(tmp_path / "bad", model, x_test[:20], quantization="int4")
    _convert_worker.main([str(work)])
    error = pickle.loads((work / "result.pkl").read_bytes())["error"]
    assert isinstance(error, ValueError) and "quantization" in str(error) and "int4" in str(error)
    # A model file that does not load says what to do.
    (work / "model.keras").write_bytes(b"not a model")
    _convert_worker.main([str(work)])
    error = pickle.loads((work / "result.pkl").read_bytes())["error"]
    assert isinstance(error, RuntimeError) and "register_keras_serializable" in str(error)
