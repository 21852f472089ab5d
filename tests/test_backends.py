"""What the JAX backend adds: distributed training on JAX's engine, export from a JAX process,
and the TensorFlow-only layers in tf.data. Runs in the suite's `KERAS_BACKEND=jax` pass."""

import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact
from conftest import BACKEND
from keras_compact import HadamardClassifier, ProjectionLayer, TargetedDropout, TextFeaturizer
from litert_oracle import BuiltinLSH
from tflite_export import export, predict

pytestmark = pytest.mark.skipif(
    BACKEND != "jax", reason="the JAX backend's paths; they run in the suite's KERAS_BACKEND=jax pass"
)

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
MODELS = ("projection_net", "hsic", "targeted_dropout")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(out, *args, devices=1):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process, expect):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0 and expect in stdout, stderr[-3000:]


def test_data_parallel_over_devices_and_processes_ends_with_one_devices_weights(tmp_path):
    port = _free_port()
    runs = {
        "single": _start(tmp_path / "single.npz", "single"),
        "local": _start(tmp_path / "local.npz", "local", devices=2),
        "process0": _start(tmp_path / "process0.npz", "multi", "0", "2", str(port)),
        "process1": _start(tmp_path / "process1.npz", "multi", "1", "2", str(port)),
    }
    expected = {"single": "1 devices", "local": "2 devices", "process0": "2 devices", "process1": "2 devices"}
    for name, process in runs.items():
        _finish(process, f"TRAINED {'multi' if name.startswith('process') else name} {expected[name]}")
    weights = {name: np.load(tmp_path / f"{name}.npz") for name in runs}
    single = weights["single"]
    assert {key.rsplit("_", 1)[0] for key in single.files} == set(MODELS)
    for key in single.files:
        # The two processes hold the same replicated weights.
        np.testing.assert_array_equal(weights["process0"][key], weights["process1"][key])
        for name in ("local", "process0"):
            np.testing.assert_allclose(weights[name][key], single[key], atol=1e-5, err_msg=f"{name}: {key}")


def _dense_models():
    keras.utils.set_random_seed(0)
    projection = keras.Sequential(
        [keras.Input((64,), name="pixels"), ProjectionLayer(20, 10), keras.layers.Dense(10, activation="softmax")]
    )
    hadamard = keras.Sequential(
        [keras.Input((64,), name="pixels"), keras.layers.Dense(32, activation="relu"), HadamardClassifier(10)]
    )
    dropout = keras.Sequential(
        [keras.Input((64,), name="pixels"), TargetedDropout(keras.layers.Dense(32), 0.5, 0.5), keras.layers.Dense(10)]
    )
    return {"projection": projection, "hadamard": hadamard, "targeted_dropout": dropout}


def test_export_from_a_jax_process_converts_and_verifies_against_the_jax_model(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    for name, model in _dense_models().items():
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=name != "projection"))
        model.fit(x_train, y_train, epochs=1, verbose=0)
        report = export(model, tmp_path / f"{name}.tflite", verify_with=x_test[:200])
        assert report.builtin_only and report.num_examples == 200, report
        assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4, report
        assert report.path == str(tmp_path / f"{name}.tflite")
        # The comparison is with this process's model: LiteRT's outputs are the JAX model's.
        np.testing.assert_allclose(
            predict(report.path, x_test[:20]), model.predict(x_test[:20], verbose=0), atol=1e-4
        )
    assert not list(tmp_path.glob(".tmp-*"))


def test_int16x8_export_from_a_jax_process_is_calibrated_in_the_tensorflow_subprocess(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    model = _dense_models()["targeted_dropout"]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=2, verbose=0)
    report = export(model, tmp_path / "m.tflite", verify_with=x_test[:200], quantization="int16x8",
                    representative_data=x_train[:200])
    assert report.builtin_only and report.top1_agreement >= 0.97, report
    from ai_edge_litert.interpreter import Interpreter

    types = {detail["dtype"] for detail in Interpreter(model_path=report.path).get_tensor_details()}
    assert np.int16 in types and np.int8 in types


def test_quantization_report_and_float_layers_from_jax_run_in_the_tensorflow_subprocess(tmp_path, digits):
    from tflite_export import quantization_report

    (x_train, _), _ = digits
    model = _dense_models()["targeted_dropout"]
    report = quantization_report(model, x_train[:100])
    assert {row.layer for row in report.layers} == {layer.name for layer in model.layers}
    assert all(0 < row.error_steps < 1.0 for row in report.layers), report
    # float_layers reach the TensorFlow subprocess by name (a callable is resolved here first).
    exported = export(model, tmp_path / "m.tflite", quantization="int8", representative_data=x_train[:100],
                      float_layers=lambda layer: isinstance(layer, TargetedDropout))
    assert exported.top1_agreement >= 0.97, exported
    from ai_edge_litert.interpreter import Interpreter

    shapes = {tuple(d["shape"]): d["dtype"] for d in Interpreter(model_path=exported.path).get_tensor_details()
              if len(d["shape"]) == 2 and d["shape"][0] > 1}
    assert shapes[(32, 64)] == np.float32 and shapes[(10, 32)] == np.int8  # TargetedDropout's Dense in float


def test_projection_bits_from_jax_equal_the_builtin_operator_in_the_exported_file(tmp_path, rng):
    model = _dense_models()["projection"]
    layer = model.layers[0]
    x = rng.standard_normal((300, 64)).astype("float32")
    oracle = BuiltinLSH(layer.hash_seeds, sparse=False, feature_dtype=np.int32, with_weights=True)
    np.testing.assert_array_equal(np.asarray(layer(x)).astype(np.int32), oracle.dense(x))
    report = export(model, tmp_path / "projection.tflite", verify_with=x)
    assert report.operators.get("LSH_PROJECTION") == 1 and report.top1_agreement == 1.0


def test_export_errors_from_the_tensorflow_subprocess_reach_the_caller_and_write_nothing(tmp_path):
    model = _dense_models()["projection"]
    with pytest.raises(ValueError, match="batch_size=4"):
        export(model, tmp_path / "bad.tflite", batch_size=4)
    assert not list(tmp_path.iterdir())


def test_the_command_line_exports_a_model_saved_on_jax(tmp_path, digits):
    (_, _), (x_test, _) = digits
    model = _dense_models()["hadamard"]
    model.save(tmp_path / "hadamard.keras")
    result = subprocess.run(
        [sys.executable, "-m", "tflite_export", "export", str(tmp_path / "hadamard.keras"), "-o", str(tmp_path / "h.tflite")],
        capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(predict(tmp_path / "h.tflite", x_test[:16]), model.predict(x_test[:16], verbose=0), atol=1e-4)


def test_tensorflow_only_layers_run_in_tf_data_and_say_what_to_do_outside_it():
    featurizer, projection = TextFeaturizer(ngrams=2), ProjectionLayer(8, 6)
    dataset = tf.data.Dataset.from_tensor_slices((["turn on the lights", "play some jazz", ""], [0, 1, 0])).batch(2)
    dataset = dataset.map(lambda text, label: (projection(featurizer(text)), label))
    model = keras.Sequential([keras.Input((48,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    bits = np.concatenate([np.asarray(batch) for batch, _ in dataset])
    assert bits.shape == (3, 48) and not bits[2].any()  # no features: all bits 0
    with pytest.raises(RuntimeError, match=r"TextFeaturizer .*needs the TensorFlow backend.*dataset\.map"):
        featurizer(tf.constant(["hello"]))
    with pytest.raises(RuntimeError, match=r"ProjectionLayer with ragged feature ids needs the TensorFlow backend"):
        projection(tf.ragged.constant([[1, 2]], dtype=tf.int64))
    with pytest.raises(RuntimeError, match=r"FeatureBuckets .*needs the TensorFlow backend"):
        keras_compact.layers.FeatureBuckets(10, 3)([tf.ragged.constant([[1]], dtype=tf.int64)] * 2)


def test_the_sequence_network_trains_on_jax_from_token_buckets_in_tf_data_and_exports(tmp_path):
    from keras_compact.layers import TextViews, TokenBuckets
    from keras_compact.models import sequence_network

    sentences = ["turn on the lights", "play some jazz", "", "what is the weather"] * 8
    views = TextViews({"tokens": TokenBuckets(64, 6)})
    dataset = tf.data.Dataset.from_tensor_slices((sentences, [0, 1, 0, 2] * 8)).batch(8)
    dataset = dataset.map(lambda text, label: (views(text)["tokens"], label))
    model = sequence_network(3, num_buckets=64, max_length=6, embedding_dim=8, units=4)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = model.fit(dataset, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    tokens = np.concatenate([np.asarray(batch) for batch, _ in dataset])
    report = export(model, tmp_path / "sequence.tflite", verify_with=tokens)
    assert report.builtin_only and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5, report
    with pytest.raises(RuntimeError, match=r"TokenBuckets .*needs the TensorFlow backend"):
        TokenBuckets(64, 6)(tf.constant(["hello"]))


def test_the_taylor_criterion_says_it_needs_tensorflow():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.ones((8, 4), "float32")
    with pytest.raises(ValueError, match="criterion='taylor'.*TensorFlow backend.*'jax'"):
        keras_compact.pruning.prune(model, 0.5, granularity="unit", criterion="taylor", data=(x, x[:, :1]))
