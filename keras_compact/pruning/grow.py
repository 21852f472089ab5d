"""Adding units to a layer without changing what the model computes."""

import keras
import numpy as np

from keras_compact._checks import is_int
from keras_compact._cloning import clone_with
from keras_compact.pruning import _graph


def grow(model, layer_name, units):
    """A copy of `model` with `units` more units (filters) in the layer `layer_name`.

    The old weights are copied; the new units' incoming weights and biases come
    from the layer's own initializers, and the weights of the next layer that
    read them are zero, so the grown model computes exactly what `model` does
    until training moves them. A `BatchNormalization` between the two gets the
    new channels at its initial values. With `keras_compact.regularizers.FanIn`
    / `FanOut`, `prune` and `shrink`, this is the "grow" half of non-parametric
    networks (Philipp & Carbonell, "Nonparametric Neural Networks", 2017).

    Args:
        model: a Sequential or functional model.
        layer_name: the name of a `Dense`, `Conv1D` or `Conv2D` layer of `model`
            whose units feed one layer (as `shrink` needs).
        units: how many units to add, an integer >= 1.

    Returns:
        The new model; `model` is not changed.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu", name="hidden"),
    ...                           keras.layers.Dense(2)])
    >>> wider = grow(model, "hidden", 3)
    >>> wider.get_layer("hidden").units
    7
    """
    if not is_int(units) or units < 1:
        raise ValueError(f"units must be an integer >= 1. Received: units={units!r}")
    layers = {layer.name: layer for layer in model.layers}
    if layer_name not in layers:
        raise ValueError(
            f"layer_name must name a layer of {model.name!r}. Received: layer_name={layer_name!r}; "
            f"layers: {sorted(layers)}"
        )
    producer = layers[layer_name]
    if not isinstance(producer, _graph.RESIZABLE):
        raise ValueError(
            f"grow adds units to Dense, Conv1D and Conv2D layers. Received: layer_name={layer_name!r}, "
            f"a {type(producer).__name__}"
        )
    chain = _graph.chains(model)[layer_name]
    if isinstance(chain, _graph.Blocked):
        raise ValueError(f"grow cannot add units to {layer_name!r}: {chain}.")
    configs, weights = {}, {}
    kernel, bias = _graph.kernel_and_bias(producer, weights)
    added_kernel = keras.ops.convert_to_numpy(producer.kernel_initializer(kernel.shape[:-1] + (units,)))
    weights[layer_name] = [np.concatenate([kernel, added_kernel], axis=-1)]
    if bias is not None:
        added_bias = keras.ops.convert_to_numpy(producer.bias_initializer((units,)))
        weights[layer_name].append(np.concatenate([bias, added_bias]))
    configs[layer_name] = producer.get_config()
    configs[layer_name]["units" if isinstance(producer, keras.layers.Dense) else "filters"] = kernel.shape[-1] + units
    for layer in chain.between:
        if isinstance(layer, keras.layers.BatchNormalization):
            fresh = type(layer).from_config(layer.get_config())
            fresh.build((None, units))
            weights[layer.name] = [
                np.concatenate([keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new)])
                for old, new in zip(layer.weights, fresh.weights)
            ]
    consumer = chain.consumer
    kernel, bias = _graph.kernel_and_bias(consumer, weights)
    rows = chain.consumer_rows(kernel)
    zeros = np.zeros(rows.shape[:-2] + (units, rows.shape[-1]), rows.dtype)
    weights[consumer.name] = [chain.consumer_kernel(np.concatenate([rows, zeros], axis=-2))]
    if bias is not None:
        weights[consumer.name].append(bias)
    return clone_with(model, lambda layer: _graph.replacement(layer, configs, weights))
