"""Adding units to a layer without changing what the model computes."""

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import positive_int_errors, raise_errors
from keras_compact._cloning import check_model, clone_with
from keras_compact.layers.targeted_dropout import SEPARABLE_LAYERS, TRANSPOSED_LAYERS
from keras_compact.pruning import _graph, _groups

GROWABLE = _graph.RESIZABLE + TRANSPOSED_LAYERS + SEPARABLE_LAYERS


def grow(model, layer_name, units):
    """A copy of `model` with `units` more channels in the group `layer_name` computes.

    The old weights are copied. The new channels' filters and biases come from
    each producer's own initializers, a `BatchNormalization` or
    `DepthwiseConv2D` on the way gets them at its initial values, and every
    layer that reads them reads them with zero weights, so the grown model
    computes exactly what `model` does until training moves them. The channels
    grow through their whole channel group (`channel_groups`): every producer
    of a residual stage, the depthwise convolution that carries them, the
    squeeze-and-excitation gate that scales them, their slice of a
    `Concatenate`. With `keras_compact.regularizers.FanIn` / `FanOut`, `prune`
    and `shrink`, this is the "grow" half of non-parametric networks (Philipp &
    Carbonell, "Nonparametric Neural Networks", 2017).

    Args:
        model: a Sequential or functional model.
        layer_name: the name of a `Dense` or convolution (`Conv1D`/`2D`/`3D`,
            transposed, separable) of `model` whose channels are prunable (not a
            model output, see `channel_groups`).
        units: how many channels to add, an integer >= 1. For a grouped
            convolution (and a layer joined to one), a multiple of how many
            groups its output holds: each group grows alike.

    Returns:
        The new model; `model` is not changed.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu", name="hidden"),
    ...                           keras.layers.Dense(2)])
    >>> wider = grow(model, "hidden", 3)
    >>> wider.get_layer("hidden").units
    7
    """
    check_model(model, "grow", graph=True)
    raise_errors(positive_int_errors(units=units))
    layers = {layer.name: layer for layer in _keras_private.sublayers(model, include_self=False)}
    if layer_name not in layers:
        raise ValueError(
            f"layer_name must name a layer of {model.name!r}. Received: layer_name={layer_name!r}; "
            f"layers: {sorted(layers)}"
        )
    producer = layers[layer_name]
    if not isinstance(producer, GROWABLE):
        raise ValueError(
            f"grow adds units to Dense and convolution layers ({', '.join(c.__name__ for c in GROWABLE)}). "
            f"Received: layer_name={layer_name!r}, a {type(producer).__name__}"
        )
    graph = _groups.analyse(model)
    group = _groups.ChannelGroups(graph).group_of(layer_name)
    if group is None or not group.prunable:
        reason = group.reason if group is not None else f"{layer_name!r} computes no channel group"
        if reason == "its channels are a model output":
            reason = f"the units of {layer_name!r} are a model output"
        raise ValueError(f"grow cannot add units to {layer_name!r}: {reason}.")
    # A grouped convolution's output holds its group's channels once per group (and so does every
    # layer joined to one): each new channel of the group is that many channels of the layer.
    member = next(m for m in graph.members if m.layer.name == layer_name)
    roots, _ = graph.addresses(member.output)
    copies = int(np.sum(roots == group.root)) // group.size
    if units % copies:
        raise ValueError(
            f"grow adds the same channels to each of the {copies} groups of {layer_name!r}'s channels: units "
            f"must be a multiple of {copies}. Received: units={units}"
        )
    plan = {group.root: np.concatenate([np.arange(group.size), np.full(units // copies, -1)])}
    configs, weights = {}, {}
    _groups.edit(graph, plan, weights, configs)
    return clone_with(model, lambda layer: _graph.replacement(layer, configs, weights))
