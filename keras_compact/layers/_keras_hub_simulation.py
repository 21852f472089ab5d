"""KerasHub's transformer blocks as their int8 file computes them, for quantization-aware training.

A `keras_hub.layers.TransformerEncoder` (a `BertBackbone`'s blocks) and a
`ViTBackbone`'s `ViTEncoder` are subclassed layers: the converter writes what
they hold, each `MultiHeadAttention` and `LayerNormalization` as the operators
`QuantizeAware` simulates for them alone (`quantize_aware._attention`,
`_layer_norm`), each `Dense` as a FULLY_CONNECTED (a GELU as an operator of its
own), and the residual connections as ADDs. These simulations compute the
block the same way, every tensor between those operators rounded with a range
of its own (the wrapper's variables `<part>_<step>_range`), the block's output
with the wrapper's own `output_range`. The weights are rounded as the file
holds them: attention and `Dense` kernels per tensor, LayerNorm constants on
their own asymmetric grids; a `PositionEmbedding`'s table likewise (its output
keeps the table's scale).

A `ViTPatchingAndEmbedding` is not simulated: written as its file computes it
(CONV_2D, the class token's CONCATENATION, the position embeddings' ADD), the
int8 conversion of the `LayerNormalization` after it crashed TensorFlow 2.21's
converter (SIGSEGV), as it does for plain Keras layers (`Conv2D`, `Reshape`,
`ZeroPadding1D`, `LayerNormalization`); `quantize_aware` refuses it.
"""

import importlib

from keras import ops

from keras_compact.layers import quantize_aware as qat
from keras_compact.quantization import FUSED_ACTIVATIONS

ENCODER = "keras_hub.src.layers.modeling.transformer_encoder.TransformerEncoder"
VIT_ENCODER = "keras_hub.src.models.vit.vit_layers.ViTEncoder"
POSITION_EMBEDDING = "keras_hub.src.layers.modeling.position_embedding.PositionEmbedding"


def _blocks(layer):
    """`[(prefix, parts)]`: each transformer block of `layer` and its sublayers by role."""
    if hasattr(layer, "encoder_layers"):  # ViTEncoder: pre-norm blocks, then a LayerNormalization
        return [(f"block_{i}_", dict(attention=block.mha, attention_norm=block.layer_norm_1,
                                     attention_dropout=block.dropout, feedforward_norm=block.layer_norm_2,
                                     intermediate=block.mlp.dense_1, intermediate_dropout=block.mlp.dropout,
                                     output=block.mlp.dense_2, feedforward_dropout=block.mlp.dropout,
                                     normalize_first=True))
                for i, block in enumerate(layer.encoder_layers)]
    return [("", dict(attention=layer._self_attention_layer, attention_norm=layer._self_attention_layer_norm,
                      attention_dropout=layer._self_attention_dropout,
                      feedforward_norm=layer._feedforward_layer_norm,
                      intermediate=layer._feedforward_intermediate_dense, intermediate_dropout=None,
                      output=layer._feedforward_output_dense,
                      feedforward_dropout=layer._feedforward_dropout, normalize_first=layer.normalize_first))]


def _split_activation(dense):
    """Whether the file computes `dense`'s activation as an operator of its own (GELU), not fused."""
    name = getattr(dense.activation, "__name__", None)
    return dense.activation is not None and name not in FUSED_ACTIVATIONS + ("linear", None)


def _block_steps(prefix, parts, last):
    """The step names of one block, in the order `_block` rounds them; `last`: its output is the layer's."""
    attention = [f"attention_{step}" for step in qat.ATTENTION_STEPS] + ["attention_output"]
    first_norm = [f"attention_norm_{step}" for step in qat.LAYER_NORM_STEPS] + ["attention_norm_output"]
    second_norm = [f"feedforward_norm_{step}" for step in qat.LAYER_NORM_STEPS]
    feedforward = ["intermediate"] + (["intermediate_activation"] if _split_activation(parts["intermediate"])
                                      else []) + ["feedforward_output"]
    if parts["normalize_first"]:
        steps = (first_norm + attention + ["attention_residual"] + second_norm + ["feedforward_norm_output"]
                 + feedforward + ([] if last else ["feedforward_residual"]))
    else:
        steps = (attention + ["attention_residual"] + first_norm + feedforward + ["feedforward_residual"]
                 + second_norm + ([] if last else ["feedforward_norm_output"]))
    return [prefix + step for step in steps]


def encoder_steps(layer, input_shape):
    blocks = _blocks(layer)
    steps = []
    for index, (prefix, parts) in enumerate(blocks):
        steps += _block_steps(prefix, parts, last=index == len(blocks) - 1 and not hasattr(layer, "layer_norm"))
    if hasattr(layer, "layer_norm"):  # the ViTEncoder's closing LayerNormalization
        steps += [f"norm_{step}" for step in qat.LAYER_NORM_STEPS]
    return tuple(steps)


def encoder_weights(layer):
    """Every attention and `Dense` kernel (FULLY_CONNECTED: per tensor) and LayerNorm constant of the layer."""
    found = []
    for _, parts in _blocks(layer):
        found += qat.attention_kernels(parts["attention"])
        found += [(parts[name].kernel, "per_tensor") for name in ("intermediate", "output")]
        found += qat.layer_norm_constants(parts["attention_norm"]) + qat.layer_norm_constants(parts["feedforward_norm"])
    if hasattr(layer, "layer_norm"):
        found += qat.layer_norm_constants(layer.layer_norm)
    return found


class _Part:
    """One sublayer of a block, seen by `quantize_aware`'s simulations as a wrapper of its own: its rounded
    weights, the block's masks and the ranges of its steps."""

    def __init__(self, wrapper, layer, step_ranges):
        self.wrapper, self.target, self.step_ranges = wrapper, layer, step_ranges

    def masked(self):
        return self.wrapper.masked()

    def replacements(self):
        mine = {id(variable) for variable, _ in qat.quantized_weights(self.target)}
        return [(variable, value) for variable, value in self.wrapper.replacements() if id(variable) in mine]

    def rounded(self, value, weight, training):
        return self.wrapper.rounded(value, weight, training)


class _Scope:
    """The ranges of one wrapper by step name, and the rounding of a tensor with one of them."""

    def __init__(self, wrapper, training):
        self.wrapper, self.training = wrapper, training
        self.ranges = wrapper.named_step_ranges()
        self.values = {id(variable): value for variable, value in wrapper.replacements()}
        self.masked = wrapper.masked()

    def step(self, name, value):
        """`value` rounded with step `name`'s range; as it is where the step is not one (the layer's output,
        which the wrapper rounds)."""
        return self.wrapper.rounded(value, self.ranges[name], self.training) if name in self.ranges else value

    def part(self, layer, prefix, steps):
        return _Part(self.wrapper, layer, [self.ranges[prefix + step] for step in steps])

    def layer_norm(self, layer, prefix, x):
        return qat._layer_norm(self.part(layer, prefix, qat.LAYER_NORM_STEPS), x, training=self.training)

    def dense(self, dense, name, x):
        """A FULLY_CONNECTED, its output step `name` (and a GELU after it, step `<name>_activation`)."""
        y = ops.matmul(x, self.values[id(dense.kernel)])
        if dense.bias is not None:
            y = y + self.masked.get(id(dense.bias), dense.bias)
        if _split_activation(dense):
            return self.step(name + "_activation", dense.activation(self.step(name, y)))
        return self.step(name, dense.activation(y) if dense.activation is not None else y)


def _block(scope, prefix, parts, x, attention_mask):
    """One transformer block as its operators compute it (KerasHub's `TransformerEncoder.call` and
    `ViTEncoderBlock.call`, every tensor between the operators rounded)."""
    training = scope.training
    attention = parts["attention"]

    def attend(y):
        part = scope.part(attention, prefix + "attention_", qat.ATTENTION_STEPS)
        y = qat._attention(part, y, y, attention_mask=attention_mask, training=training)
        return parts["attention_dropout"](scope.step(prefix + "attention_output", y), training=training)

    def feedforward(y):
        y = scope.dense(parts["intermediate"], prefix + "intermediate", y)
        if parts["intermediate_dropout"] is not None:  # a ViT MLP's, between its two Dense layers
            y = parts["intermediate_dropout"](y, training=training)
        y = scope.dense(parts["output"], prefix + "feedforward_output", y)
        return parts["feedforward_dropout"](y, training=training)

    norm_output = lambda name, y: scope.step(prefix + name + "_norm_output", y)  # noqa: E731
    if parts["normalize_first"]:
        residual = x
        x = norm_output("attention", scope.layer_norm(parts["attention_norm"], prefix + "attention_norm_", x))
        x = scope.step(prefix + "attention_residual", attend(x) + residual)
        y = norm_output("feedforward", scope.layer_norm(parts["feedforward_norm"], prefix + "feedforward_norm_", x))
        return scope.step(prefix + "feedforward_residual", feedforward(y) + x)
    x = scope.step(prefix + "attention_residual", attend(x) + x)
    x = norm_output("attention", scope.layer_norm(parts["attention_norm"], prefix + "attention_norm_", x))
    x = scope.step(prefix + "feedforward_residual", feedforward(x) + x)
    return norm_output("feedforward", scope.layer_norm(parts["feedforward_norm"], prefix + "feedforward_norm_", x))


def encoder(wrapper, x, padding_mask=None, attention_mask=None, training=None, **unused):
    """A `TransformerEncoder` or a `ViTEncoder` as its int8 operators compute it."""
    layer = wrapper.target
    scope = _Scope(wrapper, training)
    mask = None
    if not hasattr(layer, "encoder_layers"):  # KerasHub's own merge of the padding and attention masks
        merge = importlib.import_module(type(layer).__module__).merge_padding_and_attention_mask
        mask = merge(x, padding_mask, attention_mask)
    else:
        x = layer.dropout(x, training=training)
    for prefix, parts in _blocks(layer):
        x = _block(scope, prefix, parts, x, mask)
    if hasattr(layer, "layer_norm"):
        x = scope.layer_norm(layer.layer_norm, "norm_", x)
    return x


def encoder_refusal(layer, node):
    described = f"{type(layer).__name__} {layer.name!r}"
    if len(node.outputs) > 1 or node.arguments.kwargs.get("return_attention_scores"):
        return f"{described} returns its attention scores"
    for _, parts in _blocks(layer):
        reason = qat._attention_refusal(parts["attention"], node)
        if reason is not None:
            return reason
        for norm in ("attention_norm", "feedforward_norm"):
            if getattr(parts[norm], "rms_scaling", False):
                return f"{described} uses rms_scaling (taken: without it)"
    return None


def position_table(layer):
    """A `PositionEmbedding`'s table: the constant its output slices (it keeps the table's scale)."""
    return [(layer.position_embeddings, "table")]


ENCODER_SIMULATION = qat.Simulation(encoder_steps, encoder, builds_from_arguments=True, refusal=encoder_refusal)
