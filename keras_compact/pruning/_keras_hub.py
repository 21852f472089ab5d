"""KerasHub's transformer blocks in the table of layer types: their feed-forward units as a channel group.

A `keras_hub.layers.TransformerEncoder` (or `TransformerDecoder`) is one
subclassed layer holding its attention, `LayerNormalization`s and feed-forward
`Dense` pair. Its feed-forward hidden units are a space: unit u is column u of
`feedforward_intermediate_dense` (kernel and bias) and row u of
`feedforward_output_dense`'s kernel, the one reader; `shrink` rebuilds the block
with a smaller `intermediate_dim`. The residual stream it reads and writes
passes its `LayerNormalization`s, which mix every channel: blocked. Its heads
are not a group: KerasHub builds the block's attention with `key_dim =
hidden_dim // num_heads`, so a block with fewer heads has wider ones, the same
weights and the same MACs.

A `ViTBackbone`'s `ViTEncoder` holds all its blocks in one layer whose config
has one `mlp_dim`: the MLP units of every block are one space (unit u of each
block goes together, the group's importance summed over blocks), so the
encoder keeps one `mlp_dim`.

The rows are keyed by the classes' qualified names (`layer_types.define_by_name`):
KerasHub is not imported to know them.
"""

import math

from keras_compact.pruning import _graph, cost
from keras_compact.pruning._layout import Matrix
from keras_compact.pruning._sequence import _by_name, _described

BLOCKS = ("keras_hub.src.layers.modeling.transformer_encoder.TransformerEncoder",
          "keras_hub.src.layers.modeling.transformer_decoder.TransformerDecoder")
VIT_ENCODER = "keras_hub.src.models.vit.vit_layers.ViTEncoder"
VIT_EMBEDDING = "keras_hub.src.models.vit.vit_layers.ViTPatchingAndEmbedding"
# Lookups: no multiply-accumulates.
LOOKUPS = ("keras_hub.src.layers.modeling.position_embedding.PositionEmbedding",
           "keras_hub.src.layers.modeling.token_and_position_embedding.TokenAndPositionEmbedding")
_INTERMEDIATE, _OUTPUT = "feedforward_intermediate_dense", "feedforward_output_dense"
_ATTENTION = ("_self_attention_layer", "_cross_attention_layer")


def transformer_block(graph, node, layer, inputs):
    described = _described(layer)
    if len(node.outputs) > 1:
        return f"{described} returns its attention scores"
    if not layer.built:
        return f"{described} is not built"
    reason = (f"{described} normalises its residual stream (the LayerNormalization inside the block mixes every "
              "channel)")
    for layout in inputs:
        graph.block(layout, reason)
    output = graph.new_space(node.outputs[0].shape[-1], described, reason)
    weights = _by_name(layer)
    if {(_INTERMEDIATE, "kernel"), (_OUTPUT, "kernel")} - set(weights):
        return output_only(output)
    intermediate = layer._feedforward_intermediate_dense
    units = graph.new_space(intermediate.units, described)
    if not _graph._elementwise(intermediate.activation):
        graph.block(units, f"the activation of {described}'s feed-forward layer mixes its units")
    matrices = [Matrix(weights[(_INTERMEDIATE, "kernel")], None, units, (), (1,)),
                Matrix(weights[(_OUTPUT, "kernel")], units, None, (0,), ())]
    if (_INTERMEDIATE, "bias") in weights:
        matrices.append(Matrix(weights[(_INTERMEDIATE, "bias")], None, units, (), (0,)))
    return "transformer_block", output, None, tuple(matrices)


def output_only(output):
    return "transformer_block", output, None, ()


def resize(member, config, values):
    """The block's new `intermediate_dim`: its output kernel's rows."""
    config["intermediate_dim"] = int(values[_by_name(member.layer)[(_OUTPUT, "kernel")]].shape[0])


def macs(layer, input_shapes, output_shape):
    """Each attention (projections and products, per head) and the feed-forward pair at every position; None
    for a sequence of unknown length."""
    shapes = list(input_shapes) + [None] * (2 - len(input_shapes))
    sequence, other = shapes[0], shapes[1] or shapes[0]
    if sequence is None or any(size is None for size in sequence[1:-1]) or any(size is None for size in other[1:-1]):
        return None
    total = 0
    for name, value_shape in zip(_ATTENTION, (sequence, other)):
        attention = getattr(layer, name, None)
        if attention is not None and attention.built:
            total += cost.attention(attention, [sequence, value_shape], output_shape)
    positions = math.prod(sequence[1:-1])
    for dense in (layer._feedforward_intermediate_dense, layer._feedforward_output_dense):
        total += positions * math.prod(dense.kernel.shape)
    return total


def _residual(graph, node, layer, inputs):
    """Blocks what the layer reads and opens its output as a blocked space: the residual stream."""
    reason = (f"{_described(layer)} normalises its residual stream (the LayerNormalization inside the block "
              "mixes every channel)")
    for layout in inputs:
        graph.block(layout, reason)
    return graph.new_space(node.outputs[0].shape[-1], _described(layer), reason)


def vit_encoder(graph, node, layer, inputs):
    described = _described(layer)
    if not layer.built:
        return f"{described} is not built"
    output = _residual(graph, node, layer, inputs)
    weights = _by_name(layer, parts=4)
    units = graph.new_space(layer.mlp_dim, described)
    matrices = []
    for block in layer.encoder_layers:
        first, second = (block.name, "mlp", "dense_1"), (block.name, "mlp", "dense_2")
        if first + ("kernel",) not in weights or second + ("kernel",) not in weights:
            return output_only(output)
        if not _graph._elementwise(block.mlp.dense_1.activation):
            graph.block(units, f"the activation of {described}'s MLP mixes its units")
        matrices += [Matrix(weights[first + ("kernel",)], None, units, (), (1,)),
                     Matrix(weights[second + ("kernel",)], units, None, (0,), ())]
        if first + ("bias",) in weights:
            matrices.append(Matrix(weights[first + ("bias",)], None, units, (), (0,)))
    return "vit_encoder", output, None, tuple(matrices)


def vit_encoder_resize(member, config, values):
    """The encoder's new `mlp_dim`: its first block's second MLP kernel's rows."""
    block = member.layer.encoder_layers[0].name
    config["mlp_dim"] = int(values[_by_name(member.layer, parts=4)[(block, "mlp", "dense_2", "kernel")]].shape[0])


def vit_encoder_macs(layer, input_shapes, output_shape):
    """Each block's attention and MLP at every position; None for a sequence of unknown length."""
    sequence = input_shapes[0]
    if any(size is None for size in sequence[1:-1]):
        return None
    positions = math.prod(sequence[1:-1])
    total = 0
    for block in layer.encoder_layers:
        total += cost.attention(block.mha, [sequence, sequence], output_shape)
        total += positions * sum(math.prod(dense.kernel.shape) for dense in (block.mlp.dense_1, block.mlp.dense_2))
    return total


def vit_embedding_macs(layer, input_shapes, output_shape):
    """The patch convolution at every patch (the class token and position embeddings are lookups)."""
    if output_shape[1] is None:
        return None
    return (output_shape[1] - int(layer.use_class_token)) * math.prod(layer.patch_embedding.kernel.shape)
