import keras

from keras_compact._backend import TensorFlowOpsLayer
from keras_compact._checks import ChecksCallInputs, bool_errors, positive_int_errors, raise_errors
from keras_compact.layers.feature_buckets import FeatureBuckets
from keras_compact.layers.text_featurizer import TextFeaturizer


@keras.saving.register_keras_serializable(package="keras_compact")
class TokenBuckets(ChecksCallInputs, TensorFlowOpsLayer, keras.layers.Layer):
    """Sentences to one hashed bucket per token, padded: the input of a sequence model.

    Token `i` of a sentence (as `TextFeaturizer` tokenizes it) becomes
    `1 + (Fingerprint64("w:" + token) mod num_buckets)`, the `FeatureBuckets` bucket
    of its unigram feature id; the first `max_length` tokens are kept and the rest
    of the row is 0 (padding). No vocabulary is stored, so the Java featurizer
    (`TextFeaturizer.tokenBuckets` in `tutorials/android/featurizer/`) computes the
    same integers on the phone, and the exported sequence model takes them as its
    int32 `[1, max_length]` input.

    Args:
        num_buckets: number of token buckets (>= 1); an `Embedding` after it
            needs `num_buckets + 1` rows.
        max_length: tokens per sentence (>= 1).
        lowercase: fold ASCII upper case to lower case, as `TextFeaturizer` does.

    Call arguments:
        inputs: a string tensor `[batch]` (or `[batch, 1]`).

    Returns:
        int32 `[batch, max_length]`.

    Example:

    >>> buckets = TokenBuckets(num_buckets=1000, max_length=4)(tf.constant(["Play some jazz", ""]))
    >>> (buckets.numpy() > 0).astype(int).tolist()
    [[1, 1, 1, 0], [0, 0, 0, 0]]
    """

    expected_inputs = "a string tensor of sentences (batch,)"
    convert_hint = "tf.constant(sentences) or np.array(sentences)"

    needs_tensorflow = (
        "TokenBuckets (strings)",
        "On another backend, bucket the tokens in the input pipeline: dataset.map(lambda text, y: (buckets(text), y)).",
    )

    def __init__(self, num_buckets, max_length, lowercase=True, **kwargs):
        errors = positive_int_errors(num_buckets=num_buckets, max_length=max_length)
        errors += bool_errors(lowercase=lowercase)
        raise_errors(errors)
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.num_buckets = int(num_buckets)
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        self._featurizer = TextFeaturizer(ngrams=1, lowercase=lowercase, max_tokens=self.max_length)
        self._buckets = FeatureBuckets(self.num_buckets, self.max_length)
        self.supports_jit = False

    def build(self, input_shape):
        self._featurizer.build(input_shape)
        self._buckets.build([(None, None), (None, None)])

    def call(self, inputs):
        ids, weights = self._featurizer.call(inputs)
        return self._buckets.call([ids, weights])[0]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.max_length), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(num_buckets=self.num_buckets, max_length=self.max_length, lowercase=self.lowercase)
        return config
