"""The text model builders: trainers (LSTM, bag of n-grams) and deployables (SGNN, multi-view, sequence)."""

import pathlib
import shutil
import subprocess
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact
from conftest import needs_shared_data
from keras_compact import ProjectionNet
from keras_compact.layers import TextFeaturizer, TextViews, TokenBuckets
from keras_compact.models import bag_of_ngrams, lstm_trainer, projection_network, sequence_network
from tflite_export import export, predict

pytestmark = pytest.mark.tensorflow_backend("strings and ragged ids are TensorFlow tensors")

JAVA_SOURCES = pathlib.Path(__file__).resolve().parents[1] / "tutorials" / "android" / "featurizer" / "src"
GUAVA = "/usr/share/java/guava.jar" if pathlib.Path("/usr/share/java/guava.jar").is_file() else None
SENTENCES = ["play some jazz by miles davis", "what is the weather in paris tomorrow", "", "Book a table, for 2!"]


def _views():
    return TextViews(
        {
            "words": TextFeaturizer(ngrams=2),
            "chars": TextFeaturizer(ngrams=0, char_ngrams=(3, 5)),
            "tokens": TokenBuckets(512, 12),
        }
    )


def _snips(count):
    (x_train, y_train), (x_test, y_test) = keras_compact.datasets.load("snips", needs_shared_data("snips"))
    return (x_train[:count], y_train[:count]), (x_test, y_test)


def _batches(views, x, y):
    data = tf.data.Dataset.from_tensor_slices((x.astype(str), y)).shuffle(len(x), seed=0).batch(64)
    return data.map(lambda s, label: (views(s), label))


def test_builders_name_their_inputs_after_the_views():
    assert [t.name for t in lstm_trainer(3, view="words").inputs] == ["words_ids", "words_weights"]
    assert [t.name for t in bag_of_ngrams(3).inputs] == ["ids", "weights"]
    sgnn = projection_network(3, 8, 4, hidden_units=(16, 8), dropout=0.1, views=("words", "chars"))
    assert [t.name for t in sgnn.inputs] == ["words_ids", "words_weights", "chars_ids", "chars_weights"]
    assert sgnn.output_shape == (None, 3)
    assert [type(layer).__name__ for layer in sgnn.layers].count("ProjectionLayer") == 2
    sequence = sequence_network(3, num_buckets=512, max_length=12)
    assert [t.name for t in sequence.inputs] == ["tokens"] and sequence.output_shape == (None, 3)


@pytest.mark.parametrize("build", [lambda: lstm_trainer(3, num_buckets=64, view="words"), lambda: bag_of_ngrams(3, num_buckets=64)])
def test_trainers_save_and_load(build, tmp_path):
    model = build()
    for weight in model.weights:
        weight.assign(np.random.default_rng(0).normal(size=weight.shape).astype("float32") * 0.1)
    features = TextFeaturizer(ngrams=2)(tf.constant(SENTENCES))
    inputs = dict(zip([t.name for t in model.inputs], features))
    model.save(tmp_path / "trainer.keras")
    loaded = keras.models.load_model(tmp_path / "trainer.keras")
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


def test_multi_view_projections_have_distinct_seeds_and_concatenate_their_bits():
    model = projection_network(3, 8, 4, views=("words", "chars", "skip_grams"), seed=5)
    layers = [layer for layer in model.layers if isinstance(layer, keras_compact.ProjectionLayer)]
    assert [layer.seed for layer in layers] == [5, 6, 7]
    assert model.get_layer("bits").output.shape == (None, 3 * 8 * 4)


def test_bag_of_ngrams_is_logistic_regression_with_a_bias():
    model = bag_of_ngrams(3, num_buckets=16, max_length=4, l2=0.0)
    table = np.zeros((18, 3), "float32")
    table[1 + 5 % 16] = [1.0, 0.0, 0.0]  # id 5
    table[17] = [0.0, 0.5, 0.0]  # the bias row
    model.get_layer("weights_per_bucket").set_weights([table])
    ids = tf.ragged.constant([[5, 5], []], dtype=tf.int64)
    weights = tf.ragged.constant([[2.0, 1.0], []])
    logits = np.array([[3.0, 0.5, 0.0], [0.0, 0.5, 0.0]])
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(model([ids, weights]), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_units=(256, 0)), r"hidden_units must be a sequence of positive integers.*\(256, 0\)"),
        (dict(hidden_units=256), "Received: hidden_units=256"),
        (dict(hidden_units=(2.5,)), r"Received: hidden_units=\(2.5,\)"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\). Received: dropout=1.0"),
        (dict(dropout=float("nan")), "Received: dropout=nan"),
        (dict(views=("words", "words")), "distinct view names"),
        (dict(views=("words", "my-view")), "Python identifier.*'my-view'"),
        (dict(views=[]), "non-empty"),
        (dict(num_bits=33), "num_bits must be an integer from 1 to 32. Received: num_bits=33"),
        (dict(num_hashes=np.int64(0)), "num_hashes must be an integer >= 1"),
    ],
)
def test_projection_network_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        projection_network(3, **kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: sequence_network(3, max_length=0), "max_length must be an integer >= 1. Received: max_length=0"),
        (lambda: sequence_network(3, dropout=-0.1), "dropout=-0.1"),
        (lambda: bag_of_ngrams(3, l2=-1), "l2 must be a number >= 0. Received: l2=-1"),
        (lambda: lstm_trainer(0), "num_classes must be an integer >= 1. Received: num_classes=0"),
        (lambda: TextViews(("words", "sentences")), r"Unknown view name\(s\) \['sentences'\]. Built-in views are"),
        (lambda: TextViews("words"), "views must be a non-empty list"),
        (lambda: TextViews({"words": "ngrams"}), "View 'words' must be a TextFeaturizer"),
        (lambda: TextFeaturizer(ngrams=0), "needs at least one kind of feature"),
        (lambda: TokenBuckets(0, 8), "num_buckets must be an integer >= 1. Received: num_buckets=0"),
    ],
)
def test_other_builders_reject_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_text_views_feed_each_network_the_inputs_it_names():
    features = _views()(tf.constant(SENTENCES))
    assert sorted(features) == ["chars_ids", "chars_weights", "tokens", "words_ids", "words_weights"]
    words, _ = TextFeaturizer(ngrams=2)(tf.constant(SENTENCES))
    assert features["words_ids"].to_list() == words.to_list()
    np.testing.assert_array_equal(features["tokens"], TokenBuckets(512, 12)(tf.constant(SENTENCES)))
    # Token i is the bucket of the unigram feature "w:<token i>".
    unigrams, _ = TextFeaturizer(ngrams=1)(tf.constant(SENTENCES[:1]))
    np.testing.assert_array_equal(features["tokens"][0, :6], 1 + np.mod(unigrams.flat_values.numpy(), 512))


@pytest.mark.parametrize("student", ["sgnn", "sequence"])
def test_text_models_save_load_and_train_jointly_from_one_views_dict(student, tmp_path):
    views = _views()
    x = np.array(SENTENCES * 8)
    y = np.arange(len(x)) % 3
    model = (
        projection_network(3, 8, 4, hidden_units=(16,), dropout=0.2, views=("words", "chars"))
        if student == "sgnn"
        else sequence_network(3, num_buckets=512, max_length=12, units=8)
    )
    net = ProjectionNet(bag_of_ngrams(3, num_buckets=256, view="words"), model)
    net.compile(keras.optimizers.Adam(1e-2))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*structure of `inputs`")
        history = net.fit(_batches(views, x, y), epochs=3, verbose=0)
    assert history.history["projection_loss"][-1] < history.history["projection_loss"][0]
    features = views(tf.constant(SENTENCES))
    path = tmp_path / "model.keras"
    model.save(path)
    inputs = {t.name: features[t.name] for t in model.inputs}
    inputs = inputs if len(inputs) > 1 else inputs["tokens"]
    np.testing.assert_allclose(keras.models.load_model(path).predict(inputs, verbose=0), net.predict(features, verbose=0), atol=1e-6)
    views_path = tmp_path / "views.keras"
    keras.Sequential([keras.Input((), dtype="string"), views]).save(views_path)
    reloaded = keras.models.load_model(views_path).layers[-1]
    assert reloaded.get_config() == views.get_config()


@pytest.mark.parametrize("quantization", [None, "int8"])
@pytest.mark.parametrize("student", ["sgnn", "sequence"])
def test_text_models_export_builtin_only_and_agree_in_litert(student, quantization, tmp_path):
    (x_train, y_train), (x_test, _) = _snips(1500)
    views = _views()
    model = (
        projection_network(8, 40, 12, hidden_units=(64,), dropout=0.1, views=("words", "chars"))
        if student == "sgnn"
        else sequence_network(8, num_buckets=512, max_length=12, units=16)
    )
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    names = [t.name for t in model.inputs]
    pick = lambda f, label: ({n: f[n] for n in names} if len(names) > 1 else f[names[0]], label)  # noqa: E731
    model.fit(_batches(views, x_train, y_train).map(pick), epochs=2, verbose=0)
    features = views(tf.constant(x_test[:200].astype(str)))
    options = dict(quantization="int8", representative_data=views(tf.constant(x_train[:200].astype(str)))) if quantization else {}
    report = export(model, tmp_path / "intents.tflite", verify_with=features, **options)
    assert report.builtin_only
    # The file orders its inputs by name; an app looks them up by name (getInputIndex).
    assert sorted(name for name, _, _ in report.inputs) == sorted(names)
    if student == "sgnn":
        assert report.operators["LSH_PROJECTION"] == 2
        with pytest.raises(ValueError, match=r"examples is missing inputs \['chars_ids', 'chars_weights'\]"):
            predict(report.path, {"words_ids": features["words_ids"], "words_weights": features["words_weights"]})
    # int8 rounds the activations: a near tie can flip; float32 gives the Keras model's outputs.
    assert report.top1_agreement >= (0.97 if quantization else 1.0)
    if quantization is None:
        assert report.max_abs_diff < 1e-5
    if quantization:
        float32 = export(model, tmp_path / "float32.tflite", verify_with=features)
        assert report.bytes < float32.bytes


def test_bag_of_ngrams_and_multi_view_sgnn_learn_snips():
    (x_train, y_train), (x_test, y_test) = _snips(4000)
    views = _views()
    test = views(tf.constant(x_test.astype(str)))
    results = {}
    for name, model in [
        ("bag", bag_of_ngrams(8, view="words")),
        ("sgnn", projection_network(8, 60, 12, hidden_units=(128,), dropout=0.2, views=("words", "chars"))),
    ]:
        keras.utils.set_random_seed(0)
        model.compile(keras.optimizers.Adam(3e-3 if name == "bag" else 1e-3), "sparse_categorical_crossentropy")
        names = [t.name for t in model.inputs]
        data = _batches(views, x_train, y_train).map(lambda f, label, n=names: ({k: f[k] for k in n}, label))
        model.fit(data, epochs=3, verbose=0)
        results[name] = np.mean(model.predict({k: test[k] for k in names}, verbose=0).argmax(-1) == y_test)
    # Measured with these settings: bag 0.961, sgnn 0.949 (4,000 of 13,084 sentences, 3 epochs).
    assert results["bag"] > 0.93 and results["sgnn"] > 0.90, results


# The issue asks for this check wherever javac and Guava exist (the development machines have
# Debian's libguava-java); a machine without a JDK cannot run the Java featurizer at all.
@pytest.mark.skipif(shutil.which("javac") is None or GUAVA is None, reason="javac and Guava (libguava-java) not installed")
def test_java_featurizer_and_tflite_give_the_keras_prediction_on_100_snips_sentences(tmp_path):
    (x_train, y_train), (x_test, _) = _snips(1500)
    sentences = [str(s) for s in x_test[:100]]
    views = _views()
    sgnn = projection_network(8, 40, 12, hidden_units=(32,), views=("words", "chars"))
    sequence = sequence_network(8, num_buckets=512, max_length=12, units=16)
    keras.utils.set_random_seed(0)
    for model in (sgnn, sequence):
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        names = [t.name for t in model.inputs]
        model.fit(_batches(views, x_train, y_train).map(lambda f, label, n=names: ({k: f[k] for k in n}, label)), epochs=1, verbose=0)
    keras_features = views(tf.constant(sentences))

    classes = tmp_path / "classes"
    sources = sorted(str(p) for p in (JAVA_SOURCES / "com" / "kerascompact").glob("*.java"))
    subprocess.run(["javac", "-cp", GUAVA, "-d", str(classes), *sources], check=True, capture_output=True)

    def java(*arguments):
        result = subprocess.run(
            ["java", "-cp", f"{GUAVA}:{classes}", "com.kerascompact.FeaturizerMain", *arguments],
            input="".join(s.encode().hex() + "\n" for s in sentences), capture_output=True, text=True, check=True,
        )
        return result.stdout.split("\n")[: len(sentences)]

    def ragged(lines):
        pairs = [[pair.split(":") for pair in line.split()] for line in lines]
        ids = tf.ragged.constant([[int(i) for i, _ in row] for row in pairs], dtype=tf.int64, ragged_rank=1)
        weights = tf.ragged.constant([[float(w) for _, w in row] for row in pairs], dtype=tf.float32, ragged_rank=1)
        return ids, weights

    java_features = {}
    java_features["words_ids"], java_features["words_weights"] = ragged(java("2", "0", "0", "0", "true", "0"))
    java_features["chars_ids"], java_features["chars_weights"] = ragged(java("0", "0", "3", "5", "true", "0"))
    java_features["tokens"] = np.array([[int(b) for b in line.split()] for line in java("tokens", "512", "12", "true")])
    for name, model in (("sgnn", sgnn), ("sequence", sequence)):
        report = export(model, tmp_path / f"{name}.tflite", verify_with=keras_features)
        names = [t.name for t in model.inputs]
        on_phone = predict(report.path, java_features)
        in_keras = model.predict({n: keras_features[n] for n in names}, verbose=0)
        np.testing.assert_array_equal(on_phone.argmax(-1), in_keras.argmax(-1), err_msg=name)
        np.testing.assert_allclose(on_phone, in_keras, atol=1e-5, err_msg=name)
