"""Settings that became keyword-only still take their old positions, with a DeprecationWarning.

The public functions and constructors keep at most 6 positional parameters; the
rest are keyword-only (`keras_compact._checks.keyword_only`). A caller that passed
them by position, as the signatures before allowed, gets the same call and a
warning naming the keywords to write.
"""

import inspect
import warnings

import keras
import numpy as np
import pytest

import tflite_export
from tflite_export._demo import run_demo
from keras_compact import HadamardClassifier, ProjectionLayer, ProjectionNet
from keras_compact.layers import TextFeaturizer
from keras_compact.models import HSICBottleneck, lstm_trainer, projection_network, sequence_network
from keras_compact.pruning import prune

NARROWED = [  # (callable, positional parameters kept, first keyword-only parameter)
    (tflite_export.export, ["model", "path", "verify_with"], "num_random_examples"),
    (run_demo, ["data", "data_dir"], "num_hashes"),
    (prune, ["model", "sparsity", "granularity"], "scope"),
    (lstm_trainer, ["num_classes", "num_buckets", "max_length", "embedding_dim", "units"], "view"),
    (projection_network, ["num_classes", "num_hashes", "num_bits", "hidden_units", "dropout"], "views"),
    (sequence_network, ["num_classes", "num_buckets", "max_length", "embedding_dim", "units", "num_layers"],
     "kernel_size"),
    (ProjectionNet, ["trainer", "projection"], "trainer_loss_weight"),
    (HadamardClassifier, ["num_classes", "scale"], "normalize"),
    (TextFeaturizer, ["ngrams", "skip_grams", "char_ngrams"], "lowercase"),
    (HSICBottleneck.post_train, ["self", "x", "y"], "epochs"),
]


@pytest.mark.parametrize("function, positional, first_keyword", NARROWED,
                         ids=[entry[0].__qualname__ for entry in NARROWED])
def test_signatures_show_the_positional_parameters_and_then_the_keywords(function, positional, first_keyword):
    parameters = list(inspect.signature(function).parameters.values())
    kept = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert kept == positional and len(kept) <= 6 + (kept[:1] == ["self"])
    assert [p for p in parameters if p.kind is p.KEYWORD_ONLY][0].name == first_keyword


def _deprecated_call(make):
    with pytest.warns(DeprecationWarning) as record:
        result = make()
    messages = [str(w.message) for w in record if w.category is DeprecationWarning and "by position" in str(w.message)]
    assert len(messages) == 1, messages
    return result, messages[0]


def test_a_layer_s_settings_by_position_warn_and_mean_the_same():
    layer, message = _deprecated_call(lambda: HadamardClassifier(10, "learned", False, "orthogonal", True, 3))
    assert message == (
        "HadamardClassifier: passing normalize, matrix, use_bias, seed by position is deprecated (keyword-only "
        "now, with the same meaning). Pass them by name: normalize=False, matrix='orthogonal', use_bias=True, "
        "seed=3."
    )
    same = HadamardClassifier(10, "learned", normalize=False, matrix="orthogonal", use_bias=True, seed=3)
    assert layer.get_config() | {"name": None} == same.get_config() | {"name": None}
    featurizer, message = _deprecated_call(lambda: TextFeaturizer(1, 0, None, False, 100))
    assert "Pass them by name: lowercase=False, max_tokens=100." in message
    assert featurizer.lowercase is False and featurizer.max_tokens == 100


def test_a_layer_built_with_positional_settings_saves_and_reloads(tmp_path):
    layer, _ = _deprecated_call(lambda: HadamardClassifier(4, 2.0, False))
    model = keras.Sequential([keras.Input((8,)), layer])
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    model.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert reloaded.layers[-1].normalize is False
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_a_model_builder_s_settings_by_position_warn_and_build_the_same_model():
    model, message = _deprecated_call(lambda: sequence_network(3, 64, 8, 8, 8, 1, 3, 0.2, "ids"))
    assert "Pass them by name: kernel_size=3, dropout=0.2, view='ids'." in message
    same = sequence_network(3, 64, 8, 8, 8, 1, kernel_size=3, dropout=0.2, view="ids")
    assert [i.name for i in model.inputs] == [i.name for i in same.inputs] == ["ids"]
    strip = lambda config: {k: v for k, v in config.items() if k != "name"}  # noqa: E731
    assert [strip(layer.get_config()) for layer in model.layers] == [strip(layer.get_config()) for layer in same.layers]


def test_projection_net_loss_weights_by_position_warn_and_mean_the_same():
    def networks():
        trainer = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
        projection = keras.Sequential([keras.Input((6,)), ProjectionLayer(8, 4), keras.layers.Dense(3, activation="softmax")])
        return trainer, projection

    net, message = _deprecated_call(lambda: ProjectionNet(*networks(), 0.5, 0.2, 2.0))
    assert "trainer_loss_weight=0.5, distillation_loss_weight=0.2, projection_loss_weight=2.0" in message
    assert (net.trainer_loss_weight, net.distillation_loss_weight, net.projection_loss_weight) == (0.5, 0.2, 2.0)


def test_prune_settings_by_position_warn_and_prune_the_same():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    result, message = _deprecated_call(lambda: prune(model, 0.5, "weight", "layer"))
    assert "Pass them by name: scope='layer'." in message
    same = prune(model, 0.5, "weight", scope="layer")
    for a, b in zip(result.model.weights, same.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.tensorflow_backend("the keyword-only shim runs before export picks a backend's path; "
                                 "exporting from JAX is test_backends.py's")
def test_export_settings_by_position_warn_and_write_the_same_file(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    report, message = _deprecated_call(lambda: tflite_export.export(model, tmp_path / "a.tflite", None, 16, 7))
    assert "Pass them by name: num_random_examples=16, seed=7." in message
    same = tflite_export.export(model, tmp_path / "b.tflite", None, num_random_examples=16, seed=7)
    assert report.num_examples == same.num_examples == 16
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()


def test_a_large_value_by_position_is_not_printed_in_the_warning():
    data = np.random.default_rng(0).normal(size=(100, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    with pytest.warns(DeprecationWarning, match=r"Pass them by name: scope=None, layers=None, criterion='onorm', "
                                                r"data=\.\.\.\.") as record:
        prune(model, 0.5, "unit", None, None, "onorm", data)
    assert not any("0." in str(w.message) for w in record if "by position" in str(w.message))


def test_too_many_positional_arguments_and_a_value_given_twice_are_type_errors():
    with pytest.raises(TypeError, match=r"HadamardClassifier\(\) takes at most 7 arguments by position \(the last "
                                        r"5 deprecated\), but 8 were given"):
        HadamardClassifier(10, "learned", True, "hadamard", False, None, "auto", 5)
    with pytest.raises(TypeError, match=r"projection_network\(\) got multiple values for argument 'views'"):
        projection_network(3, 8, 4, (), 0.0, "words", views="words")
