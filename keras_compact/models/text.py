"""Networks for text ProjectionNet: the LSTM trainer and the projection network."""

import keras

from keras_compact.layers.feature_buckets import FeatureBuckets
from keras_compact.layers.projection_layer import ProjectionLayer


def _feature_inputs():
    return (
        keras.Input(shape=(None,), dtype="int64", ragged=True, name="ids"),
        keras.Input(shape=(None,), dtype="float32", ragged=True, name="weights"),
    )


def lstm_trainer(num_classes, num_buckets=2**15, max_length=64, embedding_dim=64, units=64, name="lstm_trainer"):
    """The trainer of a text ProjectionNet: hashed feature embeddings, an LSTM, softmax.

    It reads the same `[ids, weights]` as the projection network (the output of
    `TextFeaturizer`), so `ProjectionNet(lstm_trainer(...), projection_network(...))`
    trains both on one input. Each feature id is embedded through the hashing
    trick (`FeatureBuckets`), scaled by its weight; the LSTM reads the features
    in the featurizer's order (words, then longer n-grams, ...).

    Example:

    >>> trainer = lstm_trainer(num_classes=7)
    >>> [tuple(t.shape) for t in trainer.inputs], trainer.output_shape
    ([(None, None), (None, None)], (None, 7))
    """
    ids, weights = _feature_inputs()
    buckets, dense_weights = FeatureBuckets(num_buckets, max_length)([ids, weights])
    embedded = keras.layers.Embedding(num_buckets + 1, embedding_dim)(buckets)
    embedded = embedded * keras.ops.expand_dims(dense_weights, -1)
    # Padding (bucket 0) is masked, so the LSTM's last state is that of the last feature.
    hidden = keras.layers.LSTM(units)(embedded, mask=keras.ops.not_equal(buckets, 0))
    outputs = keras.layers.Dense(num_classes, activation="softmax")(hidden)
    return keras.Model([ids, weights], outputs, name=name)


def projection_network(num_classes, num_hashes=60, num_bits=12, hidden_units=(), seed=0, name="projection"):
    """The deployable network: `ProjectionLayer([ids, weights])`, optional Dense layers, softmax.

    `tflite_export.export` writes it with the builtin LSH_PROJECTION operator; the
    file's two inputs are the ids and weights of one sentence.

    Example:

    >>> projection = projection_network(num_classes=7, num_hashes=60, num_bits=12)
    >>> projection.output_shape
    (None, 7)
    """
    ids, weights = _feature_inputs()
    hidden = ProjectionLayer(num_hashes, num_bits, seed=seed)([ids, weights])
    for units in hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(hidden)
    return keras.Model([ids, weights], outputs, name=name)
