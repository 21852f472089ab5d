"""Re-estimating `BatchNormalization` statistics after the weights under them changed."""

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import positive_int_errors, raise_errors
from keras_compact._cloning import check_model, clone_with, inlined
from keras_compact.pruning import _graph


def recalibrate_batch_norm(model, data, batch_size=64):
    """A copy of `model` whose `BatchNormalization` moving statistics are measured on `data`.

    A network's moving means and variances are learned on the weights it was
    trained with. After channel pruning (`prune(..., granularity="channel")`,
    `shrink`), or after training with `TargetedDropout` (whose statistics were
    gathered on dropped weights and are then used on whole ones), they no longer
    describe what each layer sees, and accuracy falls far more than the pruning
    itself costs. Re-estimating them on a few hundred training examples, without
    any gradient step, recovers most of it ("precise BN": every
    `BatchNormalization` normalises each batch by its own statistics, as in
    training, while dropout, `TargetedDropout` and the other layers run as at
    inference; each layer's statistics are then the mean and variance over all
    of `data`). Use it after one-shot pruning or Targeted Dropout training, before
    evaluating, exporting or fine-tuning.

    Args:
        model: a functional or Sequential model (wrappers allowed).
        data: training examples: an array `x` with the model's input shape, a
            pair `(x, y)`, or a `tf.data.Dataset` of such batches.
        batch_size: examples per step when `data` is an array, an integer >= 1.

    Returns:
        A new model with its own weights; `model` is not changed.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(256, 4)).astype("float32")
    >>> fixed = recalibrate_batch_norm(model, x)
    >>> hidden = model.layers[0](x)
    >>> bool(np.allclose(fixed.layers[1].moving_mean, np.mean(hidden, axis=0), atol=1e-4))
    True
    """
    check_model(model, "recalibrate_batch_norm", graph=True)
    raise_errors(positive_int_errors(batch_size=batch_size))
    copy = clone_with(model, lambda layer: _graph.replacement(layer, {}, {}))
    functional, _, originals = inlined(copy)  # a nested backbone's layers, in one graph the probe can read
    norms = [layer for layer in functional.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        raise ValueError(f"The model {model.name!r} has no BatchNormalization layer to recalibrate.")

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.BatchNormalization):
            kwargs["training"] = True
        return layer(*args, **kwargs)

    measuring = clone_with(functional, lambda layer: None, call_function=call)
    nodes = [node for node in _keras_private.nodes(measuring)
             if isinstance(node.operation, keras.layers.BatchNormalization)]
    read, order = [node.arguments.keras_tensors[0] for node in nodes], [node.operation for node in nodes]
    probe = keras.Model(measuring.inputs[0], read)
    sums, squares, counts = [0.0] * len(read), [0.0] * len(read), [0] * len(read)
    for batch in _batches(model, data, batch_size):
        values = probe(batch)
        values = values if isinstance(values, (list, tuple)) else [values]
        for index, value in enumerate(values):
            value = np.asarray(keras.ops.convert_to_numpy(value), np.float64)
            value = value.reshape(-1, value.shape[-1])
            sums[index] = sums[index] + value.sum(axis=0)
            squares[index] = squares[index] + (value**2).sum(axis=0)
            counts[index] += len(value)  # positions count as examples
    for layer, total, square, count in zip(order, sums, squares, counts):
        mean = total / count
        layer = originals[id(layer)]  # the copy's own BatchNormalization
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(np.maximum(square / count - mean**2, 0.0).astype("float32"))
    return copy


def _batches(model, data, batch_size):
    """`data`'s input batches, each checked against the model's one input."""
    inputs = model.inputs
    if len(inputs) != 1:
        raise ValueError(f"recalibrate_batch_norm takes data for a model with one input; {model.name!r} has "
                         f"{len(inputs)}.")
    expected = tuple(inputs[0].shape[1:])
    if _is_dataset(data):
        batches = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data)
    else:
        x = data[0] if isinstance(data, tuple) and len(data) == 2 else data
        x = np.asarray(x)
        batches = (x[start : start + batch_size] for start in range(0, max(len(x), 1), batch_size))
    seen = 0
    for batch in batches:
        batch = np.asarray(batch)
        if batch.ndim != len(expected) + 1 or any(e is not None and e != g for e, g in zip(expected, batch.shape[1:])):
            raise ValueError(
                f"data's examples must have the model's input shape {expected}. Received: a batch of shape "
                f"{batch.shape}"
            )
        if not np.all(np.isfinite(batch)):
            raise ValueError("data holds NaN or infinite values; BatchNormalization statistics would be NaN.")
        if len(batch):
            seen += len(batch)
            yield batch
    if seen < 2:
        raise ValueError(f"data must hold at least 2 examples to measure a variance. Received: {seen}")


def _is_dataset(data):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TensorFlow is always installed
        return False
    return isinstance(data, tf.data.Dataset)
