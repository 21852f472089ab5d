"""Export, verify and predict pair every tensor by name, verify every output, and write paths as a user expects."""

import os
import stat
import warnings

import keras
import numpy as np
import pytest

from model_generator import examples, generated_model
from tflite_export import ConverterCrashed, export, inspect, predict, read_metadata, verify

# Outputs named, more than 10 of them, of different sizes: a text sort of `output_<i>` scrambled these.
_HEADS = 12


def _many_heads():
    pixels = keras.Input((6,), name="zeta")
    extra = keras.Input((4,), name="alpha")
    joined = keras.layers.Concatenate()([pixels, extra])
    heads = [keras.layers.Dense(2 + i % 4, name=f"head{i}")(joined) for i in range(_HEADS)]
    rng = np.random.default_rng(0)
    x = [rng.uniform(size=(30, 6)).astype("float32"), rng.uniform(size=(30, 4)).astype("float32")]
    return keras.Model([pixels, extra], heads), x


def _as_list(outputs):
    return outputs if isinstance(outputs, list) else [outputs]


def test_a_file_with_more_than_ten_outputs_of_different_sizes_verifies_and_predicts_in_keras_order(tmp_path):
    model, x = _many_heads()
    report = export(model, tmp_path / "heads.tflite", verify_with=x)
    assert report.top1_agreement == 1.0 and [output.name for output in report.outputs] == model.output_names
    assert [info.name for info in inspect(report.path).outputs] == model.output_names
    assert [entry["name"] for entry in read_metadata(report.path)["outputs"]] == model.output_names
    expected = model.predict(x, verbose=0)
    for got in (predict(report.path, x), predict(report.path, {"alpha": x[1], "zeta": x[0]})):
        assert len(got) == _HEADS
        for want, out in zip(expected, got):
            np.testing.assert_allclose(out, want, atol=1e-5)


@pytest.mark.tensorflow_backend("tf.data and the same file on both backends are tested in test_backends.py")
def test_a_dict_of_outputs_pairs_by_its_keys(tmp_path):
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, {"score": keras.layers.Dense(1)(inputs), "label": keras.layers.Dense(3)(inputs)})
    x = np.random.default_rng(1).normal(size=(20, 5)).astype("float32")
    report = export(model, tmp_path / "d.tflite", verify_with=x)
    assert [(output.name, output.kind) for output in report.outputs] == [("label", "classes"), ("score", "values")]
    assert report.outputs[1].snr_db > 80 and report.top1_agreement == 1.0
    got = predict(report.path, x)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(got[0], expected["label"], atol=1e-5)
    np.testing.assert_allclose(got[1].reshape(-1), expected["score"].reshape(-1), atol=1e-5)


def test_a_model_called_on_a_dict_of_inputs_exports_with_its_keys(tmp_path):
    # KerasHub backbones take {"token_ids", "segment_ids", "padding_mask"}: the SavedModel's signature must be
    # that dict, not a list (Functional.call refused the list: "doesn't match the expected structure").
    inputs = {"zeta": keras.Input((3,), name="zeta"), "alpha": keras.Input((2,), name="alpha")}
    hidden = keras.layers.Concatenate()([inputs["zeta"], 2.0 * inputs["alpha"]])
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    rng = np.random.default_rng(2)
    x = {"zeta": rng.normal(size=(16, 3)).astype("float32"), "alpha": rng.normal(size=(16, 2)).astype("float32")}
    report = export(model, tmp_path / "dict.tflite", verify_with=x)
    assert report.top1_agreement == 1.0 and sorted(name for name, _, _ in report.inputs) == ["alpha", "zeta"]
    np.testing.assert_allclose(predict(report.path, x), model.predict(x, verbose=0), atol=1e-5)


def test_a_list_of_the_wrong_length_or_a_dict_missing_inputs_is_refused_with_the_names(tmp_path):
    model, x = _many_heads()
    report = export(model, tmp_path / "heads.tflite", verify_with=x)
    with pytest.raises(ValueError, match=r"one entry per input of the file \['zeta', 'alpha'\].*Received: 1 entries"):
        predict(report.path, [x[0]])
    with pytest.raises(ValueError, match=r"missing inputs \['alpha'\].*received keys \['zeta'\]"):
        verify(model, report.path, {"zeta": x[0]})
    with pytest.raises(ValueError, match=r"one entry per input of the model"):
        export(model, tmp_path / "other.tflite", verify_with=x[0])


def test_verify_refuses_a_file_whose_tensors_do_not_pair_with_the_model(tmp_path):
    model, x = _many_heads()
    report = export(model, tmp_path / "heads.tflite", verify_with=x)
    joined = keras.layers.Concatenate()(model.inputs)
    other = keras.Model(model.inputs, [keras.layers.Dense(2, name="elsewhere")(joined), model.outputs[0]])
    with pytest.raises(ValueError, match=r"outputs \['head0', .*'head11'\] do not pair with the Keras model's "
                                         r"outputs \['elsewhere', 'head0'\]"):
        verify(other, report.path, x)


def _segmenter():
    """A per-pixel classifier `[batch, 8, 8, 4]` and a regression head `[batch]` from one image."""
    image = keras.Input((8, 8, 2), name="image")
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    pixels = keras.layers.Conv2D(4, 1, name="pixels")(hidden)
    value = keras.layers.Reshape((), name="value")(keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    return keras.Model(image, [pixels, value])


def test_class_maps_are_compared_at_every_pixel_and_values_by_snr(tmp_path):
    model = _segmenter()
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 2)).astype("float32")
    report = export(model, tmp_path / "seg.tflite", verify_with=x)
    pixels, value = report.outputs
    assert (pixels.name, pixels.kind, pixels.agreement) == ("pixels", "classes", 1.0)
    assert (value.name, value.kind, value.agreement) == ("value", "values", None) and value.snr_db > 80
    assert "pixels (classes): agreement 100.00%" in str(report) and "value (values): SNR" in str(report)
    assert [entry["kind"] for entry in read_metadata(report.path)["outputs"]] == ["classes", "values"]


def test_a_damaged_int8_file_is_refused_for_a_class_map_and_for_values(tmp_path):
    # Calibrated on inputs 100 times smaller than the ones it is compared on: every range saturates.
    model = _segmenter()
    x = np.random.default_rng(0).uniform(size=(12, 8, 8, 2)).astype("float32")
    damaged = dict(quantization="int8", representative_data=x / 100, verify_with=x)
    with pytest.raises(ValueError, match=r"top-1 class in output 'pixels' at every position of only"):
        export(model, tmp_path / "seg.tflite", **damaged)
    with pytest.raises(ValueError, match=r"output 'value' differs from the Keras model's: SNR .* \(min_snr=20"):
        export(model, tmp_path / "seg.tflite", min_agreement=None, **damaged)
    assert not os.path.exists(tmp_path / "seg.tflite")
    report = export(model, tmp_path / "seg.tflite", min_agreement=None, min_snr=None, **damaged)
    assert report.outputs[0].agreement < 0.95 and report.snr_db < 20


def test_output_kinds_says_what_the_shape_does_not(tmp_path):
    model = _segmenter()
    x = np.random.default_rng(0).uniform(size=(8, 8, 8, 2)).astype("float32")
    report = export(model, tmp_path / "seg.tflite", verify_with=x, output_kinds={"pixels": "values"})
    assert [output.kind for output in report.outputs] == ["values", "values"]
    assert verify(model, report.path, x).outputs[0].kind == "values"  # the kinds the file records
    with pytest.raises(ValueError, match=r"output_kinds names outputs the model does not have: \['nope'\]"):
        export(model, tmp_path / "seg.tflite", verify_with=x, output_kinds={"nope": "values"})
    with pytest.raises(ValueError, match=r"output_kinds must be a dict .*Received: output_kinds=\{'pixels': 'pixel'\}"):
        export(model, tmp_path / "seg.tflite", output_kinds={"pixels": "pixel"})
    with pytest.raises(ValueError, match=r"min_snr must be None or a number of dB.*Received: min_snr=nan"):
        export(model, tmp_path / "seg.tflite", min_snr=float("nan"))


def _dense():
    return keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3, name="y")])


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "real" / "model.tflite"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.tflite"
    link.symlink_to(target)
    export(_dense(), link, num_random_examples=4)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert inspect(target).operators == {"FULLY_CONNECTED": 1}
    assert sorted(os.listdir(target.parent)) == ["model.tflite"]  # no temporary file left beside it


def test_paths_that_are_not_regular_files_or_not_writable_are_refused_before_converting(tmp_path, monkeypatch):
    from tflite_export import _convert

    monkeypatch.setattr(_convert, "convert", lambda *a, **k: pytest.fail("converted before the path was checked"))
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe.tflite: it is a FIFO, not a regular file"):
        export(_dense(), fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ValueError, match=r"path must name the .tflite file to write. Received: path=''"):
        export(_dense(), "")
    with pytest.raises(IsADirectoryError):
        export(_dense(), tmp_path)
    with pytest.raises(OSError, match=r"Cannot write the .tflite file to /proc/model.tflite"):
        export(_dense(), "/proc/model.tflite")  # refuses new files even to root


def test_missing_parent_directories_are_created(tmp_path):
    report = export(_dense(), tmp_path / "a" / "b" / "model.tflite", num_random_examples=4)
    assert os.path.isfile(report.path)


def test_an_int8_lstm_that_crashes_the_converter_is_an_error_and_the_process_goes_on(tmp_path):
    # Sequences of unknown length: export cannot unroll the loop, whose calibration crashes TensorFlow 2.21.
    model = keras.Sequential([keras.Input((None, 3), name="frames"), keras.layers.LSTM(4), keras.layers.Dense(2)])
    x = np.random.default_rng(0).uniform(size=(20, 6, 3)).astype("float32")
    crash = r"crashed \(SIGSEGV\) while calibrating int8 ranges.*\['LSTM'\].*unroll=True"
    with pytest.raises(ConverterCrashed, match=crash):
        export(model, tmp_path / "lstm.tflite", quantization="int8", representative_data=x)
    assert not os.path.exists(tmp_path / "lstm.tflite")
    assert export(model, tmp_path / "lstm.tflite", verify_with=x).top1_agreement == 1.0  # a new worker


@pytest.mark.parametrize("recurrent", [
    lambda: keras.layers.LSTM(16),
    lambda: keras.layers.GRU(16, return_sequences=True),  # a class per step
    lambda: keras.layers.Bidirectional(keras.layers.SimpleRNN(8)),
], ids=["lstm", "gru_sequences", "bidirectional_simple_rnn"])
def test_recurrent_layers_of_known_length_export_int8_unrolled_and_verified(tmp_path, recurrent):
    model = keras.Sequential([keras.Input((20, 8), name="frames"), recurrent(), keras.layers.Dense(3, name="out")])
    x = np.random.default_rng(0).normal(size=(400, 20, 8)).astype("float32")
    # A task learnt (the signs of two running sums), so the classes are decided, not the near ties of random weights.
    labels = (x[:, :, 0].cumsum(1) > 0).astype("int32") + (x[:, :, 1].cumsum(1) > 0)
    labels = labels if len(model.compute_output_shape((None, 20, 8))) == 3 else labels[:, -1]
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[200:], labels[200:], epochs=4, batch_size=32, verbose=0)
    report = export(model, tmp_path / "rnn.tflite", verify_with=x[:200], quantization="int8",
                    representative_data=x[200:])
    assert report.top1_agreement >= 0.95 and "WHILE" not in report.operators and report.builtin_only
    assert not getattr(model.layers[0], "unroll", False)  # the user's layer is left as it was


_SEEDS = range(25)


@pytest.mark.tensorflow_backend("25 models; the JAX path runs 3 of them in test_generated_models_on_every_backend")
@pytest.mark.parametrize("seed", _SEEDS)
def test_generated_models_export_verify_and_predict_like_keras(tmp_path, seed):
    _check_generated(tmp_path, seed, int8=seed % 3 == 0)


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_generated_models_on_every_backend(tmp_path, seed):
    _check_generated(tmp_path, seed, int8=True)


def _check_generated(tmp_path, seed, int8):
    model, descriptions = generated_model(seed)
    x = examples(model, descriptions, 16, seed)
    report = export(model, tmp_path / "float.tflite", verify_with=x)
    assert [output.name for output in report.outputs] == model.output_names
    assert all(output.agreement == 1.0 or output.snr_db > 60 for output in report.outputs), report
    expected = _as_list(model.predict(x, verbose=0))
    by_name = {tensor.name: entry for tensor, entry in zip(model.inputs, x)}
    for got in (_as_list(predict(report.path, x)), _as_list(predict(report.path, by_name))):
        for want, out in zip(expected, got):
            np.testing.assert_allclose(out.reshape(want.shape), want, rtol=1e-4, atol=1e-4)
    if int8:
        quantized = export(model, tmp_path / "int8.tflite", verify_with=x, quantization="int8",
                           representative_data=x, min_agreement=None, min_snr=None)
        assert len(quantized.outputs) == len(model.outputs)
        assert all((o.agreement is not None) if o.kind == "classes" else np.isfinite(o.snr_db)
                   for o in quantized.outputs), quantized


def test_an_int8_export_prints_no_deprecation_of_tensorflows_interpreter(tmp_path, capfd):
    # The quantization debugger behind float_layers builds a tf.lite.Interpreter, which warns; it runs in
    # the worker process, whose output the user does not see.
    model = keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(8, name="hidden"),
                              keras.layers.Dense(3, name="out")])
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(model, tmp_path / "m.tflite", quantization="int8", representative_data=x, float_layers=["hidden"],
               min_agreement=None)
    said = capfd.readouterr()
    assert not [w for w in caught if "Interpreter is deprecated" in str(w.message)]
    assert "Interpreter is deprecated" not in said.out + said.err
