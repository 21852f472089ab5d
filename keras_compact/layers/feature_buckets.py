import keras
import tensorflow as tf

from keras_compact._backend import TensorFlowOpsLayer
from keras_compact._checks import ChecksCallInputs, positive_int_errors, raise_errors


@keras.saving.register_keras_serializable(package="keras_compact")
class FeatureBuckets(ChecksCallInputs, TensorFlowOpsLayer, keras.layers.Layer):
    """Hashed feature ids (ragged) to padded embedding rows: the hashing trick.

    Maps each int64 feature id (from `TextFeaturizer`) to a bucket
    `1 + (id mod num_buckets)` and pads or cuts every example to `max_length`
    positions (bucket 0 and weight 0 mark padding), so that an
    `Embedding(num_buckets + 1, ..., mask_zero=True)` and a recurrent layer can
    read the features in order. This is how the text trainer network sees the
    same inputs as the projection network without a vocabulary.

    Args:
        num_buckets: number of embedding rows for features (>= 1).
        max_length: positions per example (>= 1).

    Call arguments:
        inputs: `[ids, weights]`, two ragged tensors `[batch, None]`.

    Returns:
        `[buckets, weights]`: int32 `[batch, max_length]` and float32
        `[batch, max_length]`.

    Example:

    >>> ids = tf.ragged.constant([[5, -7], []], dtype=tf.int64)
    >>> buckets, _ = FeatureBuckets(10, 3)([ids, tf.ones_like(ids, dtype=tf.float32)])
    >>> buckets.numpy().tolist()
    [[6, 4, 0], [0, 0, 0]]
    """

    expected_inputs = "[ids, weights]: int64 ids and float weights as tf.RaggedTensors (batch, None)"
    convert_hint = "[tf.ragged.constant(ids, dtype='int64'), tf.ragged.constant(weights)]"

    needs_tensorflow = (
        "FeatureBuckets (strings and ragged ids)",
        "On another backend, bucket in the input pipeline: dataset.map(lambda ids, y: (buckets(ids), y)).",
    )

    def __init__(self, num_buckets, max_length, **kwargs):
        errors = positive_int_errors(num_buckets=num_buckets, max_length=max_length)
        raise_errors(errors)
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.num_buckets = int(num_buckets)
        self.max_length = int(max_length)

    def call(self, inputs):
        ids, weights = inputs
        buckets = tf.ragged.map_flat_values(
            lambda v: tf.cast(tf.math.floormod(v, self.num_buckets) + 1, tf.int32), ids
        )
        shape = [None, self.max_length]
        return [
            buckets.to_tensor(default_value=0, shape=shape),
            tf.cast(weights, tf.float32).to_tensor(default_value=0.0, shape=shape),
        ]

    def compute_output_spec(self, inputs):
        batch = inputs[0].shape[0]
        return [
            keras.KerasTensor((batch, self.max_length), dtype="int32"),
            keras.KerasTensor((batch, self.max_length), dtype="float32"),
        ]

    def get_config(self):
        config = super().get_config()
        config.update(num_buckets=self.num_buckets, max_length=self.max_length)
        return config
