"""Physically removing pruned units and filters from a model."""

import keras
import numpy as np

from keras_compact.layers.targeted_dropout import TargetedDropout
from keras_compact.pruning.prune import PruningMask

_SHRINKABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
# Layers that act on each channel (the last axis) on its own, mapping zeros to zeros.
_CHANNELWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)


def shrink(model):
    """Rebuilds a unit-pruned Sequential model without its pruned units and filters.

    A unit (or filter) whose incoming weights and bias are all zero outputs
    `activation(0) = 0`, so removing it, and the next layer's weights that read
    it, leaves the outputs unchanged; the model gets smaller and faster. Units of
    the last layer (the classes) are kept. Use after
    `prune(model, sparsity, granularity="unit")` (and fine-tuning): `PruningMask`
    and `TargetedDropout` wrappers are removed on the way.

    Supported: Sequential models of `Dense`, `Conv1D`, `Conv2D`, `Flatten` and
    channel-wise layers (activations, dropout, pooling), with activations that
    map 0 to 0 after a shrunk layer. Anything else raises a `ValueError` naming
    the layer.

    Returns:
        A new Sequential model with its own weights.

    Example:

    >>> pruned = prune(model, 0.5, granularity="unit").model  # doctest: +SKIP
    >>> smaller = shrink(pruned)  # doctest: +SKIP
    """
    if not isinstance(model, keras.Sequential) or not model.inputs:
        raise ValueError(
            "shrink rebuilds Sequential models built with keras.Input. "
            f"Received: {type(model).__name__} {model.name!r}"
        )
    layers = list(model.layers)
    last_weighted = max(i for i, layer in enumerate(layers) if _weights_of(layer) is not None)
    source = model.inputs[0]
    rebuilt = [keras.Input(source.shape[1:], dtype=source.dtype, name=source.name)]
    weights = []
    kept = None  # indices of the channels (last axis) still present, None for all
    for index, layer in enumerate(layers):
        values = _weights_of(layer)
        if values is not None:
            inner, kernel, bias = values
            if kept is not None:
                kernel = np.take(kernel, kept, axis=-2)
            columns = kernel.reshape(-1, kernel.shape[-1])
            removable = ~columns.any(axis=0)
            if bias is not None:
                removable &= bias == 0
            if index == last_weighted or not _maps_zero_to_zero(inner.activation):
                removable[:] = False
            keep = np.flatnonzero(~removable)
            config = inner.get_config()
            config["units" if isinstance(inner, keras.layers.Dense) else "filters"] = len(keep)
            rebuilt.append(type(inner).from_config(config))
            weights.append((len(rebuilt) - 1, [kernel[..., keep]] + ([bias[keep]] if bias is not None else [])))
            kept = None if len(keep) == kernel.shape[-1] else keep
        elif isinstance(layer, keras.layers.Flatten):
            if kept is not None:
                positions = int(np.prod(layer.input.shape[1:-1]))
                channels = layer.input.shape[-1]
                kept = np.asarray([p * channels + c for p in range(positions) for c in kept])
            rebuilt.append(type(layer).from_config(layer.get_config()))
        elif isinstance(layer, _CHANNELWISE):
            if kept is not None and isinstance(layer, keras.layers.Activation):
                if not _maps_zero_to_zero(layer.activation):
                    raise ValueError(
                        f"shrink cannot remove units before Activation {layer.name!r}: its "
                        "activation does not map 0 to 0, so removed units would change the output."
                    )
            rebuilt.append(type(layer).from_config(layer.get_config()))
        else:
            raise ValueError(
                f"shrink does not support layer {layer.name!r} ({type(layer).__name__}); it handles "
                "Dense, Conv1D, Conv2D, Flatten, activations, dropout and pooling."
            )
    smaller = keras.Sequential(rebuilt, name=f"{model.name}_shrunk")
    for position, values in weights:
        smaller.layers[position - 1].set_weights(values)
    return smaller


def _weights_of(layer):
    """`(inner layer, kernel, bias or None)` as NumPy, pruning masks applied; None
    for a layer without a kernel."""
    inner = layer.layer if isinstance(layer, (PruningMask, TargetedDropout)) else layer
    if not hasattr(inner, "kernel"):
        return None
    if not isinstance(inner, _SHRINKABLE):
        raise ValueError(
            f"shrink does not support layer {inner.name!r} ({type(inner).__name__}); it handles "
            "Dense, Conv1D, Conv2D, Flatten, activations, dropout and pooling."
        )
    if isinstance(layer, PruningMask):
        values = dict((id(variable), value) for variable, value in layer.masked_values())
    else:
        values = {}
    kernel = np.asarray(values.get(id(inner.kernel), inner.kernel.value))
    bias = np.asarray(values.get(id(inner.bias), inner.bias.value)) if inner.use_bias else None
    return inner, kernel, bias


def _maps_zero_to_zero(activation):
    return float(np.asarray(activation(np.zeros((1, 1), np.float32))).ravel()[0]) == 0.0
