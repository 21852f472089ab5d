import keras
import tensorflow as tf

from keras_compact._backend import TensorFlowOpsLayer
from keras_compact._checks import ChecksCallInputs, bool_errors, is_int, is_number, keyword_only, raise_errors

# ASCII whitespace (U+0009..U+000D, U+0020) and ASCII punctuation separate tokens.
SEPARATORS = "\t\n\x0b\x0c\r !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_SEPARATOR_RUNS = "[\\t\\n\\x0b\\x0c\\r !-/:-@\\[-`{-~]+"


@keras.saving.register_keras_serializable(package="keras_compact")
class TextFeaturizer(ChecksCallInputs, TensorFlowOpsLayer, keras.layers.Layer):
    """Sentences to hashed n-gram feature ids (and weights) for `ProjectionLayer`.

    No vocabulary is stored: every feature is named by a short UTF-8 string and
    its id is the Fingerprint64 (farmhash) of that string's bytes, as
    `tf.fingerprint` computes it and Guava's `Hashing.farmHashFingerprint64()`
    on Android. The ids feed `ProjectionLayer([ids, weights])`, which hashes them
    again into LSH bits (Ravi 2017, ProjectionNet's text input).

    The spec, which the Java featurizer in `tutorials/android/featurizer/`
    follows byte for byte:

    1. Bytes that are not valid UTF-8 are replaced by U+FFFD (one per maximal
       invalid subsequence).
    2. With `lowercase=True`, ASCII `A`-`Z` become `a`-`z`; no other character
       changes (no locale, no Unicode case mapping).
    3. Tokens are the maximal runs of characters other than ASCII whitespace
       (U+0009-U+000D, U+0020) and ASCII punctuation (`!"#$%&'()*+,-./:;<=>?@[\\]^_`
       and backtick, `{|}~`); a sentence without such runs has no features. With
       `max_tokens`, only the first `max_tokens` tokens are used.
    4. Features, in this order:
       - for `n = 1..ngrams`, every run of `n` consecutive tokens, in order:
         `"w:" + tokens joined by one space`;
       - for `gap = 1..skip_grams`, every pair of tokens `gap` tokens apart
         (`tokens[i]`, `tokens[i + gap + 1]`), in order: `"s:" + first + " " + second`;
       - if `char_ngrams=(lo, hi)`: for `n = lo..hi`, for each token in order, every
         run of `n` consecutive code points of `"<" + token + ">"`: `"c:" + run`.
    5. A feature's id is `Fingerprint64(UTF-8 bytes of its string)` read as a
       signed 64-bit integer (the little-endian bytes of `tf.fingerprint`); its
       weight is `word_weights[n - 1]` for a word n-gram (1.0 by default),
       `skip_weight` for a skip-gram and `char_weight` for a character n-gram.
       Repeated features stay repeated (their weights add up in the projection).

    Args:
        ngrams: longest word n-gram, >= 0 (0: no word n-grams, for a view of
            skip-grams or character n-grams alone).
        skip_grams: largest number of skipped tokens in a skip-bigram (0: none).
        char_ngrams: `None`, or `(lo, hi)` code-point n-gram lengths, 1 <= lo <= hi.
        lowercase: fold ASCII upper case to lower case.
        max_tokens: `None`, or keep only this many leading tokens.
        word_weights: `None`, or one positive weight per word n-gram order.
        skip_weight: weight of a skip-gram, > 0.
        char_weight: weight of a character n-gram, > 0.

    Call arguments:
        inputs: a string tensor `[batch]` (or `[batch, 1]`).

    Returns:
        `[ids, weights]`: an int64 and a float32 `tf.RaggedTensor [batch, None]`.

    Example:

    >>> ids, weights = TextFeaturizer(ngrams=2)(tf.constant(["Hello, world!"]))
    >>> ids.row_lengths().numpy().tolist()  # "w:hello", "w:world", "w:hello world"
    [3]
    """

    expected_inputs = "a string tensor of sentences (batch,)"
    convert_hint = "tf.constant(sentences) or np.array(sentences)"

    needs_tensorflow = (
        "TextFeaturizer (strings and ragged ids)",
        "On another backend, featurize in the input pipeline: dataset.map(lambda text, y: (featurizer(text), y)), followed there by a ProjectionLayer (projection(featurizer(text))) to hand the model dense bits.",
    )

    @keyword_only
    def __init__(
        self,
        ngrams=2,
        skip_grams=0,
        char_ngrams=None,
        *,
        lowercase=True,
        max_tokens=None,
        word_weights=None,
        skip_weight=1.0,
        char_weight=1.0,
        **kwargs,
    ):
        errors = _feature_errors(ngrams, skip_grams, char_ngrams)
        errors += bool_errors(lowercase=lowercase)
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
            errors.append(f"max_tokens must be None or an integer >= 1. Received: max_tokens={max_tokens!r}")
        errors += _weight_errors(ngrams, word_weights, skip_weight, char_weight)
        if not errors and ngrams == 0 and skip_grams == 0 and char_ngrams is None:
            errors.append(
                "A TextFeaturizer needs at least one kind of feature: ngrams >= 1, skip_grams >= 1 or "
                f"char_ngrams=(lo, hi). Received: ngrams={ngrams!r}, skip_grams={skip_grams!r}, char_ngrams=None"
            )
        raise_errors(errors)
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.ngrams = int(ngrams)
        self.skip_grams = int(skip_grams)
        self.char_ngrams = None if char_ngrams is None else (int(char_ngrams[0]), int(char_ngrams[1]))
        self.lowercase = bool(lowercase)
        self.max_tokens = max_tokens
        self.word_weights = None if word_weights is None else [float(w) for w in word_weights]
        self.skip_weight = float(skip_weight)
        self.char_weight = float(char_weight)
        self.supports_jit = False

    def tokens(self, inputs):
        """Steps 1-3 of the spec: the `[batch, None]` ragged string tokens."""
        text = tf.convert_to_tensor(inputs)
        if text.dtype != tf.string:
            raise ValueError(f"TextFeaturizer expects a string tensor. Received: dtype={text.dtype.name}")
        if text.shape.rank == 2 and text.shape[-1] == 1:
            text = tf.squeeze(text, axis=-1)
        if text.shape.rank != 1:
            raise ValueError(
                f"TextFeaturizer expects sentences of shape (batch,) or (batch, 1). Received: shape={tuple(text.shape)}"
            )
        text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
        if self.lowercase:
            text = tf.strings.lower(text)  # encoding="" folds ASCII only
        text = tf.strings.strip(tf.strings.regex_replace(text, _SEPARATOR_RUNS, " "))
        tokens = tf.strings.split(text, sep=" ")
        tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
        if self.max_tokens is not None:
            tokens = tokens[:, : self.max_tokens]
        return tokens

    def features(self, inputs):
        """Step 4 of the spec: `(strings, weights)`, two `[batch, None]` ragged tensors."""
        tokens = self.tokens(inputs)
        parts = []
        for n in range(1, self.ngrams + 1):
            weight = 1.0 if self.word_weights is None else self.word_weights[n - 1]
            parts.append(("w:", tf.strings.ngrams(tokens, n, separator=" "), weight))
        for gap in range(1, self.skip_grams + 1):
            pairs = tf.strings.join([tokens[:, : -(gap + 1)], tokens[:, gap + 1 :]], separator=" ")
            parts.append(("s:", pairs, self.skip_weight))
        if self.char_ngrams is not None:
            bounded = tf.ragged.map_flat_values(lambda t: tf.strings.join(["<", t, ">"]), tokens)
            characters = tf.strings.unicode_split(bounded, "UTF-8")
            for n in range(self.char_ngrams[0], self.char_ngrams[1] + 1):
                grams = tf.strings.ngrams(characters, n, separator="").merge_dims(1, 2)
                parts.append(("c:", grams, self.char_weight))
        strings = tf.concat(
            [tf.ragged.map_flat_values(lambda v, p=prefix: tf.strings.join([p, v]), grams) for prefix, grams, _ in parts],
            axis=1,
        )
        weights = tf.concat(
            [tf.ragged.map_flat_values(lambda v, w=weight: tf.fill(tf.shape(v), w), grams) for _, grams, weight in parts],
            axis=1,
        )
        return strings, weights

    def call(self, inputs):
        strings, weights = self.features(inputs)
        ids = tf.ragged.map_flat_values(lambda v: tf.bitcast(tf.fingerprint(v), tf.int64), strings)
        return [ids, tf.cast(weights, tf.float32)]

    def compute_output_spec(self, inputs):
        batch = inputs.shape[0]
        return [
            keras.KerasTensor((batch, None), dtype="int64", ragged=True),
            keras.KerasTensor((batch, None), dtype="float32", ragged=True),
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            ngrams=self.ngrams,
            skip_grams=self.skip_grams,
            char_ngrams=self.char_ngrams,
            lowercase=self.lowercase,
            max_tokens=self.max_tokens,
            word_weights=self.word_weights,
            skip_weight=self.skip_weight,
            char_weight=self.char_weight,
        )
        return config


def _feature_errors(ngrams, skip_grams, char_ngrams):
    """What is wrong with the kinds of feature a TextFeaturizer is asked for."""
    errors = []
    if not is_int(ngrams) or ngrams < 0:
        errors.append(f"ngrams must be an integer >= 0. Received: ngrams={ngrams!r}")
    if not is_int(skip_grams) or skip_grams < 0:
        errors.append(f"skip_grams must be an integer >= 0. Received: skip_grams={skip_grams!r}")
    if char_ngrams is not None and not (
        isinstance(char_ngrams, (list, tuple))
        and len(char_ngrams) == 2
        and all(is_int(n) for n in char_ngrams)
        and 1 <= char_ngrams[0] <= char_ngrams[1]
    ):
        errors.append(f"char_ngrams must be None or (lo, hi) with 1 <= lo <= hi. Received: char_ngrams={char_ngrams!r}")
    return errors


def _weight_errors(ngrams, word_weights, skip_weight, char_weight):
    """What is wrong with a TextFeaturizer's feature weights."""
    errors = []
    if word_weights is not None and not (
        isinstance(word_weights, (list, tuple))
        and len(word_weights) == ngrams
        and all(is_number(w) and w > 0 for w in word_weights)
    ):
        errors.append(
            f"word_weights must be None or {ngrams!r} positive numbers (one per n-gram order). "
            f"Received: word_weights={word_weights!r}"
        )
    for name, value in (("skip_weight", skip_weight), ("char_weight", char_weight)):
        if not is_number(value) or value <= 0:
            errors.append(f"{name} must be a number > 0. Received: {name}={value!r}")
    return errors
