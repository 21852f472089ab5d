"""Issue 21: inputs that used to give a silent wrong result, or a crash deep inside
TensorFlow, LiteRT or NumPy, now give a clear error (or the right result)."""

import warnings

import keras
import numpy as np
import pytest

from tflite_export import _cli, export, predict, verify

export_here = pytest.mark.tensorflow_backend(
    "converts in this process; other backends convert in a TensorFlow subprocess, tested in test_backends.py"
)


def _diverged_model():
    """A trained-looking model whose first kernel went NaN (a diverged run)."""
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(hidden))
    model.get_layer("hidden").kernel.assign(np.full((6, 4), np.nan, "float32"))
    return model


def _token_model(dtype):
    inputs = keras.Input((8,), dtype=dtype, name="ids")
    embedded = keras.layers.Embedding(50, 4)(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))


_IDS = np.random.default_rng(0).integers(0, 50, (16, 8))


# 1. Non-finite outputs pass verification.
@export_here
def test_export_refuses_a_model_whose_outputs_are_nan_naming_the_weights(tmp_path):
    target = tmp_path / "diverged.tflite"
    with pytest.raises(ValueError, match=r"outputs are NaN or infinite for 64 of the 64 .*hidden/kernel.*"
                                         r"allow_non_finite=True"):
        export(_diverged_model(), target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@export_here
def test_allow_non_finite_writes_the_file_warns_and_counts(tmp_path):
    model = _diverged_model()
    with pytest.warns(UserWarning, match="NaN or infinite"):
        report = export(model, tmp_path / "diverged.tflite", allow_non_finite=True)
    assert report.non_finite_outputs == 64 and report.num_examples == 0
    assert report.top1_agreement is None and "64 with NaN/inf outputs left out" in str(report)
    with pytest.warns(UserWarning, match="file's outputs are NaN or infinite for 2 of 2"):
        assert np.isnan(predict(report.path, np.ones((2, 6), "float32"))).all()
    with pytest.warns(UserWarning, match="hidden/kernel"):
        verification = verify(model, report.path, np.ones((3, 6), "float32"))
    assert verification.non_finite_outputs == 3 and verification.top1_agreement is None


@export_here
def test_a_finite_model_predicts_without_a_warning(tmp_path):
    model = _token_model("int32")
    report = export(model, tmp_path / "ids.tflite", verify_with=_IDS)
    assert report.non_finite_outputs == 0 and report.top1_agreement == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(report.path, _IDS[:2])


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_allow_non_finite_must_be_a_bool(tmp_path, value):
    with pytest.raises(ValueError, match="allow_non_finite must be True or False"):
        export(_diverged_model(), tmp_path / "m.tflite", allow_non_finite=value)


@export_here
def test_command_line_refuses_nan_outputs_and_accepts_the_switch(tmp_path, capsys):
    _diverged_model().save(tmp_path / "diverged.keras")
    arguments = ["export", str(tmp_path / "diverged.keras"), "-o", str(tmp_path / "m.tflite")]
    assert _cli.main(arguments) == 2
    err = capsys.readouterr().err
    assert "Pass --allow-non-finite to write" in err and "allow_non_finite" not in err
    with pytest.warns(UserWarning, match="NaN or infinite"):
        assert _cli.main(arguments + ["--allow-non-finite"]) == 0
    assert (tmp_path / "m.tflite").exists()


def test_min_agreement_none_the_library_suggests_is_accepted_by_the_command_line():
    parsed = _cli._parser("keras-compact").parse_args(["export", "m.keras", "-o", "m.tflite", "--min-agreement", "none"])
    assert parsed.min_agreement is None


# 1. Inputs the file cannot represent are silently changed.
@export_here
@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_predict_refuses_fractional_and_out_of_range_token_ids(tmp_path, dtype):
    path = export(_token_model(dtype), tmp_path / "ids.tflite", verify_with=_IDS.astype(dtype)).path
    with pytest.raises(ValueError, match=r"input 'ids' must be whole numbers.*1\.7 would be truncated"):
        predict(path, np.full((1, 8), 1.7))
    with pytest.raises(ValueError, match=r"input 'ids' must be whole numbers"):
        predict(path, np.full((1, 8), np.nan))
    with pytest.raises(ValueError, match=r"embedding with 50 rows.*\[0, 50\).*Received: 60"):
        predict(path, np.full((1, 8), 60))
    with pytest.raises(ValueError, match=r"Received: -51"):
        predict(path, np.full((1, 8), -51))
    # Whole floats and ids counted from the end, as Keras's Embedding takes them, are fine.
    np.testing.assert_allclose(predict(path, np.full((1, 8), 3.0)), predict(path, np.full((1, 8), -47)), atol=1e-6)


@export_here
def test_export_and_verify_refuse_ids_the_model_cannot_take(tmp_path):
    model = _token_model("int32")
    with pytest.raises(ValueError, match=r"verify_with for input 'ids' must be whole numbers"):
        export(model, tmp_path / "a.tflite", verify_with=np.full((2, 8), 1.5))
    with pytest.raises(ValueError, match=r"verify_with for input 'ids' are token ids of an embedding with 50 rows"):
        export(model, tmp_path / "b.tflite", verify_with=np.full((2, 8), 50))
    assert list(tmp_path.iterdir()) == []
    path = export(model, tmp_path / "c.tflite", verify_with=_IDS).path
    with pytest.raises(ValueError, match=r"inputs for input 'ids' are token ids"):
        verify(model, path, np.full((2, 8), 99))
