"""Text models: trainers (LSTM, bag of n-grams) and deployable networks (projection, sequence).

Every model reads named inputs that `TextFeaturizer`, `TokenBuckets` or `TextViews`
compute from sentences: `[ids, weights]` (named `"ids"`, `"weights"`, or
`"<view>_ids"`, `"<view>_weights"` for a view) or `"tokens"`. Feeding all of them
from one `TextViews` dict lets `ProjectionNet` train any trainer with any
deployable network: each network takes the entries named like its inputs.
"""

import keras

from keras_compact._backend import require_tensorflow
from keras_compact._checks import is_int, is_number, keyword_only, positive_int_errors, raise_errors
from keras_compact.layers.feature_buckets import FeatureBuckets
from keras_compact.layers.projection_layer import MAX_BITS, ProjectionLayer
from keras_compact.layers.qrnn import QRNN


@keyword_only
def lstm_trainer(
    num_classes, num_buckets=2**15, max_length=64, embedding_dim=64, units=64, *, view=None, name="lstm_trainer"
):
    """The trainer of a text ProjectionNet: hashed feature embeddings, an LSTM, softmax.

    It reads the same `[ids, weights]` as the projection network (the output of
    `TextFeaturizer`), so `ProjectionNet(lstm_trainer(...), projection_network(...))`
    trains both on one input. Each feature id is embedded through the hashing
    trick (`FeatureBuckets`), scaled by its weight; the LSTM reads the features
    in the featurizer's order (words, then longer n-grams, ...). With `view`, the
    inputs are named `"<view>_ids"` and `"<view>_weights"` (a `TextViews` view).

    Example:

    >>> trainer = lstm_trainer(num_classes=7)
    >>> [tuple(t.shape) for t in trainer.inputs], trainer.output_shape
    ([(None, None), (None, None)], (None, 7))
    """
    _check_sizes(
        num_classes=num_classes, num_buckets=num_buckets, max_length=max_length,
        embedding_dim=embedding_dim, units=units,
    )
    ids, weights = _feature_inputs(_check_view(view))
    buckets, dense_weights = FeatureBuckets(num_buckets, max_length)([ids, weights])
    embedded = keras.layers.Embedding(num_buckets + 1, embedding_dim)(buckets)
    embedded = embedded * keras.ops.expand_dims(dense_weights, -1)
    # Padding (bucket 0) is masked, so the LSTM's last state is that of the last feature.
    hidden = keras.layers.LSTM(units)(embedded, mask=keras.ops.not_equal(buckets, 0))
    outputs = keras.layers.Dense(num_classes, activation="softmax")(hidden)
    return keras.Model([ids, weights], outputs, name=name)


def bag_of_ngrams(num_classes, num_buckets=2**18, max_length=256, l2=1e-6, view=None, name="bag_of_ngrams"):
    """Multinomial logistic regression on hashed features: the strong, large text baseline.

    `softmax(b + sum_i weight_i * W[bucket(id_i)])` over the sentence's features
    (the hashing trick, `FeatureBuckets`), with an L2 penalty `l2 * ||W||^2` added
    to the loss (scikit-learn's `LogisticRegression(C)` on `N` examples is
    `l2 = 1 / (2 * C * N)`). It has `(num_buckets + 2) * num_classes` weights, too many
    for a phone, and is a good trainer for `ProjectionNet`: it reads the same
    `[ids, weights]` as `projection_network` (or `"<view>_ids"`, `"<view>_weights"`).

    Example:

    >>> model = bag_of_ngrams(num_classes=7, num_buckets=2**10)
    >>> model.count_params()
    7182
    """
    _check_sizes(num_classes=num_classes, num_buckets=num_buckets, max_length=max_length)
    if not is_number(l2) or l2 < 0:
        raise ValueError(f"l2 must be a number >= 0. Received: l2={l2!r}")
    ops = keras.ops
    ids, weights = _feature_inputs(_check_view(view))
    buckets, dense_weights = FeatureBuckets(num_buckets, max_length)([ids, weights])
    # The bias is one more row, present once in every example with weight 1.
    bias = ops.ones_like(buckets[:, :1])
    buckets = ops.concatenate([buckets, bias * (num_buckets + 1)], axis=1)
    dense_weights = ops.concatenate([dense_weights, ops.cast(bias, "float32")], axis=1)
    rows = keras.layers.Embedding(
        num_buckets + 2, num_classes, embeddings_initializer="zeros",
        embeddings_regularizer=keras.regularizers.L2(l2) if l2 else None, name="weights_per_bucket",
    )(buckets)
    logits = ops.sum(rows * ops.expand_dims(dense_weights, -1), axis=1)
    outputs = keras.layers.Softmax()(logits)
    return keras.Model([ids, weights], outputs, name=name)


@keyword_only
def projection_network(
    num_classes, num_hashes=60, num_bits=12, hidden_units=(), dropout=0.0, *, views=None, seed=0, name="projection"
):
    """The deployable network: LSH projection(s), optional fully connected layers, softmax.

    With `views=None` it is `ProjectionLayer([ids, weights])` -> Dense layers ->
    softmax (Ravi 2017). With `hidden_units`, it is the SGNN shape (Ravi &
    Kozareva 2018): the bits go through ReLU layers of those sizes, each followed
    by `Dropout(dropout)` in training. With `views` (names of `TextViews` views,
    for example `("words", "skip_grams", "chars")`), each view has its own
    `ProjectionLayer(num_hashes, num_bits)` (seed `seed + i` for view `i`) on its
    inputs `"<view>_ids"`, `"<view>_weights"`, and the bits are concatenated, so
    one model hashes several feature views (`views="words"` names the inputs of a
    single view). `tflite_export.export` writes one builtin LSH_PROJECTION per
    view; the file's inputs are the ids and weights of one sentence per view.

    Args:
        num_classes: number of classes (>= 1).
        num_hashes, num_bits: T and d of each `ProjectionLayer` (`T * d` bits per view).
        hidden_units: sizes of the fully connected ReLU layers, positive integers.
        dropout: rate of the `Dropout` after each hidden layer, in [0, 1).
        views: `None`, a view name, or a sequence of distinct view names.
        seed: seed of the first `ProjectionLayer`.

    Example:

    >>> projection = projection_network(num_classes=7, num_hashes=60, num_bits=12)
    >>> projection.output_shape
    (None, 7)
    >>> sgnn = projection_network(7, 80, 14, hidden_units=(256, 256), dropout=0.1, views=("words", "chars"))
    >>> [t.name for t in sgnn.inputs]
    ['words_ids', 'words_weights', 'chars_ids', 'chars_weights']
    """
    _check_sizes(num_classes=num_classes, num_hashes=num_hashes)
    if not is_int(num_bits) or not 1 <= num_bits <= MAX_BITS:
        raise ValueError(f"num_bits must be an integer from 1 to {MAX_BITS}. Received: num_bits={num_bits!r}")
    hidden_units = _check_hidden_units(hidden_units)
    dropout = _check_dropout(dropout)
    if views is None or isinstance(views, str):
        views = [_check_view(views)]
    elif not isinstance(views, (list, tuple)) or not views or len(set(views)) != len(views):
        raise ValueError(
            f"views must be None, a view name or a non-empty sequence of distinct view names. Received: views={views!r}"
        )
    else:
        views = [_check_view(view) for view in views]
    inputs, bits = [], []
    for i, view in enumerate(views):
        pair = _feature_inputs(view)
        inputs += pair
        layer = ProjectionLayer(num_hashes, num_bits, seed=seed + i, name=f"{view or 'features'}_projection")
        bits.append(layer(list(pair)))
    hidden = bits[0] if len(bits) == 1 else keras.layers.Concatenate(name="bits")(bits)
    for units in hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
        if dropout:
            hidden = keras.layers.Dropout(dropout)(hidden)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(hidden)
    return keras.Model(inputs, outputs, name=name)


@keyword_only
def sequence_network(
    num_classes, num_buckets=6144, max_length=32, embedding_dim=32, units=48, num_layers=1, *, kernel_size=2,
    dropout=0.1, view="tokens", name="sequence",
):
    """A compact per-token sequence model: hashed token embeddings, bidirectional QRNN, mean pooling.

    Reads the int32 `[batch, max_length]` buckets of `TokenBuckets` (0 pads), as
    an input named `view` (`"tokens"`; the `TextViews` view of that name). Each
    token bucket has an `embedding_dim` row; `num_layers` bidirectional `QRNN`
    layers (fo-pooling, `units` per direction) read them, padding masked; the
    mean of the last layer over the real tokens (zeros for a sentence without
    tokens) goes through `Dropout(dropout)` to a softmax. The defaults are the
    benchmarked model: an int8 file of about 290 KB.

    It follows pQRNN (Kaliamoorthi et al., "Distilling Large Language Models into
    Tiny and Effective Students using pQRNN", 2021): a bidirectional QRNN over
    per-token features, pooled, distilled from a larger model. It differs in the
    token features: pQRNN projects each token's hashed features into ternary
    features with no stored table, then a dense bottleneck; here each token's
    hash selects a row of a learned table (the hashing trick), which is what
    builtin TFLite operators express (GATHER), and int8 quantization keeps the
    table at one byte per number. The time loop is unrolled, so the `.tflite`
    file takes `tokens` of exactly `max_length`.

    Example:

    >>> model = sequence_network(num_classes=7, num_buckets=1000, max_length=16)
    >>> model.input.name, tuple(model.input.shape), model.output_shape
    ('tokens', (None, 16), (None, 7))
    """
    _check_sizes(
        num_classes=num_classes, num_buckets=num_buckets, max_length=max_length, embedding_dim=embedding_dim,
        units=units, num_layers=num_layers, kernel_size=kernel_size,
    )
    dropout = _check_dropout(dropout)
    ops = keras.ops
    if not (isinstance(view, str) and view.isidentifier()):
        raise ValueError(f"view must be a Python identifier (it names the input). Received: view={view!r}")
    tokens = keras.Input(shape=(max_length,), dtype="int32", name=view)
    mask = ops.not_equal(tokens, 0)
    hidden = keras.layers.Embedding(num_buckets + 1, embedding_dim, name="token_embedding")(tokens)
    for _ in range(num_layers):
        hidden = QRNN(units, kernel_size=kernel_size, bidirectional=True)(hidden, mask=mask)
    # The mean over real tokens; a sentence without tokens pools to zeros (Keras's masked mean divides by 0).
    keep = ops.expand_dims(ops.cast(mask, "float32"), -1)
    pooled = ops.sum(hidden * keep, axis=1) / ops.maximum(ops.sum(keep, axis=1), 1.0)
    if dropout:
        pooled = keras.layers.Dropout(dropout)(pooled)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(pooled)
    return keras.Model(tokens, outputs, name=name)


def _feature_inputs(view):
    require_tensorflow(
        "A text model reading ragged feature ids (lstm_trainer, bag_of_ngrams, projection_network)",
        "On JAX, sequence_network reads dense token ids (TokenBuckets in the tf.data pipeline) and trains there.",
    )
    prefix = "" if view is None else f"{view}_"
    return (
        keras.Input(shape=(None,), dtype="int64", ragged=True, name=f"{prefix}ids"),
        keras.Input(shape=(None,), dtype="float32", ragged=True, name=f"{prefix}weights"),
    )


def _check_view(view):
    if view is not None and not (isinstance(view, str) and view.isidentifier()):
        raise ValueError(
            f"A view name must be None or a Python identifier (it names the inputs). Received: {view!r}"
        )
    return view


def _check_sizes(**sizes):
    errors = positive_int_errors(**sizes)
    raise_errors(errors)


def _check_dropout(dropout):
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1). Received: dropout={dropout!r}")
    return float(dropout)


def _check_hidden_units(hidden_units):
    if isinstance(hidden_units, (list, tuple)) and all(is_int(u) and u >= 1 for u in hidden_units):
        return [int(u) for u in hidden_units]
    raise ValueError(
        "hidden_units must be a sequence of positive integers (the sizes of the fully connected layers), "
        f"for example (256, 256). Received: hidden_units={hidden_units!r}"
    )
