"""What a model costs to run, counted from its layer shapes."""

import math

import keras

from keras_compact import _keras_private
from keras_compact._cloning import as_functional, check_model, is_graph_model
from keras_compact.pruning import _graph


def macs(model):
    """Multiply-accumulates of one example through `model`'s `Dense` and convolution layers.

    Counted from the shapes in the model's graph (each call of a layer counts,
    nested models included): a convolution costs its output positions times its
    kernel size (divided by its groups), a `DepthwiseConv2D` its output positions
    times its kernel window per output channel, a `Dense` its kernel size per
    position it is applied at. Activations, normalization and additions are left
    out, as papers count (DepGraph's "MACs" and Torch-Pruning's `count_ops_and_params`).
    `PruningMask` zeros are counted: only `shrink` makes a model cheaper.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
    ...                           keras.layers.Dense(10)])
    >>> macs(model)  # 6 * 6 * (3 * 3 * 3) * 4 + 144 * 10
    5328
    """
    check_model(model, "macs", graph=True)
    graph = as_functional(model)
    total = 0
    for node in _keras_private.nodes(graph):
        layer = _graph.unwrapped(node.operation)
        if is_graph_model(layer):
            total += macs(layer)
        elif isinstance(layer, keras.layers.Layer) and node.outputs:
            total += _layer_macs(layer, node.outputs[0].shape)
    return int(total)


def _layer_macs(layer, output_shape):
    positions = math.prod(size for size in output_shape[1:-1] if size is not None)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return positions * math.prod(layer.kernel_size) * output_shape[-1]
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        depthwise = math.prod(layer.depthwise_kernel.shape)
        return positions * (depthwise + math.prod(layer.pointwise_kernel.shape))
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)):
        inputs = math.prod(size for size in layer.input.shape[1:-1] if size is not None)
        return inputs * math.prod(layer.kernel.shape)
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return positions * math.prod(layer.kernel.shape)
    return 0
