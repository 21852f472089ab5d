"""Export in the user's idioms: every exportable layer in every model form, saved and reloaded, and the CLI.

A new exportable layer joins `EXPORTABLE`.
"""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from contract import build_models
from keras_compact import HadamardClassifier, ProjectionLayer, ProjectionNet, TargetedDropout
from keras_compact.pruning import PruningMask, prune
from test_contract import LAYER_CASES
from tflite_export import _cli, export, predict

pytestmark = pytest.mark.tensorflow_backend("exports every model form in this process; other backends' export is tested in test_backends.py")

_CASES = {case.name: case for case in LAYER_CASES}


def _softmax_head(units=4):
    return keras.layers.Dense(units, activation="softmax")


def _embedded_head():
    return [keras.layers.Embedding(8 * 2**6, 3), keras.layers.Flatten(), _softmax_head()]


# name -> (layer case, the fresh layers each model form chains)
EXPORTABLE = {
    "projection_bits": lambda case: [case.make(), _softmax_head()],
    "projection_signatures": lambda case: [case.make()] + _embedded_head(),
    "projection_ragged": lambda case: [case.make(), _softmax_head()],
    "hadamard": lambda case: [keras.layers.Dense(32, activation="relu"), case.make()],
    "hadamard_orthogonal_bias": lambda case: [case.make()],
    "targeted_dropout": lambda case: [case.make(), _softmax_head()],
    "targeted_dropout_conv_units": lambda case: [case.make(), keras.layers.Flatten(), _softmax_head()],
    "pruning_mask": lambda case: [case.make(), _softmax_head()],
    "pruning_mask_of_targeted_dropout_units": lambda case: [case.make(), _softmax_head()],
}


def _forms(name, tmp_path):
    """`{form: model}`: from a list, with .add(), functional, and each saved and reloaded."""
    case = _CASES[name]
    models = build_models(case, lambda: EXPORTABLE[name](case))
    for form in list(models):
        path = tmp_path / f"{form}.keras"
        models[form].save(path)
        models[f"saved {form}"] = keras.models.load_model(path)
    return case, models


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_every_model_form_exports_and_agrees_in_litert(name, tmp_path):
    case, models = _forms(name, tmp_path)
    data = case.data()
    expected = None
    for form, model in models.items():
        report = export(model, tmp_path / f"{form}.tflite", verify_with=data, min_agreement=1.0)
        assert report.builtin_only and report.top1_agreement == 1.0, (form, report)
        got = predict(report.path, data)
        expected = got if expected is None else expected
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=form)
        if name.startswith("projection"):
            assert report.operators["LSH_PROJECTION"] == 1, form
    assert set(models) >= {"functional", "saved functional"}


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_cli_exports_the_saved_model(name, tmp_path, capsys):
    case, models = _forms(name, tmp_path)
    form = "with_add" if case.sequential else "functional"
    code = _cli.main(["export", str(tmp_path / f"{form}.keras"), "-o", str(tmp_path / "cli.tflite")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "builtin only" in captured.out and "top-1 agreement" in captured.out


def test_export_leaves_the_users_model_untouched(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    model = keras.Sequential([keras.Input((64,)), TargetedDropout(keras.layers.Dense(32, activation="relu"), 0.5, 0.5),
                              HadamardClassifier(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train[:128], y_train[:128], epochs=1, verbose=0)
    pruned = prune(model, 0.75).model
    before = [w.copy() for w in pruned.get_weights()]
    classifier = pruned.layers[-1]
    settings = (classifier.implementation, classifier.transform_radix)
    export(pruned, tmp_path / "m.tflite", verify_with=x_test[:50])
    export(pruned, tmp_path / "m.tflite", verify_with=x_test[:50], projection_lowering="matrix")
    for a, b in zip(before, pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (classifier.implementation, classifier.transform_radix) == settings
    assert "call" not in vars(classifier)
    assert any(isinstance(layer, PruningMask) for layer in pruned.layers)


def test_matrix_lowering_does_not_touch_the_projection_layer(tmp_path):
    model = keras.Sequential([keras.Input((16,)), ProjectionLayer(4, 4), _softmax_head()])
    layer = model.layers[0]
    export(model, tmp_path / "m.tflite", projection_lowering="matrix", num_random_examples=16)
    assert "call" not in vars(layer)


def test_projection_in_a_nested_model_is_lowered(tmp_path):
    inner = keras.Sequential([keras.Input((16,)), ProjectionLayer(6, 4)], name="inner")
    inputs = keras.Input((16,), name="features")
    model = keras.Model(inputs, _softmax_head()(inner(inputs)))
    report = export(model, tmp_path / "nested.tflite", num_random_examples=50)
    assert report.operators["LSH_PROJECTION"] == 1 and report.top1_agreement == 1.0


def test_projection_inside_a_subclassed_layer_is_named_in_the_error(tmp_path):
    class Featurizer(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.projection = ProjectionLayer(4, 4)

        def call(self, x):
            return self.projection(x)

    inputs = keras.Input((16,))
    model = keras.Model(inputs, _softmax_head()(Featurizer(name="featurizer")(inputs)))
    with pytest.raises(ValueError, match=r"inside 'featurizer' \(Featurizer\), a subclassed layer or model"):
        export(model, tmp_path / "x.tflite")
    assert not list(tmp_path.iterdir())


def test_subclassed_model_without_inputs_gets_a_clear_error_and_a_functional_wrapper_exports(tmp_path):
    class Classifier(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.out = HadamardClassifier(4)

        def call(self, x):
            return self.out(self.hidden(x))

    model = Classifier()
    model(np.zeros((1, 16), "float32"))
    with pytest.raises(ValueError, match=r"has no known inputs.*keras.Model\(inputs, model\(inputs\)\)"):
        export(model, tmp_path / "x.tflite")
    inputs = keras.Input((16,))
    report = export(keras.Model(inputs, model(inputs)), tmp_path / "wrapped.tflite", num_random_examples=20)
    assert report.builtin_only and report.top1_agreement == 1.0


def test_projection_net_saved_exports_from_python_and_the_cli(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    projection = keras.Sequential()
    projection.add(keras.Input((64,), name="pixels"))
    projection.add(ProjectionLayer(10, 8))
    projection.add(keras.layers.Dense(10))
    net = ProjectionNet(trainer, projection)
    net.compile(optimizer="adam")
    net.fit(x_train[:256], y_train[:256], epochs=1, verbose=0)
    net.save(tmp_path / "net.keras")
    reloaded = keras.models.load_model(tmp_path / "net.keras")
    report = export(reloaded, tmp_path / "net.tflite", verify_with=x_test)
    assert report.operators["LSH_PROJECTION"] == 1 and report.top1_agreement == 1.0
    assert report.inputs == [("pixels", "float32", (64,))]
    np.save(tmp_path / "verify.npy", x_test[:40])
    np.savez(tmp_path / "verify.npz", pixels=x_test[:40])
    executable = shutil.which("keras-compact")
    command = [executable] if executable else [sys.executable, "-m", "tflite_export"]
    result = subprocess.run(
        command + ["export", str(tmp_path / "net.keras"), "-o", str(tmp_path / "cli.tflite"),
                   "--verify", str(tmp_path / "verify.npz")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LSH_PROJECTION x1" in result.stdout and "top-1 agreement 100.00%" in result.stdout


def test_unnamed_input_is_called_input_in_the_file(tmp_path):
    model = keras.Sequential([keras.Input((16,)), _softmax_head()])
    report = export(model, tmp_path / "m.tflite", num_random_examples=4)
    assert report.inputs == [("input", "float32", (1, 16))]
