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

The rows are keyed by the classes' qualified names (`layer_types.define_by_name`):
KerasHub is not imported to know them.
"""

import math

from keras_compact.pruning import _graph, cost
from keras_compact.pruning._layout import Matrix
from keras_compact.pruning._sequence import _by_name, _described

BLOCKS = ("keras_hub.src.layers.modeling.transformer_encoder.TransformerEncoder",
          "keras_hub.src.layers.modeling.transformer_decoder.TransformerDecoder")
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
