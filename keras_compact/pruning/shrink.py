"""Physically removing pruned units and filters from a model."""

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._cloning import check_model, clone_with
from keras_compact.layers.targeted_dropout import SUPPORTED_LAYERS
from keras_compact.pruning import _graph, _groups
from keras_compact.pruning.prune import strip


def shrink(model):
    """Rebuilds a pruned model without its pruned units, filters and channels.

    Two kinds of pruned channel are removed, with the weights of every layer
    that reads them:

    - a channel every reader reads with zero weights (what
      `prune(..., granularity="channel")` leaves): removed from its whole
      channel group (`channel_groups`), through residual adds, depthwise
      convolutions, concatenations, squeeze-and-excitation gates, normalization
      and `Flatten`/`Reshape`, exactly, whatever the padding;
    - a unit (or filter) whose incoming weights and bias are all zero (what
      `granularity="unit"` leaves): it outputs the constant `activation(0)`,
      folded into the next layer's bias where it is not zero (a sigmoid, or a
      `BatchNormalization` after the layer). Such a unit must feed one layer,
      directly or through channel-wise layers.

    Units that are model outputs (the classes) are kept. `PruningMask` and
    `TargetedDropout` wrappers are removed on the way. A pruned unit that cannot
    be removed exactly (it branches or reaches an `Add`, or a non-zero constant
    meets `padding="same"`), or a zeroed `DepthwiseConv2D` channel whose group
    keeps it, raises a `ValueError` naming the layer and saying why. `model` is
    not changed. After removing channels of a network with
    `BatchNormalization`, fine-tune it or `recalibrate_batch_norm` it.

    Returns:
        A new model of the same kind with its own weights.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> smaller = shrink(keras_compact.pruning.prune(model, 0.5, granularity="unit").model)
    >>> smaller.layers[0].units
    3
    """
    check_model(model, "shrink", graph=True)
    plain = strip(model)
    graph = _groups.analyse(plain)
    by_group = _groups.removable(graph)
    configs, weights = _fold_constant_units(plain, graph, by_group)
    if configs:
        plain = clone_with(plain, lambda layer: _graph.replacement(layer, configs, weights))
        graph = _groups.analyse(plain)
        by_group = _groups.removable(graph)
    configs, weights = {}, {}
    _groups.cut(graph, {root: ~gone for root, gone in by_group.items()}, weights, configs)
    return clone_with(plain, lambda layer: _graph.replacement(layer, configs, weights))


def _fold_constant_units(plain, graph, by_group):
    """The edits that remove units with zero incoming weights (their constant folded
    into the reader), except those the group pass removes."""
    found = _graph.chains(plain)
    members = {member.layer.name: member for member in graph.members}
    kept = {root: ~gone for root, gone in by_group.items()}
    configs, weights = {}, {}
    top = {id(layer) for layer in plain.layers}
    cut_whole = {id(inner) for member in graph.members if member.matrices  # a KerasHub block's Dense: its group's
                 for inner in _keras_private.sublayers(member.layer, include_self=False)}
    for layer in _keras_private.sublayers(plain, include_self=False):
        if not isinstance(layer, SUPPORTED_LAYERS) or not layer.weights or id(layer) in cut_whole:
            continue  # without weights: a layer a custom block holds but never built (KerasHub's EfficientNet)
        kernel, bias = _graph.kernel_and_bias(layer, weights)  # a separable convolution's: its pointwise kernel
        dead = ~_graph.columns(kernel, layer).any(axis=0) & (bias == 0 if bias is not None else True)
        if layer.name in members:
            dead &= graph.kept(members[layer.name].output, kept)
        if not dead.any():
            continue
        chain = found.get(layer.name) if id(layer) in top else _graph.Blocked(
            f"{layer.name!r} is inside a nested model, where units are not folded")
        if _foldable(layer, chain, dead, outputs=plain.outputs if id(layer) in top else []):
            _remove(chain, dead, configs, weights)
    return configs, weights


def _foldable(layer, chain, dead, outputs):
    """Whether the `dead` units of `layer` are folded through `chain`; False for units of a model
    output (`outputs`: the model's, for a layer of its own graph), which stay (removing them would
    remove classes); raises where they cannot go."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        raise ValueError(
            f"shrink cannot remove the {dead.sum()} zeroed channels of DepthwiseConv2D {layer.name!r}: a "
            "depthwise channel is the channel it reads, so the layers before it would change too. Prune "
            "with granularity='channel', which removes the whole channel group."
        )
    if not isinstance(layer, _graph.RESIZABLE):
        if any(tensor is layer.output for tensor in outputs):
            return False
        raise ValueError(
            f"shrink cannot remove the {dead.sum()} pruned units of {type(layer).__name__} {layer.name!r}: "
            "units of this layer type are removed only with their channel group. Prune with "
            "granularity='channel'."
        )
    if isinstance(chain, _graph.Blocked) and chain.output:
        return False
    if isinstance(chain, _graph.Blocked):
        raise ValueError(
            f"shrink cannot remove the {dead.sum()} pruned units of {layer.name!r}: {chain}. Prune with "
            "granularity='channel' to remove channels through it."
        )
    if dead.all():
        raise ValueError(f"shrink cannot remove every unit of {layer.name!r}; keep at least one.")
    return True


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
        if padding != "valid" and any(size > 1 for size in getattr(consumer, "kernel_size", ())):
            raise ValueError(
                f"shrink cannot remove the pruned units of {producer.name!r} exactly: they reach "
                f"{consumer.name!r} as non-zero constants, and its padding={padding!r} pads them with zeros."
            )
        configs.setdefault(consumer.name, consumer.get_config())["use_bias"] = True
        bias = (np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias) + folded.astype(kernel.dtype)
    kernel = chain.consumer_kernel(rows[..., kept, :])
    weights[consumer.name] = [kernel] + ([bias] if bias is not None else [])
