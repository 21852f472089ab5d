"""What a model costs to run, counted from its layer shapes."""

import math
import re
import warnings

import keras

from keras_compact import _keras_private, layer_types
from keras_compact._cloning import as_functional, check_model, is_graph_model
from keras_compact.pruning import _graph

def macs(model):
    """Multiply-accumulates of one example through `model`.

    Counted from the shapes in the model's graph (each call of a layer counts,
    nested models included):
    - a convolution costs its output positions times its kernel size (divided by
      its groups); a depthwise convolution its output positions times its kernel
      window per output channel; a separable one both parts; a transposed one its
      input positions times its kernel size;
    - a `Dense` or `EinsumDense` its kernel's contracted size per output value;
    - a `MultiHeadAttention` (or `GroupQueryAttention`) its four projections and
      its two products, query x key and scores x value, per head;
    - an `LSTM`, `GRU` or `SimpleRNN` (or a `Bidirectional` pair) its kernel and
      recurrent kernel at every step of the sequence; a `QRNN` its gate
      convolutions at every step.
    Activations, normalization, lookups, hashing and additions are left out, as papers count
    (DepGraph's "MACs" and Torch-Pruning's `count_ops_and_params`). A layer with
    weights that none of these rules counts (a subclassed block, a sequence of
    unknown length) is named in a warning, not counted as 0 in silence.
    `PruningMask` zeros are counted: only `shrink` makes a model cheaper.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
    ...                           keras.layers.Dense(10)])
    >>> macs(model)  # 6 * 6 * (3 * 3 * 3) * 4 + 144 * 10
    5328
    """
    check_model(model, "macs", graph=True)
    total, uncounted = _count(model)
    if uncounted:
        names = ", ".join(f"{name!r} ({kind})" for name, kind in dict.fromkeys(uncounted))
        warnings.warn(
            f"macs counts no multiply-accumulates for layer(s) {names} of {model.name!r}, which hold weights: "
            "their cost is not in the total. (A subclassed layer's inner computation is not in the model's "
            "graph; a recurrent layer needs a known sequence length.)",
            stacklevel=2,
        )
    return int(total)


def _count(model):
    """`(MACs, [(name, type) of layers with weights it could not count])`."""
    total, uncounted = 0, []
    for node in _keras_private.nodes(as_functional(model)):
        layer = _unwrapped(node.operation)
        if is_graph_model(layer):
            inner, missed = _count(_on_known_shapes(layer, node))
            total, uncounted = total + inner, uncounted + missed
        elif isinstance(layer, keras.layers.Layer) and node.outputs:
            counter = layer_types.lookup(layer).macs
            cost = counter(layer, _input_shapes(node), tuple(node.outputs[0].shape)) if counter else None
            if cost is None and not _elementwise(layer):
                uncounted.append((layer.name, type(layer).__name__))
            total += cost or 0
    return total, uncounted


def _on_known_shapes(model, node):
    """`model` (a nested functional model) traced again on the shapes it is called on where they say more
    than its own inputs (a KerasHub backbone built for any sequence length, called on inputs of 8 tokens):
    a copy whose layers have the same shapes, counted instead. `model` itself where they say nothing more."""
    given = node.arguments.keras_tensors
    struct = _keras_private.inputs_struct(model)
    own = keras.tree.flatten(struct) if struct is not None else []
    if len(given) != len(own) or all(tuple(a.shape) == tuple(b.shape) for a, b in zip(given, own)):
        return model
    inputs = keras.tree.pack_sequence_as(struct, [
        keras.Input(batch_shape=tuple(tensor.shape), dtype=inner.dtype, name=inner.name)
        for tensor, inner in zip(given, own)])
    try:
        return keras.models.clone_model(model, input_tensors=inputs)
    except (ValueError, TypeError):  # a graph that will not trace on them: counted on its own shapes
        return model


def _elementwise(layer):
    """Whether a layer these rules do not count costs no multiply-accumulates: no weights, or only
    weights of rank 0 or 1 (per-channel scales and shifts, as ConvNeXt's LayerScale)."""
    return all(len(weight.shape) <= 1 for weight in layer.weights)


def _input_shapes(node):
    """The shapes of the call's tensor arguments: positional ones first, then an attention layer's `query`,
    `value` and `key` by name, then any other named tensor (a decoder's `encoder_sequence`)."""
    arguments = node.arguments
    named = sorted(arguments.kwargs, key=lambda name: ("query", "value", "key").index(name)
                   if name in ("query", "value", "key") else 3)
    tensors = list(arguments.args) + [arguments.kwargs[name] for name in named]
    return [tuple(tensor.shape) for tensor in tensors if isinstance(tensor, keras.KerasTensor)]


def _unwrapped(layer):
    """The layer inside this package's wrappers and Keras's (`TimeDistributed` counts its layer at every
    step through the output's shape); a `Bidirectional` stays itself."""
    layer = _graph.unwrapped(layer)
    while isinstance(layer, keras.layers.Wrapper) and not isinstance(layer, keras.layers.Bidirectional):
        layer = _graph.unwrapped(layer.layer)
    return layer


def _positions(shape):
    return math.prod(size for size in shape[1:-1] if size is not None)


# One call's MACs by layer type, `counter(layer, input shapes, output shape)` (`layer_types`' `macs`):
# an int, or None where it cannot be counted.
def free(layer, input_shapes, output_shape):
    """Lookups, normalizations, per-channel slopes, a ProjectionLayer's hashing, a HadamardClassifier's
    +/-1 sums: no multiply-accumulates as papers count them."""
    return 0


def kernel(layer, input_shapes, output_shape):
    """A `Dense` or convolution: its output positions times its kernel size."""
    return _positions(output_shape) * math.prod(layer.kernel.shape)


def depthwise(layer, input_shapes, output_shape):
    return _positions(output_shape) * math.prod(layer.kernel_size) * output_shape[-1]


def separable(layer, input_shapes, output_shape):
    return _positions(output_shape) * (math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape))


def transposed(layer, input_shapes, output_shape):
    """A transposed convolution: its input positions times its kernel size."""
    return _positions(input_shapes[0]) * math.prod(layer.kernel.shape)


def qrnn(layer, input_shapes, output_shape):
    """A `QRNN`'s gate convolutions at every step; the pooling is elementwise."""
    return input_shapes[0][1] * sum(math.prod(gates.kernel.shape) for gates in layer.gates)


def bidirectional(layer, input_shapes, output_shape):
    return _sum(_recurrent_macs(inner, input_shapes[0]) for inner in (layer.forward_layer, layer.backward_layer))


def recurrent(layer, input_shapes, output_shape):
    return _recurrent_macs(layer, input_shapes[0])


def attention(layer, input_shapes, output_shape):
    return _attention_macs(layer, input_shapes)


def einsum(layer, input_shapes, output_shape):
    return _einsum_macs(layer, input_shapes[0], output_shape)


def _sum(costs):
    costs = list(costs)
    return None if any(cost is None for cost in costs) else sum(costs)


def _einsum_macs(layer, input_shape, output_shape):
    """Each output value costs the product of the kernel's contracted axes (those not in the output). The
    output's sizes come from the input's and the kernel's axes of the same letter (a `None` in
    `output_shape=` stays None in the graph), the batch axis left out."""
    equation = layer.equation.replace(" ", "")
    inputs, kernel, output = re.split(r",|->", equation)
    contracted = math.prod(size for axis, size in zip(kernel, layer.kernel.shape) if axis not in output)
    if "." in equation:  # an ellipsis: the graph's output shape, as far as it is known
        return math.prod(size for size in output_shape[1:] if size is not None) * contracted
    sizes = dict(zip(inputs, input_shape))
    sizes.update(zip(kernel, layer.kernel.shape))
    values = math.prod(sizes.get(axis) or 1 for axis in output[1:])
    return values * contracted


def _attention_macs(layer, input_shapes):
    """The query, key, value and output projections, and per head query x key and scores x value."""
    query, key, value, output = _keras_private.attention_projections(layer)
    query_length = _positions(input_shapes[0])
    value_length = _positions(input_shapes[1] if len(input_shapes) > 1 else input_shapes[0])
    heads, key_size = query.kernel.shape[-2], query.kernel.shape[-1]
    value_size = value.kernel.shape[-1]
    projections = (query_length * math.prod(query.kernel.shape) + value_length * math.prod(key.kernel.shape)
                   + value_length * math.prod(value.kernel.shape) + query_length * math.prod(output.kernel.shape))
    products = heads * query_length * value_length * (key_size + value_size)
    return projections + products


def _recurrent_macs(layer, input_shape):
    """The kernel and the recurrent kernel, at every step; None for a sequence of unknown length."""
    steps = input_shape[1] if len(input_shape) > 2 else None
    if steps is None or layer_types.lookup(layer).macs is not recurrent:
        return None
    cell = layer.cell
    return steps * (math.prod(cell.kernel.shape) + math.prod(cell.recurrent_kernel.shape))
