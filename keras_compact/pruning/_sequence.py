"""Channel-group handlers for the layers of sequence models: attention heads, recurrent units, embeddings.

Each handler (`handler(graph, node, layer, inputs)`, as `_groups`' own) returns
`(kind, output layout, None, matrices)`: the `Matrix` views of the layer's
weights that read and write channels, or a reason the layer cannot be mapped.

- `MultiHeadAttention`: its heads are a space of their own (`of="heads"`): head
  h is the query, key and value kernels' slice h (columns) and the output
  kernel's rows h; its output channels a new space. Removing head h is exact when
  the output kernel reads it with zeros: the head's context then adds nothing.
- `GroupQueryAttention`: a space of key/value heads; query head q belongs to
  key/value head `q // (num_query_heads // num_key_value_heads)` (how Keras
  repeats keys), so a group is one key/value head with its query heads.
- `LSTM`, `GRU`, `SimpleRNN`: the units are a space, each gate's block of the
  kernel, recurrent kernel and bias a tiling of it (`positions` = gates); the
  recurrent kernel's rows read it, so a unit goes when its own layer and every
  later layer read it with zeros. `Bidirectional` holds two such spaces,
  concatenated or merged.
- `Embedding`: its output dimensions are a space.

`resize(member, config, values)` writes the layer's new size into its config.
"""

import keras

from keras_compact.pruning import _graph
from keras_compact.pruning._layout import Layout, Matrix, Segment

_GATES = {keras.layers.LSTM: 4, keras.layers.GRU: 3, keras.layers.SimpleRNN: 1}


def _described(layer):
    return f"{type(layer).__name__} {layer.name!r}"


def _by_name(layer, offset=0, parts=2):
    """`{last `parts` names of a variable's path: index into layer.weights}` (by default `(sublayer,
    variable)`; a nested block's MLP kernel is `("transformer_block_1", "mlp", "dense_1", "kernel")`)."""
    return {tuple(variable.path.split("/")[-parts:]): index + offset for index, variable in enumerate(layer.weights)}


def attention(graph, node, layer, inputs):
    described = _described(layer)
    if len(node.outputs) > 1:
        return f"{described} returns its attention scores"
    arguments = node.arguments
    tensors = {"query": arguments.args[0]}
    tensors["value"] = arguments.args[1] if len(arguments.args) > 1 else arguments.kwargs.get("value")
    tensors["key"] = arguments.args[2] if len(arguments.args) > 2 else arguments.kwargs.get("key")
    tensors["key"] = tensors["key"] if tensors["key"] is not None else tensors["value"]
    layouts = {name: graph.resolve(graph.layouts[id(tensor)]) for name, tensor in tensors.items()}
    if any(layout.positions > 1 for layout in layouts.values()):
        return f"channels are flattened into {described}"
    weights = _by_name(layer)
    grouped = isinstance(layer, keras.layers.GroupQueryAttention)
    heads = layer.num_key_value_heads if grouped else layer.num_heads
    known = {(side, part) for side in ("query", "key", "value", "attention_output", "gate")
             for part in ("kernel", "bias")}
    if set(weights) - known or not layer.built:
        return f"{described} has weights the graph cannot map"
    shape = lambda side: tuple(layer.weights[weights[(side, "kernel")]].shape)  # noqa: E731
    output_shape = shape("attention_output")
    if len(output_shape) != 3:
        return f"{described} has an output_shape of several axes"
    head_space = graph.new_space(heads, described, of="heads")
    per_query = (layer.num_query_heads // heads) if grouped else 1

    def spread(size, per_head):  # each head's columns of a kernel: `size` values for each of its `per_head`
        return Layout(tuple(Segment(segment.space, segment.start, segment.stop, per_head * size)
                            for segment in head_space.segments))

    reason = f"the output width of {described} is its query's" if grouped else None
    output = graph.new_space(output_shape[-1], described, reason)
    matrices = []
    for side, source, per_head in (("query", "query", per_query), ("gate", "query", per_query), ("key", "key", 1),
                                   ("value", "value", 1)):
        if (side, "kernel") in weights:
            columns = spread(shape(side)[-1], per_head)
            matrices.append(Matrix(weights[(side, "kernel")], layouts[source], columns, (0,), (1, 2)))
            if (side, "bias") in weights:
                matrices.append(Matrix(weights[(side, "bias")], None, columns, (), (0, 1)))
    rows = spread(output_shape[1], per_query)
    matrices.append(Matrix(weights[("attention_output", "kernel")], rows, output, (0, 1), (2,)))
    if ("attention_output", "bias") in weights:
        matrices.append(Matrix(weights[("attention_output", "bias")], None, output, (), (0,)))
    return "attention", output, None, tuple(matrices)


def _cell_matrices(rnn, inputs, units, offset):
    """The `Matrix` views of one recurrent layer's kernel, recurrent kernel and bias."""
    gated = Layout(units.segments, positions=_GATES[type(rnn)])
    weights = _by_name(rnn, offset)
    cell = rnn.cell.name
    matrices = [Matrix(weights[(cell, "kernel")], inputs, gated, (0,), (1,)),
                Matrix(weights[(cell, "recurrent_kernel")], units, gated, (0,), (1,))]
    if (cell, "bias") in weights:
        bias = rnn.weights[weights[(cell, "bias")] - offset]
        matrices.append(Matrix(weights[(cell, "bias")], None, gated, (), (len(bias.shape) - 1,)))
    return matrices


def _recurrent_reason(rnn, node, inputs):
    described = _described(rnn)
    if type(rnn) not in _GATES or not rnn.built:
        return f"{described} mixes channels in a way the graph cannot map"
    if rnn.return_state or len(node.outputs) > 1:
        return f"{described} returns its states"
    if len(node.arguments.args) > 1 or node.arguments.kwargs.get("initial_state") is not None:
        return f"{described} is given initial states"
    if inputs[0].positions > 1:
        return f"channels are flattened into {described}"
    cell = rnn.cell
    activations = [cell.activation] + ([cell.recurrent_activation] if hasattr(cell, "recurrent_activation") else [])
    if not all(_graph._elementwise(activation) for activation in activations):
        return f"an activation of {described} mixes its units"
    return None


def recurrent(graph, node, layer, inputs):
    reason = _recurrent_reason(layer, node, inputs)
    if reason:
        return reason
    units = graph.new_space(layer.cell.units, _described(layer))
    return "recurrent", units, None, tuple(_cell_matrices(layer, inputs[0], units, 0))


def bidirectional(graph, node, layer, inputs):
    described = _described(layer)
    if layer.merge_mode is None:
        return f"{described} returns its two directions apart (merge_mode=None)"
    matrices, layouts, offset = [], [], 0
    for rnn in (layer.forward_layer, layer.backward_layer):
        reason = _recurrent_reason(rnn, node, inputs)
        if reason:
            return reason
        units = graph.new_space(rnn.cell.units, described)
        matrices += _cell_matrices(rnn, inputs[0], units, offset)
        layouts.append(units)
        offset += len(rnn.weights)
    if layer.merge_mode == "concat":
        output = Layout(layouts[0].segments + layouts[1].segments)
    else:  # sum, ave, mul: channel j of both directions is one channel
        output = graph.align(layouts, described)
    return "bidirectional", output, None, tuple(matrices)


def embedding(graph, node, layer, inputs):
    if [variable.name for variable in layer.weights] != ["embeddings"]:  # not quantized, no LoRA
        return f"{_described(layer)} has weights the graph cannot map"
    output = graph.new_space(layer.output_dim, _described(layer))
    return "embedding", output, None, (Matrix(0, None, output, (), (1,)),)


def resize(member, config, values):
    """Writes into `config` the sizes the member's cut `values` (its `layer.weights`, as NumPy) have."""
    layer = member.layer
    if member.kind == "attention":
        weights = _by_name(layer)
        query, output = values[weights[("query", "kernel")]], values[weights[("attention_output", "kernel")]]
        if isinstance(layer, keras.layers.GroupQueryAttention):
            config["num_query_heads"] = query.shape[1]
            config["num_key_value_heads"] = values[weights[("key", "kernel")]].shape[1]
        else:
            config["num_heads"] = query.shape[1]
            if output.shape[-1] != layer.weights[weights[("attention_output", "kernel")]].shape[-1]:
                config["output_shape"] = (int(output.shape[-1]),)
    elif member.kind == "recurrent":
        config["units"] = _units(layer, values, 0)
    elif member.kind == "bidirectional":
        forward = len(layer.forward_layer.weights)
        for key, rnn, offset in (("layer", layer.forward_layer, 0), ("backward_layer", layer.backward_layer, forward)):
            config[key]["config"]["units"] = _units(rnn, values, offset)
            config[key].pop("build_config", None)  # built on the new input width when called
    elif member.kind == "embedding":
        config["output_dim"] = values[0].shape[1]


def _units(rnn, values, offset):
    return int(values[_by_name(rnn, offset)[(rnn.cell.name, "recurrent_kernel")]].shape[0])

