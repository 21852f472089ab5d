"""Physically removing pruned units and filters from a model."""

import keras
import numpy as np

from keras_compact._cloning import clone_with
from keras_compact.pruning import _graph
from keras_compact.pruning.prune import strip


def shrink(model):
    """Rebuilds a unit-pruned model without its pruned units and filters.

    A unit (or filter) whose incoming weights and bias are all zero outputs the
    constant `activation(0)`, so removing it, with the weights of the next layer
    that read it, leaves the outputs unchanged; the model gets smaller and
    faster. Where the constant is not zero (a sigmoid, or a
    `BatchNormalization` after the layer) it is folded into the next layer's
    bias. Units that are model outputs (the classes) are kept. Use after
    `prune(model, sparsity, granularity="unit")` (and fine-tuning);
    `PruningMask` and `TargetedDropout` wrappers are removed on the way.

    Works on Sequential and functional models whose pruned `Dense`, `Conv1D`
    and `Conv2D` layers feed one layer, directly or through channel-wise layers
    (activations, dropout, `BatchNormalization`, pooling, `Flatten`). A pruned
    layer whose units branch, reach an `Add` or `Concatenate`, or cannot be
    removed exactly raises a `ValueError` naming it and saying why. `model` is
    not changed.

    Returns:
        A new model of the same kind with its own weights.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> smaller = shrink(keras_compact.pruning.prune(model, 0.5, granularity="unit").model)
    >>> smaller.layers[0].units
    3
    """
    plain = strip(model)
    found = _graph.chains(plain)
    configs, weights = {}, {}
    for layer in plain.layers:
        if not isinstance(layer, _graph.RESIZABLE):
            _refuse_nested(layer)
            continue
        kernel, bias = _graph.kernel_and_bias(layer, weights)
        removable = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
        if bias is not None:
            removable &= bias == 0
        chain = found[layer.name]
        if not removable.any() or (isinstance(chain, _graph.Blocked) and chain.output):
            continue
        if isinstance(chain, _graph.Blocked):
            raise ValueError(f"shrink cannot remove the {removable.sum()} pruned units of {layer.name!r}: {chain}.")
        if removable.all():
            raise ValueError(f"shrink cannot remove every unit of {layer.name!r}; keep at least one.")
        _remove(chain, removable, configs, weights)
    return clone_with(plain, lambda layer: _graph.replacement(layer, configs, weights))


def _refuse_nested(layer):
    if isinstance(layer, keras.Model) and any(isinstance(l, _graph.RESIZABLE) for l in layer._flatten_layers()):
        raise ValueError(
            f"shrink works on one graph; {layer.name!r} is a nested model. Shrink it on its own, "
            "or build the model flat."
        )


def _remove(chain, removable, configs, weights):
    producer, consumer = chain.producer, chain.consumer
    kept = np.flatnonzero(~removable)
    kernel, bias = _graph.kernel_and_bias(producer, weights)
    weights[producer.name] = [kernel[..., kept]] + ([bias[kept]] if bias is not None else [])
    configs.setdefault(producer.name, producer.get_config())
    configs[producer.name]["units" if isinstance(producer, keras.layers.Dense) else "filters"] = len(kept)
    for layer in chain.between:
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[layer.name] = [keras.ops.convert_to_numpy(v)[kept] for v in layer.weights]
    constant = _graph.constants(chain, len(removable))
    kernel, bias = _graph.kernel_and_bias(consumer, weights)
    rows = chain.consumer_rows(kernel)
    removed = np.flatnonzero(removable)
    folded = (rows[..., removed, :] * constant[removed][:, None]).reshape(-1, rows.shape[-1]).sum(axis=0)
    if np.any(folded != 0):
        padding = getattr(consumer, "padding", "valid")
        if padding != "valid":
            raise ValueError(
                f"shrink cannot remove the pruned units of {producer.name!r} exactly: they reach "
                f"{consumer.name!r} as non-zero constants, and its padding={padding!r} pads them with zeros."
            )
        configs.setdefault(consumer.name, consumer.get_config())["use_bias"] = True
        bias = (np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias) + folded.astype(kernel.dtype)
    kernel = chain.consumer_kernel(rows[..., kept, :])
    weights[consumer.name] = [kernel] + ([bias] if bias is not None else [])
