import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from keras_compact import HadamardClassifier, HSICBottleneck, ProjectionLayer, TargetedDropout
from keras_compact.ops import hadamard_class_matrix
from keras_compact.pruning import prune
from tflite_export import _cli, export, inspect, predict, quantization_report, verify
from tflite_export import _flatbuffer as fb
from tflite_export import _projection

pytestmark = pytest.mark.tensorflow_backend("converts in this process; other backends convert in a TensorFlow subprocess, tested in test_backends.py")

_MODES = ["dynamic", "float16", "int8", "int8_io", "int16x8"]


def _trained(model, x, y, epochs=8):
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def models(digits):
    """One trained model of every kind the package makes, on real digits."""
    keras.utils.set_random_seed(0)
    (x, y), _ = digits
    plain = _trained(
        keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")]), x, y)
    projection = _trained(
        keras.Sequential([keras.Input((64,), name="pixels"), ProjectionLayer(60, 12),
                          keras.layers.Dense(10, activation="softmax")]), x, y)
    hadamard = _trained(
        keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(64, activation="relu"),
                          HadamardClassifier(10), keras.layers.Softmax()]), x, y)
    targeted = _trained(
        keras.Sequential([keras.Input((64,), name="pixels"),
                          TargetedDropout(keras.layers.Dense(128, activation="relu"), 0.5, 0.5),
                          TargetedDropout(keras.layers.Dense(10, activation="softmax"), 0.5, 0.5)]), x, y)
    pruned = prune(targeted, 0.5).model
    net = HSICBottleneck([keras.Sequential([keras.layers.Dense(64), keras.layers.ReLU()]) for _ in range(2)],
                         num_classes=10)
    net.compile(keras.optimizers.Adam(1e-2))
    net.fit(x, y, batch_size=128, epochs=3, verbose=0)
    hsic = net.post_train(x, y, epochs=10, batch_size=64, verbose=0)
    return {"plain": plain, "projection": projection, "hadamard": hadamard, "pruned": pruned, "hsic": hsic}


@pytest.mark.parametrize("mode", _MODES)
@pytest.mark.parametrize("kind", ["plain", "projection", "hadamard", "pruned", "hsic"])
def test_every_quantization_mode_runs_in_litert_and_agrees(tmp_path, models, digits, kind, mode):
    (x_train, _), (x_test, y_test) = digits
    if kind == "projection" and mode == "int8_io":
        with pytest.raises(ValueError, match="int8_io' is not available for models with a ProjectionLayer"):
            export(models[kind], tmp_path / "m.tflite", quantization=mode, representative_data=x_train)
        assert not (tmp_path / "m.tflite").exists()
        return
    if kind == "hadamard" and mode == "int16x8":  # its normalization has no 16x8 kernel
        with pytest.raises(ValueError, match="16x8-bit not yet supported for op: 'L2_NORMALIZATION'.*'int8'"):
            export(models[kind], tmp_path / "m.tflite", quantization=mode, representative_data=x_train)
        assert not (tmp_path / "m.tflite").exists()
        return
    report = export(models[kind], tmp_path / "m.tflite", verify_with=x_test, quantization=mode,
                    representative_data=x_train if mode in ("int8", "int8_io", "int16x8") else None)
    assert report.builtin_only and report.num_examples == len(x_test)
    assert report.top1_agreement >= 0.97, report
    keras_accuracy = np.mean(models[kind].predict(x_test, verbose=0).argmax(-1) == y_test)
    litert_accuracy = np.mean(predict(report.path, x_test).argmax(-1) == y_test)
    assert litert_accuracy >= keras_accuracy - 0.02
    info = inspect(report.path)
    if mode == "int8_io":
        assert info.inputs[0].dtype == "int8" and info.inputs[0].scale is not None
        assert info.outputs[0].dtype == "int8"
    else:
        assert info.inputs[0].dtype == "float32"
    if mode == "int16x8":  # int16 activations inside, int8 weights
        types = {t.type for t in fb.read(open(report.path, "rb").read()).subgraphs[0].tensors}
        assert schema.TensorType.INT16 in types and schema.TensorType.INT8 in types


@pytest.mark.tensorflow_backend("the LiteRT refusal is read after conversion, the same on every backend")
def test_int16x8_where_litert_has_no_kernel_is_refused_with_the_reason(tmp_path):
    # MobileNetV2's depthwise convolutions: LiteRT's 16x8 kernel refuses them (int16 accumulation overflow).
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=4)
    data = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"LiteRT cannot run this file: .*DEPTHWISE_CONV_2D.* failed to prepare\. "
                                         r"Nothing was written to .*use quantization='int8'"):
        export(model, tmp_path / "m.tflite", quantization="int16x8", representative_data=data)
    assert not (tmp_path / "m.tflite").exists()


def test_int16x8_of_a_model_reading_token_ids_is_refused_before_converting(tmp_path):
    # The converter fails on integer inputs in 16x8 mode ("Max and min for dynamic tensors should be recorded
    # during calibration"); export says why, and that int8 takes the model.
    ids = keras.Input((6,), dtype="int32", name="ids")
    model = keras.Model(ids, keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Embedding(50, 4)(ids))))
    data = np.random.default_rng(0).integers(0, 50, (16, 6)).astype("int32")
    with pytest.raises(ValueError, match=r"quantization='int16x8' cannot take .*input\(s\) \['ids'\] hold integers.*"
                                         r"Use quantization='int8'"):
        export(model, tmp_path / "ids.tflite", quantization="int16x8", representative_data=data)
    assert not (tmp_path / "ids.tflite").exists()
    assert export(model, tmp_path / "ids.tflite", quantization="int8", representative_data=data).top1_agreement >= 0.9


def test_quantized_files_are_smaller(tmp_path, models):
    sizes = {mode: export(models["plain"], tmp_path / f"{mode}.tflite", quantization=mode,
                          representative_data=np.random.default_rng(0).random((64, 64), "float32"),
                          min_agreement=None).bytes
             for mode in [None, "float16", "int8"]}
    assert sizes["int8"] < sizes["float16"] < sizes[None]


def test_full_int8_stores_the_hadamard_matrix_exactly(tmp_path, digits):
    (x_train, _), _ = digits
    model = keras.Sequential([keras.Input((64,), name="pixels"), HadamardClassifier(10, implementation="matmul")])
    model.layers[-1].alpha.assign(3.0)
    report = export(model, tmp_path / "int8.tflite", quantization="int8", representative_data=x_train)
    parsed = fb.read(open(report.path, "rb").read())
    tensors = [t for t in parsed.subgraphs[0].tensors if t.type == schema.TensorType.INT8 and list(t.shape) == [10, 64]]
    values = np.frombuffer(bytes(parsed.buffers[tensors[0].buffer].data), np.int8).reshape(10, 64)
    np.testing.assert_array_equal(values, 127 * hadamard_class_matrix(64, 10).astype(np.int8))
    np.testing.assert_allclose(np.asarray(tensors[0].quantization.scale) * 127, 3.0, rtol=1e-6)


def test_representative_data_as_dataset_generator_or_dict(tmp_path, models, digits):
    (x_train, y_train), _ = digits
    sources = {
        "dataset": tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(32),
        "generator": lambda: (x_train[i : i + 50] for i in range(0, 400, 50)),
        "dict": {"pixels": x_train[:200]},
    }
    for name, data in sources.items():
        report = export(models["plain"], tmp_path / f"{name}.tflite", quantization="int8", representative_data=data)
        # Without verify_with, the file is compared on (at most 300 of) the representative examples.
        assert report.num_examples == (200 if name == "dict" else 300) and report.top1_agreement >= 0.97


def test_int8_without_representative_data_is_a_clear_error(tmp_path, models):
    with pytest.raises(ValueError, match="quantization='int8' quantizes activations and needs representative_data"):
        export(models["plain"], tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(ValueError, match=r"quantization must be one of .* Received: quantization='int4'"):
        export(models["plain"], tmp_path / "m.tflite", quantization="int4")


def test_export_below_min_agreement_fails_and_leaves_no_file(tmp_path, models, digits):
    (_, _), (x_test, _) = digits
    path = tmp_path / "bad.tflite"
    # Calibrated on constant zeros, every activation range collapses: the int8 file is useless.
    zeros = np.zeros((50, 64), "float32")
    with pytest.raises(ValueError, match=r"agrees with the Keras model on the top-1 class of only .*min_agreement=0.95"
                       ) as refusal:
        export(models["plain"], path, verify_with=x_test, quantization="int8", representative_data=zeros)
    # The user's path, also where a TensorFlow-backend Python converted (JAX) and refused first.
    assert f"nothing was written to {path}." in str(refusal.value)
    assert not path.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    report = export(models["plain"], path, verify_with=x_test, quantization="int8", representative_data=zeros,
                    min_agreement=None)
    assert report.top1_agreement < 0.95 and path.exists()


def _damaged(digits):
    """A digits MLP whose middle layer has one huge weight per unit: int8 rounds its others to zero."""
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = _trained(keras.Sequential([
        keras.Input((64,), name="pixels"), keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(32, activation="relu", name="damaged"), keras.layers.Dense(10, activation="softmax",
                                                                                    name="classes")]), x, y, 3)
    healthy = keras.models.clone_model(model)
    healthy.set_weights(model.get_weights())
    kernel, bias = model.get_layer("damaged").get_weights()
    kernel[5, :] = 200.0 * np.abs(kernel).max()
    model.get_layer("damaged").set_weights([kernel, bias])
    return healthy, model


def test_quantization_report_names_the_layer_that_loses_the_most(digits):
    (x, _), _ = digits
    healthy, damaged = _damaged(digits)
    report = quantization_report(healthy, x[:300])
    assert {row.layer for row in report.layers} == {"hidden", "damaged", "classes"}
    assert all(row.error_steps < 1.0 for row in report.layers), report  # rounding alone: about 0.29
    report = quantization_report(damaged, x[:300], debug_data=x[300:400])
    assert report.worst(1) == ["damaged"] and report.layers[0].error_steps > 10, report
    assert [row.error_steps for row in report.layers] == sorted((r.error_steps for r in report.layers), reverse=True)
    assert report.examples == 64 and "| damaged | FULLY_CONNECTED |" in str(report)


@pytest.mark.parametrize("kwargs, message", [
    (dict(quantization="dynamic"), r"quantization_report measures int8 .* Received: quantization='dynamic'"),
    (dict(quantization="int16x8"), r"debugger quantizes to int8 only.* Received: quantization='int16x8'"),
    (dict(representative_data=None), "needs representative_data"),
])
def test_quantization_report_bad_arguments(digits, kwargs, message):
    (x, _), _ = digits
    healthy, _ = _damaged(digits)
    with pytest.raises(ValueError, match=message):
        quantization_report(healthy, **{"representative_data": x[:100], **kwargs})


def test_an_int8_refusal_names_the_layers_that_add_the_most_error(tmp_path, digits):
    (x, _), (x_test, _) = digits
    _, damaged = _damaged(digits)
    with pytest.raises(ValueError, match=r"agrees .* only .*quantization_report on these examples\): \['damaged'"):
        export(damaged, tmp_path / "m.tflite", verify_with=x_test, quantization="int8", representative_data=x[:300])
    assert not (tmp_path / "m.tflite").exists()


def _kernel_types(path):
    """`{kernel shape: tensor type}` of the 2-D constant tensors of a file."""
    parsed = fb.read(open(path, "rb").read())
    return {tuple(t.shape): t.type for t in parsed.subgraphs[0].tensors
            if len(t.shape) == 2 and parsed.buffers[t.buffer].data is not None and len(parsed.buffers[t.buffer].data)}


def test_float_layers_keep_the_named_layers_in_float32_and_save_the_int8_file(tmp_path, digits):
    (x, _), (x_test, _) = digits
    _, damaged = _damaged(digits)
    for float_layers in (["damaged"], lambda layer: layer.name == "damaged"):
        report = export(damaged, tmp_path / "m.tflite", verify_with=x_test, quantization="int8",
                        representative_data=x[:300], float_layers=float_layers)
        assert report.top1_agreement >= 0.97 and report.builtin_only, report
        types = _kernel_types(report.path)
        assert types[(32, 64)] == schema.TensorType.FLOAT32  # damaged's kernel, [units, inputs] in the file
        assert types[(64, 64)] == schema.TensorType.INT8 and types[(10, 32)] == schema.TensorType.INT8
    code, out, err = _cli_run_saved(tmp_path, damaged, x, "--float-layers", "damaged")
    assert code == 0 and "builtin only" in out, err


def test_layers_named_like_tensorflow_s_scope_suffixes_are_told_apart(tmp_path, digits):
    # Keras names a model's second Dense `dense_1`; the converter's trace names the first one's scope
    # `dense_1` too (TensorFlow appends `_<n>` to every scope), and the second's `dense_1_2`.
    (x, _), (x_test, _) = digits
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(48, activation="relu", name="dense"),
                              keras.layers.Dense(32, activation="relu", name="dense_1"),
                              keras.layers.Dense(10, activation="softmax", name="dense_2")])
    for name, shape in (("dense", (48, 64)), ("dense_1", (32, 48)), ("dense_2", (10, 32))):
        report = export(model, tmp_path / f"{name}.tflite", verify_with=x_test, quantization="int8",
                        representative_data=x[:300], float_layers=[name], min_agreement=None)
        types = _kernel_types(report.path)
        assert [kernel for kernel, kind in types.items() if kind == schema.TensorType.FLOAT32] == [shape], name
    errors = quantization_report(model, x[:300], debug_data=x_test[:16]).layers
    assert sorted(row.layer for row in errors if row.operator == "FULLY_CONNECTED") == ["dense", "dense_1", "dense_2"]


def _cli_run_saved(tmp_path, model, x, *flags):
    import contextlib
    import io

    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", pixels=x[:300])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _cli.main(["export", str(tmp_path / "model.keras"), "-o", str(tmp_path / "cli.tflite"), "--quantize",
                          "int8", "--representative", str(tmp_path / "data.npz"), "--min-agreement", "none", *flags])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("kwargs, message", [
    (dict(float_layers=["nowhere"]), r"float_layers names layers that .* does not have: \['nowhere'\]"),
    (dict(float_layers="damaged"), r"float_layers must be a non-empty list of layer names or a callable"),
    (dict(float_layers=lambda layer: False), "chose no layer of the model"),
    (dict(float_layers=["damaged"], quantization="int16x8"), r"needs quantization='int8'. Received: quantization='int16x8'"),
    (dict(float_layers=["dropout"]), r"no operator of their own in the file: \['dropout'\]"),
])
def test_bad_float_layers_are_refused_before_anything_is_written(tmp_path, digits, kwargs, message):
    (x, _), _ = digits
    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(16, name="damaged"),
                              keras.layers.Dropout(0.5, name="dropout"), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=message):
        export(model, tmp_path / "m.tflite", **{"quantization": "int8", "representative_data": x[:100], **kwargs})
    assert not list(tmp_path.iterdir())


def test_verify_compares_any_file_with_its_model(tmp_path, models, digits):
    (_, _), (x_test, _) = digits
    report = export(models["hadamard"], tmp_path / "h.tflite")
    result = verify(models["hadamard"], report.path, x_test)
    assert result.num_examples == len(x_test) and result.top1_agreement == 1.0 and result.max_abs_diff < 1e-5
    # Another model's file: the outputs differ.
    assert verify(models["plain"], report.path, x_test).max_abs_diff > 0.1


def test_inspect_reports_a_hand_built_lsh_projection_file():
    seeds = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    report = inspect(_projection.lsh_projection_model(seeds, sparse=False, feature_dtype=np.int64, with_weights=True))
    assert report.operators == {"LSH_PROJECTION": 1} and report.builtin_only
    assert [(t.name, t.dtype, t.shape) for t in report.inputs] == [("input", "int64", (-1,)), ("weight", "float32", (-1,))]
    assert [(t.name, t.dtype, t.shape) for t in report.outputs] == [("output", "int32", (12,))]
    assert report.weight_tensors == {"hash": 48} and report.weight_bytes == 48
    assert json.loads(report.to_json())["operators"] == {"LSH_PROJECTION": 1}


def test_inspect_flags_custom_and_flex_operators():
    model = fb.read(_projection.lsh_projection_model(np.ones((1, 2), np.float32), False, np.int32, False))
    for name in ("FlexAddV2", "MyOp"):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = name
        model.operatorCodes.append(code)
        operator = schema.OperatorT()
        operator.opcodeIndex = len(model.operatorCodes) - 1
        operator.inputs, operator.outputs = [1], [2]
        model.subgraphs[0].operators.append(operator)
    report = inspect(fb.write(model))
    assert not report.builtin_only
    assert report.flex_operators == ["FlexAddV2"] and report.custom_operators == ["MyOp"]
    assert report.operators == {"LSH_PROJECTION": 1, "FlexAddV2": 1, "MyOp": 1}
    assert "needs the Flex delegate" in str(report)


def _cli_run(capsys, *arguments):
    code = _cli.main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_export_and_inspect(tmp_path, capsys, models, digits):
    (x_train, _), (x_test, _) = digits
    models["hadamard"].save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", pixels=x_train[:200])
    code, out, err = _cli_run(capsys, "export", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite"),
                              "--quantize", "int8", "--representative", str(tmp_path / "data.npz"))
    assert code == 0 and "builtin only" in out, err
    code, out, _ = _cli_run(capsys, "inspect", str(tmp_path / "m.tflite"), "--json")
    assert code == 0 and json.loads(out)["builtin_only"] is True


@pytest.mark.parametrize("case", ["missing", "truncated", "random", "unknown_layer", "not_keras"])
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys, models, case):
    good = tmp_path / "good.tflite"
    export(models["plain"], good)
    if case == "missing":
        arguments = ["inspect", str(tmp_path / "absent.tflite")]
        expected = "No such .tflite file"
    elif case == "truncated":
        (tmp_path / "cut.tflite").write_bytes(good.read_bytes()[:2000])
        arguments, expected = ["inspect", str(tmp_path / "cut.tflite")], "is not a valid TFLite model"
    elif case == "random":
        (tmp_path / "noise.tflite").write_bytes(np.random.default_rng(0).bytes(4000))
        arguments, expected = ["inspect", str(tmp_path / "noise.tflite")], "is not a TFLite model"
    elif case == "unknown_layer":

        class Unregistered(keras.layers.Layer):
            def call(self, x):
                return x * 2

        keras.Sequential([keras.Input((4,)), Unregistered()]).save(tmp_path / "unknown.keras")
        arguments = ["export", str(tmp_path / "unknown.keras"), "-o", str(tmp_path / "u.tflite")]
        expected = "cannot load"
    else:
        (tmp_path / "text.keras").write_text("not a model")
        arguments = ["export", str(tmp_path / "text.keras"), "-o", str(tmp_path / "t.tflite")]
        expected = "cannot load"
    code, out, err = _cli_run(capsys, *arguments)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-compact: error: ") and expected in lines[0]
    assert "Traceback" not in err


def test_matrix_lowering_is_a_fast_quantizable_fully_connected(tmp_path, models, digits):
    (x_train, _), (x_test, _) = digits
    builtin = export(models["projection"], tmp_path / "builtin.tflite", verify_with=x_test)
    matrix = export(models["projection"], tmp_path / "matrix.tflite", verify_with=x_test, projection_lowering="matrix")
    assert "LSH_PROJECTION" not in matrix.operators and {"FULLY_CONNECTED", "GREATER", "CAST"} <= set(matrix.operators)
    assert matrix.builtin_only and matrix.top1_agreement == 1.0 and matrix.max_abs_diff < 1e-5
    # The 64 x 720 hash matrix is stored (float32), not just the 720 seeds.
    assert matrix.bytes > builtin.bytes + 64 * 720 * 4 - 4096
    quantized = export(models["projection"], tmp_path / "q.tflite", verify_with=x_test, projection_lowering="matrix",
                       quantization="int8", representative_data=x_train)
    assert quantized.bytes < matrix.bytes / 3 and quantized.top1_agreement >= 0.95


def test_matrix_lowering_rejects_sparse_projections(tmp_path):
    from keras_compact.models import projection_network

    with pytest.raises(ValueError, match="projection_lowering='matrix' needs a ProjectionLayer with a dense float input"):
        export(projection_network(3, 4, 4), tmp_path / "s.tflite", projection_lowering="matrix")
    with pytest.raises(ValueError, match="projection_lowering must be one of"):
        export(projection_network(3, 4, 4), tmp_path / "s.tflite", projection_lowering="table")


def test_labels_and_app_facts_are_embedded_as_metadata(tmp_path, models):
    from tflite_export import read_metadata

    labels = [f"digit {i}" for i in range(10)]
    report = export(models["projection"], tmp_path / "p.tflite", labels=labels, metadata={"pixels": "0..1"})
    stored = read_metadata(report.path)
    assert stored["labels"] == labels and stored["metadata"] == {"pixels": "0..1"}
    assert stored["inputs"][0]["name"] == "pixels" and stored["inputs"][0]["format"].startswith("float32 [n]")
    assert "labels: digit 0, digit 1" in str(inspect(report.path))
    with pytest.raises(ValueError, match="labels must name each of the 10 output units. Received 3 labels"):
        export(models["projection"], tmp_path / "x.tflite", labels=["a", "b", "c"])


def test_batch_size_sets_the_examples_per_invoke(tmp_path, models, digits):
    (_, _), (x_test, _) = digits
    report = export(models["hadamard"], tmp_path / "b8.tflite", verify_with=x_test[:21], batch_size=8)
    assert inspect(report.path).inputs[0].shape == (8, 64)
    assert report.num_examples == 21 and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5
    np.testing.assert_allclose(predict(report.path, x_test[:21]), models["hadamard"].predict(x_test[:21], verbose=0),
                               atol=1e-5)
    with pytest.raises(ValueError, match="exports with batch_size=1"):
        export(models["projection"], tmp_path / "p.tflite", batch_size=4)
    matrix = export(models["projection"], tmp_path / "m.tflite", verify_with=x_test[:10], batch_size=4,
                    projection_lowering="matrix")
    assert matrix.top1_agreement == 1.0


def test_unsupported_layer_is_named_with_what_to_do(tmp_path):
    class Inverse(keras.layers.Layer):
        def call(self, x):
            return tf.reshape(tf.linalg.inv(tf.reshape(x, (-1, 2, 2)) + tf.eye(2)), (-1, 4))

    model = keras.Sequential([keras.Input((4,), name="x"), Inverse(name="my_inverse"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Layer\(s\) \['my_inverse'\] use TensorFlow op\(s\) \['MatrixInverse'\]"):
        export(model, tmp_path / "u.tflite")
    assert not (tmp_path / "u.tflite").exists()
