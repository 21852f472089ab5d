import pathlib
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import ProjectionLayer, TextFeaturizer
from keras_compact.layers import FeatureBuckets, TokenBuckets
from keras_compact.models import lstm_trainer

pytestmark = pytest.mark.tensorflow_backend("strings and ragged ids are TensorFlow tensors")

JAVA_SOURCES = pathlib.Path(__file__).resolve().parents[1] / "tutorials" / "android" / "featurizer" / "src"
GUAVA = next(
    (path for path in ("/usr/share/java/guava.jar",) if pathlib.Path(path).is_file()),
    None,
)

SENTENCES = [
    "Hello, World!",
    "play the song  by   Queen\ton spotify",
    "book a table for 2 at 7:30pm; it's urgent!!",
    "Café naïve ÀÉÎ résumé",  # non-ASCII upper case stays as it is
    "東京 の 天気 は ？",  # CJK, fullwidth punctuation is not a separator
    "emoji 🙂 and 👍🏽 too",  # astral code points in character n-grams
    "",
    "   ",
    "!!!...???",
    "x",
    "a-b_c.d/e",
    " ".join(f"word{i}" for i in range(3000)),  # very long
]


def _fingerprint(strings):
    """Fingerprint64 of each string's UTF-8 bytes, through tf.fingerprint directly."""
    return tf.bitcast(tf.fingerprint(tf.constant([s.encode() for s in strings])), tf.int64).numpy().tolist()


def _ids(featurizer, sentences):
    ids, weights = featurizer(tf.constant(sentences))
    return ids.to_list(), weights.to_list()


def test_spec_vectors_word_ngrams():
    ids, weights = _ids(TextFeaturizer(ngrams=2), ["Hello, World!"])
    assert ids == [_fingerprint(["w:hello", "w:world", "w:hello world"])]
    assert weights == [[1.0, 1.0, 1.0]]


def test_spec_vectors_skip_and_character_ngrams_with_weights():
    featurizer = TextFeaturizer(
        ngrams=1, skip_grams=1, char_ngrams=(3, 3), word_weights=[2.0], skip_weight=0.5, char_weight=0.25
    )
    ids, weights = _ids(featurizer, ["A b? Cd"])
    expected = ["w:a", "w:b", "w:cd", "s:a cd", "c:<a>", "c:<b>", "c:<cd", "c:cd>"]
    assert ids == [_fingerprint(expected)]
    assert weights == [[2.0, 2.0, 2.0, 0.5, 0.25, 0.25, 0.25, 0.25]]


def test_spec_vectors_without_word_ngrams():
    ids, _ = _ids(TextFeaturizer(ngrams=0, skip_grams=1, char_ngrams=(4, 4)), ["A b? Cd"])
    assert ids == [_fingerprint(["s:a cd", "c:<cd>"])]


def test_spec_vectors_unicode_is_kept_and_only_ascii_is_lowered():
    strings, _ = TextFeaturizer(ngrams=1, char_ngrams=(2, 2)).features(tf.constant(["ÉTÉ 🙂"]))
    assert [s.decode() for s in strings.to_list()[0]] == [
        "w:ÉtÉ", "w:🙂", "c:<É", "c:Ét", "c:tÉ", "c:É>", "c:<🙂", "c:🙂>",
    ]


def test_featurizer_is_deterministic_and_needs_no_state():
    first = _ids(TextFeaturizer(ngrams=3, skip_grams=2, char_ngrams=(2, 4)), SENTENCES)
    second = _ids(TextFeaturizer.from_config(TextFeaturizer(ngrams=3, skip_grams=2, char_ngrams=(2, 4)).get_config()), SENTENCES)
    assert first == second
    assert TextFeaturizer().weights == []


def test_empty_and_separator_only_sentences_have_no_features():
    ids, _ = _ids(TextFeaturizer(skip_grams=1, char_ngrams=(1, 3)), ["", "   ", "!!!...???", "\t\n"])
    assert ids == [[], [], [], []]


def test_very_long_sentences_are_featurized_or_truncated_by_max_tokens():
    long = " ".join(f"w{i}" for i in range(20000))
    ids, _ = _ids(TextFeaturizer(ngrams=2), [long])
    assert len(ids[0]) == 20000 + 19999
    short, _ = _ids(TextFeaturizer(ngrams=2, max_tokens=10), [long])
    assert len(short[0]) == 10 + 9 and short[0][:10] == ids[0][:10]


def test_invalid_utf8_bytes_become_replacement_characters():
    strings, _ = TextFeaturizer(ngrams=1).features(tf.constant([b"ab\xff\xfecd x\xe2\x82"]))
    assert [s.decode() for s in strings.to_list()[0]] == ["w:ab\ufffd\ufffdcd", "w:x\ufffd"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ngrams=-1), "ngrams must be an integer >= 0. Received: ngrams=-1"),
        (dict(ngrams=0), "needs at least one kind of feature"),
        (dict(skip_grams=-1), "skip_grams=-1"),
        (dict(char_ngrams=(3, 2)), "char_ngrams=(3, 2)"),
        (dict(char_ngrams=3), "char_ngrams=3"),
        (dict(max_tokens=0), "max_tokens=0"),
        (dict(ngrams=2, word_weights=[1.0]), "word_weights must be None or 2 positive numbers"),
        (dict(char_weight=0), "char_weight=0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        TextFeaturizer(**kwargs)
    assert message in str(error.value)


def test_non_string_input_is_rejected():
    with pytest.raises(ValueError, match="expects a string tensor. Received: dtype=float32"):
        TextFeaturizer()(tf.constant([1.0]))


def test_ids_feed_a_projection_layer_in_a_model():
    sentences = keras.Input(shape=(), dtype="string", name="sentence")
    ids, weights = TextFeaturizer(ngrams=2)(sentences)
    bits = ProjectionLayer(8, 6)([ids, weights])
    model = keras.Model(sentences, keras.layers.Dense(3, activation="softmax")(bits))
    out = model(tf.constant(["turn on the lights", "", "what's the weather"]))
    assert out.shape == (3, 3) and np.all(np.isfinite(out))


# The issue asks for this parity check wherever javac and Guava exist (they do on the
# development machines, Debian's libguava-java); a machine without a JDK cannot run it.
@pytest.mark.skipif(shutil.which("javac") is None or GUAVA is None, reason="javac and Guava (libguava-java) not installed")
@pytest.mark.parametrize(
    "kwargs, arguments",
    [
        (dict(ngrams=2), ["2", "0", "0", "0", "true", "0"]),
        (dict(ngrams=3, skip_grams=2, char_ngrams=(2, 4)), ["3", "2", "2", "4", "true", "0"]),
        (dict(ngrams=1, char_ngrams=(1, 1), lowercase=False, max_tokens=5), ["1", "0", "1", "1", "false", "5"]),
        (dict(ngrams=0, skip_grams=2), ["0", "2", "0", "0", "true", "0"]),
        (dict(ngrams=0, char_ngrams=(3, 5)), ["0", "0", "3", "5", "true", "0"]),
    ],
)
def test_java_featurizer_gives_the_same_ids_and_weights(tmp_path, kwargs, arguments):
    classes = tmp_path / "classes"
    sources = sorted(str(p) for p in (JAVA_SOURCES / "com" / "kerascompact").glob("*.java"))
    subprocess.run(["javac", "-cp", GUAVA, "-d", str(classes), *sources], check=True, capture_output=True)
    payload = [s.encode() for s in SENTENCES] + [b"ab\xff\xfecd", b"x\xe2\x82y", b"\xc3("]
    result = subprocess.run(
        ["java", "-cp", f"{GUAVA}:{classes}", "com.kerascompact.FeaturizerMain", *arguments],
        input="".join(p.hex() + "\n" for p in payload),
        capture_output=True,
        text=True,
        check=True,
    )
    java = [
        [(int(pair.split(":")[0]), float(pair.split(":")[1])) for pair in line.split()]
        for line in result.stdout.split("\n")[: len(payload)]
    ]
    ids, weights = TextFeaturizer(**kwargs)(tf.constant(payload))
    python = [list(zip(i, w)) for i, w in zip(ids.to_list(), weights.to_list())]
    assert len(java) == len(python)
    for sentence, got, expected in zip(payload, java, python):
        assert got == expected, sentence[:80]


# As above: the Java twin runs only where a JDK and Guava are installed.
@pytest.mark.skipif(shutil.which("javac") is None or GUAVA is None, reason="javac and Guava (libguava-java) not installed")
def test_java_token_buckets_match_the_layer(tmp_path):
    classes = tmp_path / "classes"
    sources = sorted(str(p) for p in (JAVA_SOURCES / "com" / "kerascompact").glob("*.java"))
    subprocess.run(["javac", "-cp", GUAVA, "-d", str(classes), *sources], check=True, capture_output=True)
    payload = [s.encode() for s in SENTENCES] + [b"ab\xff\xfecd", b"x\xe2\x82y"]
    result = subprocess.run(
        ["java", "-cp", f"{GUAVA}:{classes}", "com.kerascompact.FeaturizerMain", "tokens", "1000", "7", "true"],
        input="".join(p.hex() + "\n" for p in payload), capture_output=True, text=True, check=True,
    )
    java = [[int(b) for b in line.split()] for line in result.stdout.split("\n")[: len(payload)]]
    assert java == TokenBuckets(1000, 7)(tf.constant(payload)).numpy().tolist()


def test_feature_buckets_hash_pad_and_cut_to_max_length():
    ids = tf.ragged.constant([[5, -7, 12, 3], [], [9]], dtype=tf.int64)
    weights = tf.ragged.constant([[1.0, 0.5, 2.0, 1.0], [], [3.0]])
    buckets, dense = FeatureBuckets(10, 3)([ids, weights])
    # 1 + (id mod 10), floor modulo for negative ids; 0 pads.
    assert buckets.numpy().tolist() == [[6, 4, 3], [0, 0, 0], [10, 0, 0]]
    assert dense.numpy().tolist() == [[1.0, 0.5, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(num_buckets=0, max_length=4), "num_buckets=0"), (dict(num_buckets=8, max_length=2.5), "max_length=2.5")],
)
def test_feature_buckets_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureBuckets(**kwargs)


def test_lstm_trainer_masks_padding():
    # The same features padded to different lengths give the same prediction.
    ids = tf.ragged.constant([[11, 22, 33]], dtype=tf.int64)
    weights = tf.ones_like(ids, dtype=tf.float32)
    short, long = lstm_trainer(3, num_buckets=64, max_length=4), lstm_trainer(3, num_buckets=64, max_length=40)
    long.set_weights(short.get_weights())
    np.testing.assert_allclose(short([ids, weights]), long([ids, weights]), atol=1e-6)
