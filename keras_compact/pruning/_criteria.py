"""How `prune` ranks units (magnitude, onorm, taylor, similarity) and merges them.

Every function here works on `prune`'s copy of the model, never on the user's.
"""


import keras
import numpy as np

from keras_compact import _data
from keras_compact._cloning import as_functional
from keras_compact.pruning import _graph, _reconstruct

_BATCH = 512
# A dataset or generator passed as `data` is read up to this many examples (it may repeat forever).
MAX_STREAM_EXAMPLES = 4096


_READ_DATA = ("onorm", "taylor", "obs", "dpp")  # the criteria that measure on examples


def examples(model, data, criterion, refit=None):
    """`(x, y)` from `prune`'s `data`, checked against `model`'s input; `(None, None)` when unused. `refit`
    names the argument that refits layers on the data (`"merge=True"`, `"reconstruct=True"`), if any."""
    needs = criterion in _READ_DATA or refit is not None
    what = refit if refit and criterion not in _READ_DATA else f"criterion={criterion!r}"
    if data is None:
        if needs:
            wanted = "data=(x, y)" if criterion == "taylor" else "data=x or data=(x, y)"
            raise ValueError(f"{what} works on examples: pass {wanted}. Received: data=None")
        return None, None
    if not needs:
        raise ValueError(
            f"data is used by criterion='onorm', 'taylor', 'obs' or 'dpp', merge=True and reconstruct=True; with "
            f"criterion={criterion!r} and neither refit it would be ignored. Leave data out, or choose one of those."
        )
    x, y = _split(data)
    if criterion == "taylor" and y is None:
        raise ValueError("criterion='taylor' differentiates the loss: pass data=(x, y), labels included.")
    if len(model.inputs) != 1:
        raise ValueError(
            f"{what} takes data for a model with one input; {model.name!r} has {len(model.inputs)}."
        )
    x = _checked_examples(np.asarray(x), tuple(model.inputs[0].shape[1:]), what)
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"data's x and y differ in length: {len(x)} and {len(y)}.")
        if y.dtype.kind in "biuf" and not np.all(np.isfinite(y)):
            raise ValueError("data's labels y hold NaN or infinite values.")
    return x, y


def _split(data):
    """`(x, y)` of `prune`'s `data`: a pair, examples alone (y None), or a stream of either."""
    if _data.is_stream(data) or callable(data):
        pairs = [_data.split_pair(batch) for batch in _data.batches(data, MAX_STREAM_EXAMPLES, "data")]
        x = _data.concatenated([pair[0] for pair in pairs])
        y = None if any(pair[1] is None for pair in pairs) else _data.concatenated([pair[1] for pair in pairs])
        return x, y
    return data if isinstance(data, tuple) and len(data) == 2 else (data, None)


def _checked_examples(x, expected, what):
    """`x`, raising unless it holds finite numbers of the input shape `expected` (`what` uses them)."""
    if x.ndim != len(expected) + 1 or any(e is not None and e != g for e, g in zip(expected, x.shape[1:])):
        raise ValueError(
            f"data's examples must have the model's input shape {expected}. Received: data with x of shape "
            f"{x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"data has no examples. Received: data with x of shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"data's examples must be numbers. Received: data with x of dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
        raise ValueError(
            f"data holds NaN or infinite values in {bad} of its {len(x)} examples; {what} would rank or fit "
            "on NaN. Clean them first."
        )
    return x


def unit_scores(criterion, model, copy, wrappers, x, y):
    """`{name: [units]}` scores for `criterion`; the smallest are pruned."""
    if criterion == "magnitude":
        return {name: _graph.unit_norms(layer) for name, layer in wrappers.items()}
    nested = [name for name, layer in wrappers.items() if layer not in copy.layers]
    if nested:
        raise ValueError(
            f"criterion={criterion!r} reads the activations of the model's own layers; {nested} are inside a "
            "nested model. Prune the nested model itself, or choose criterion='magnitude'."
        )
    graph = as_functional(copy)
    probe = keras.Model(graph.inputs[0], [layer.output for layer in wrappers.values()] + [graph.outputs[0]])
    totals = [0.0] * len(wrappers)
    if criterion == "onorm":
        for start in range(0, len(x), _BATCH):
            values = probe(x[start : start + _BATCH], training=False)[:-1]
            for index, value in enumerate(values):
                totals[index] = totals[index] + _per_unit_sum(np.abs(keras.ops.convert_to_numpy(value)))
    else:
        totals = _taylor_totals(model, probe, x, y, len(wrappers))
    return {name: np.asarray(total) / len(x) for name, total in zip(wrappers, totals)}


def _taylor_totals(model, probe, x, y, count):
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "criterion='taylor' differentiates with TensorFlow; it needs the TensorFlow backend. "
            f"Received: backend {keras.backend.backend()!r}"
        )
    import tensorflow as tf

    loss = getattr(model, "loss", None)
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not callable(loss):
        raise ValueError(
            f"criterion='taylor' differentiates the model's loss: compile {model.name!r} with one loss first "
            f"(model.compile(loss=...)). Received: model.loss={getattr(model, 'loss', None)!r}"
        )
    totals = [0.0] * count
    for start in range(0, len(x), _BATCH):
        batch_x, batch_y = x[start : start + _BATCH], y[start : start + _BATCH]
        with tf.GradientTape() as tape:
            values = probe(batch_x, training=False)
            # Summed over the batch, so each example's gradient counts whole.
            total = loss(batch_y, values[-1]) * len(batch_x)
        gradients = tape.gradient(total, values[:-1])
        for index, (value, gradient) in enumerate(zip(values[:-1], gradients)):
            product = (value * gradient).numpy()
            # Molchanov et al.: |mean over positions|, then the mean over examples.
            per_example = product.reshape(len(product), -1, product.shape[-1]).mean(axis=1)
            totals[index] = totals[index] + np.abs(per_example).sum(axis=0)
    return totals


def _per_unit_sum(values):
    """Sum over examples of each unit's mean over positions."""
    return values.reshape(len(values), -1, values.shape[-1]).mean(axis=1).sum(axis=0)


def chains_for(copy, wrappers, criterion, merge):
    """`{name: Chain}` for similarity and merging, which change the layer reading the units."""
    if not (merge or criterion == "similarity"):
        return {}
    found = _graph.chains(copy)
    what = "criterion='similarity'" if criterion == "similarity" else "merge=True"
    result = {}
    for name in wrappers:
        chain = found.get(name, f"{name!r} is inside a nested model")
        if not isinstance(chain, _graph.Chain):  # a Blocked, or a nested layer
            raise ValueError(
                f"{what} changes the layer that reads the pruned units, but {chain}. "
                "Leave this layer out with layers=[...]."
            )
        result[name] = chain
    return result


def similar_units(layer, chain, count):
    """Srinivas & Babu's data-free choice: bool `[units]` of the `count` units
    removed; each one's outgoing weights are added to its nearest kept twin's."""
    incoming = _graph.columns(_graph.masked_kernel(layer), layer.target)
    if layer.target.use_bias:
        incoming = np.vstack([incoming, keras.ops.convert_to_numpy(layer.masked_values()[1][1])[None, :]])
    incoming = incoming.astype(np.float64)
    consumer = _graph.unwrapped(chain.consumer)
    rows = chain.consumer_rows(keras.ops.convert_to_numpy(consumer.kernel))
    outgoing = np.moveaxis(rows, -2, 0).astype(np.float64)  # [units, ...]
    squares = np.sum(incoming**2, axis=0)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * incoming.T @ incoming, 0.0)
    alive = np.ones(len(squares), bool)
    for _ in range(count):
        if alive.sum() == 1:
            alive[:] = False
            break
        weight = np.sum(outgoing.reshape(len(alive), -1) ** 2, axis=1)
        saliency = distances * weight[None, :]  # [kept twin i, removed j]
        np.fill_diagonal(saliency, np.inf)
        saliency[~alive, :] = np.inf
        saliency[:, ~alive] = np.inf
        twin, removed = np.unravel_index(np.argmin(saliency), saliency.shape)
        outgoing[twin] += outgoing[removed]
        outgoing[removed] = 0.0
        alive[removed] = False
    rows = np.moveaxis(outgoing, 0, -2).astype(rows.dtype)
    consumer.kernel.assign(chain.consumer_kernel(rows))
    return ~alive


def merge(model, original, copy, chain, pruned, x):
    """Refits `chain`'s consumer in `copy` by least squares (Mariet & Sra's reweighting).

    From the kept units' values in `copy`, a linear map (plus a constant)
    rebuilds each unit's value in the unpruned `model` (its `original` chain),
    positions counted as examples; folded into the consumer's weights, it gives
    the consumer's least-squares fit of its unpruned pre-activations (exactly so
    for a `Dense` reading the units directly). The pruned units' rows become zero.
    The fit and the fold are channel reconstruction's (`_reconstruct`).
    """
    consumer = _graph.unwrapped(chain.consumer)
    kept = ~np.asarray(pruned, bool)
    current = keras.Model(as_functional(copy).inputs[0], chain.tensor)
    target = keras.Model(as_functional(model).inputs[0], original.tensor)
    fit = _reconstruct.Fit(kept, consumer.use_bias)
    for start in range(0, len(x), _BATCH):
        batch = x[start : start + _BATCH]
        fit.add(_reconstruct.values(current(batch, training=False), len(kept)),
                _reconstruct.values(target(batch, training=False), len(kept)))
    linear, constant = fit.solved(f"merge=True refits {consumer.name!r}", stacklevel=4)
    rows = np.moveaxis(chain.consumer_rows(keras.ops.convert_to_numpy(consumer.kernel)), -2, 0)
    new_rows, gained = _reconstruct.fold(rows, kept, linear, constant)
    consumer.kernel.assign(chain.consumer_kernel(np.moveaxis(new_rows, 0, -2)).astype(np.float32))
    if consumer.use_bias:
        consumer.bias.assign((keras.ops.convert_to_numpy(consumer.bias) + gained).astype(np.float32))
