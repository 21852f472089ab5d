"""QuantizeAware: a layer computing what its int8 operator will, in float, for quantization-aware training."""

import dataclasses
import math

import keras
from keras import ops

from keras_compact import _keras_private, layer_types
from keras_compact._checks import (
    ChecksCallInputs, bool_errors, check_rate, is_number, raise_errors, renamed_arguments,
)
from keras_compact.layers.targeted_dropout import call_with_values, wrapped_output_shape
from keras_compact.ops.fake_quant import fake_quant

# The fixed output ranges of the converter's int8 kernels (scale 1/256 or 1/128).
FIXED_RANGES = {
    "sigmoid": (0.0, 255.0 / 256.0),
    "softmax": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}
OUTPUTS = ("learned", None)
# A LayerNormalization as the converter writes it in int8, each of these tensors with a range of its own:
# MEAN, SUB, MUL (the square: LiteRT's SQUARE has no int8 kernel), MEAN, ADD (epsilon), RSQRT, MUL, and with
# `scale` a MUL by gamma (its output then `center`'s ADD of beta, the layer's output).
LAYER_NORM_STEPS = ("mean", "centered", "squared", "variance", "variance_epsilon", "inverse_deviation",
                    "normalized", "scaled")
# A MultiHeadAttention as the converter writes it: FULLY_CONNECTED projections, MUL by 1/sqrt(key_dim),
# BATCH_MATMUL, SOFTMAX (its fixed range), BATCH_MATMUL, the output FULLY_CONNECTED (the layer's output).
ATTENTION_STEPS = ("query", "key", "value", "scaled_query", "scores", "context")
# tfmot's MovingAverageQuantizer starts its ranges here; the first training batch replaces them.
_INITIAL_RANGE = 6.0


# How a kernel is rounded, by layer type (`layer_types`' `kernel_mode`): per output channel, or per tensor
# where the converter cannot carry a per-channel axis: FULLY_CONNECTED (a transposed Keras kernel) and a
# Conv1D's CONV_2D (its kernel gains an axis, and the converter fails with "tfl.reshape op requires 'output'
# type ... cast compatible"). A transposed convolution's TRANSPOSE_CONV and a DepthwiseConv1D's
# DEPTHWISE_CONV_2D take a per-tensor kernel here (measured: the file then equals the quantization-aware
# model exactly).
def weight_mode(layer):
    """`"per_channel"`, `"depthwise"`, `"per_tensor"` or None: how `layer`'s kernel is quantized."""
    return layer_types.lookup(layer).kernel_mode


def quantized_weights(layer):
    """`[(variable, mode)]`: the weights of `layer` its file holds in int8, and how each is rounded.

    A kernel layer's kernel (`weight_mode`), or what the layer type's
    `quantized` says (`layer_types`): an `Embedding`'s table (`"table"`:
    GATHER's int8 table, asymmetric over its own range, the grid of what it
    gathers), a `QRNN`'s gate convolutions, ... Empty for layers whose weights
    the file keeps in float or folds (batch norms) and for unknown ones.
    """
    entry = layer_types.lookup(layer)
    if entry.quantized is not None:
        return entry.quantized(layer)
    if entry.kernel_mode is not None:
        return [(layer.kernel, entry.kernel_mode)]
    return []


# What the int8 file holds of the layers without one kernel (`layer_types`' `quantized`).
def no_int8_weights(layer):
    """A batch norm's or normalization's weights: folded or kept as float constants."""
    return []


def embedding_table(layer):
    return [(layer.embeddings, "table")]


def qrnn_gates(layer):
    """A `QRNN`'s gate convolutions (`Conv1D`: per tensor)."""
    return [(gates.kernel, weight_mode(gates)) for gates in layer.gates]


def attention_kernels(layer):
    """A `MultiHeadAttention`'s (or `GroupQueryAttention`'s) four FULLY_CONNECTED kernels."""
    if not layer.built:
        return []
    return [(projection.kernel, "per_tensor") for projection in _keras_private.attention_projections(layer)]


def layer_norm_constants(layer):
    """A `LayerNormalization`'s gamma and beta: constants of its MUL and ADD, asymmetric."""
    return [(variable, "table") for variable in (layer.gamma, layer.beta) if variable is not None]


def separable_kernels(layer):
    """The file's DEPTHWISE_CONV_2D and 1x1 CONV_2D."""
    two_d = isinstance(layer, keras.layers.SeparableConv2D)
    return [(layer.depthwise_kernel, "depthwise" if two_d else "per_tensor"),
            (layer.pointwise_kernel, "per_channel" if two_d else "per_tensor")]


def quantized_kernel(kernel, mode):
    """`kernel` on its int8 grid: symmetric (`[-127, 127]` times `max|kernel| / 127`), or for
    `mode="table"` asymmetric over `[min(kernel, 0), max(kernel, 0)]`."""
    if mode == "table":
        extremes = ops.stop_gradient(ops.stack([ops.min(kernel), ops.max(kernel)]))
        return fake_quant(kernel, *quantization_range(extremes))  # widened to hold 0, as the activations
    if mode == "depthwise":  # one scale per output channel: `in * multiplier` of them
        shape = ops.shape(kernel)
        flat = ops.reshape(kernel, (shape[0], shape[1], 1, -1))
        return ops.reshape(quantized_kernel(flat, "per_channel"), shape)
    axes = tuple(range(len(kernel.shape) - 1)) if mode == "per_channel" else None
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=axes), 1e-8))
    return fake_quant(kernel, -bound, bound, narrow_range=True)


@keras.saving.register_keras_serializable(package="keras_compact")
class QuantizeAware(_keras_private.BuildsFromArguments, ChecksCallInputs, keras.layers.Wrapper):
    """A layer as its int8 operator computes it: weights and activations fake-quantized.

    In training and inference the wrapped layer's kernel is rounded to the
    symmetric int8 grid the TFLite converter uses (per output channel for
    convolutions, per tensor for `Dense`), and its output to an asymmetric
    8-bit grid over a range learned as tfmot's `MovingAverageQuantizer` learns
    it: the first training batch's min and max, then their moving averages.
    Gradients pass straight through the rounding (1 inside the range, 0 outside).
    `keras_compact.quantization.quantize_aware` wraps every layer of a model
    this way, choosing for each what the converter fuses; `tflite_export.export`
    then writes an int8 file with the learned ranges.

    Args:
        layer: the layer to wrap. A `Dense`, `Conv1D`/`2D`/`3D`,
            `DepthwiseConv1D`/`2D` or `Conv1DTranspose`/`Conv2DTranspose`
            (alone or in a `keras_compact.pruning.PruningMask`, whose zeros
            stay zero) has its kernel quantized, a `SeparableConv1D`/`2D` both
            kernels and the tensor between them, a `LayerNormalization` and a
            `MultiHeadAttention` (called with its own arguments and masks)
            every tensor between their int8 operators, an `LSTM`/`GRU`/`SimpleRNN`
            (or a `Bidirectional` of one) unrolled over its known length, each
            step's tensors rounded, an `Embedding` its table and a `QRNN` its gate
            convolutions (`quantized_weights`); any other layer only its inputs
            and output.
        activation: an activation name computed after the layer, on its
            quantized output (`"sigmoid"`, `"softmax"`, `"tanh"`, `"silu"`,
            `"gelu"`, ...): the converter's own operator, which the layer's
            fused kernel cannot include. `"silu"`/`"swish"` is quantized as the
            converter writes it, `x * sigmoid(x)`. With a `keras.layers.Activation`
            as `layer`, the activation replaces its call.
        output_mode: `"learned"` (a moving-average range), `None` (not quantized: the
            converter fuses this output into the next operator, or keeps its
            input's scale), or a `(minimum, maximum)` pair (a fixed range, as
            after a sigmoid).
        quantize_inputs: also quantize the input (a model input: the file's
            QUANTIZE operator).
        ema_decay: decay of the moving averages of the ranges, in `[0, 1)`.

    Example:

    >>> layer = QuantizeAware(keras.layers.Dense(3, kernel_initializer="ones"), quantize_inputs=True)
    >>> outputs = layer(np.array([[0.5, 1.0], [0.0, 2.0]], "float32"), training=True)
    >>> keras.ops.convert_to_numpy(layer.input_range).tolist()  # the first batch's min and max
    [0.0, 2.0]
    >>> [round(v, 3) for v in keras.ops.convert_to_numpy(layer.output_range).tolist()]  # from rounded inputs
    [1.498, 2.0]
    """

    expected_inputs = "what its wrapped layer takes: a tensor or a NumPy array"

    def __init__(self, layer, activation=None, output_mode="learned", quantize_inputs=False, ema_decay=0.999,
                 **kwargs):
        values, names = renamed_arguments("QuantizeAware", QuantizeAware.__init__, kwargs, {"output": "output_mode"},
                                          {"output_mode": output_mode})
        output, output_name = values["output_mode"], names["output_mode"]
        errors = []
        if activation is not None:
            try:
                keras.activations.get(activation)
            except (ValueError, TypeError):
                errors.append(f"activation must be None or the name of a Keras activation. "
                              f"Received: activation={activation!r}")
            if not isinstance(activation, str):
                errors.append(f"activation must be None or a name (a string). Received: activation={activation!r}")
        if not (output in OUTPUTS or _is_range(output)):
            errors.append(
                f"{output_name} must be 'learned', None or a (minimum, maximum) pair with minimum < maximum. "
                f"Received: {output_name}={output!r}"
            )
        errors += bool_errors(quantize_inputs=quantize_inputs)
        raise_errors(errors)
        check_rate("ema_decay", ema_decay)
        if ema_decay >= 1:
            raise ValueError(f"ema_decay must be in [0, 1). Received: ema_decay={ema_decay!r}")
        super().__init__(layer, **kwargs)
        self.activation = activation
        self.output_mode = output if output in OUTPUTS else tuple(float(v) for v in output)
        self.quantize_inputs = bool(quantize_inputs)
        self.ema_decay = float(ema_decay)
        self._activation_only = activation is not None and isinstance(layer, keras.layers.Activation)
        self.supports_masking = bool(getattr(layer, "supports_masking", False))

    @property
    def target(self):
        """The layer whose kernel is quantized: the wrapped one, or the one in its `PruningMask`."""
        return getattr(self.layer, "target", self.layer)

    def builds_from_arguments(self):
        simulation = self.simulation()
        return simulation is not None and simulation.builds_from_arguments

    def simulation(self):
        """How the layer's several int8 operators are computed (`layer_types`' `simulation`), or None."""
        return layer_types.lookup(self.target).simulation

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.quantize_inputs:
            self.input_range = self._range_weight("input_range")
        if self.activation is not None and not self._activation_only:
            self.pre_activation_range = self._range_weight("pre_activation_range")
        if self.output_mode == "learned":
            self.output_range = self._range_weight("output_range")
        simulation = self.simulation()  # the tensors between the file's operators for the layer
        self.step_names = simulation.steps_of(self.target, input_shape) if simulation else ()
        self.step_ranges = [self._range_weight(f"{step}_range") for step in self.step_names]
        self.batches_seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="batches_seen")
        self.built = True

    def named_step_ranges(self):
        """`{step name: its range variable}` of the layer's simulation."""
        return dict(zip(self.step_names, self.step_ranges))

    def _range_weight(self, name):
        initial = keras.initializers.Constant([-_INITIAL_RANGE, _INITIAL_RANGE])
        return self.add_weight(shape=(2,), initializer=initial, trainable=False, name=name)

    def call(self, inputs, *args, training=None, mask=None, **kwargs):
        x = self.rounded(inputs, self.input_range, training) if self.quantize_inputs else inputs
        if self.builds_from_arguments():
            y = self.simulation().compute(self, x, *args, training=training, **kwargs)
        else:
            y = x if self._activation_only else self._call_layer(x, training, mask)
        if self.activation is not None:
            if not self._activation_only:
                y = self.rounded(y, self.pre_activation_range, training)
            y = self._activate(y)
        if self.output_mode == "learned":
            y = self.rounded(y, self.output_range, training)
        elif self.output_mode is not None:
            y = fake_quant(y, *self.output_mode)
        if training:
            self.batches_seen.assign(self.batches_seen + 1.0)
        return y

    def _call_layer(self, x, training, mask):
        kwargs = {"training": training} if _keras_private.call_has_training_arg(self.layer) else {}
        if mask is not None and _keras_private.call_has_mask_arg(self.layer):
            kwargs["mask"] = mask
        simulation = self.simulation()
        if simulation is not None:
            return simulation.compute(self, x, training=training, mask=mask)
        if not quantized_weights(self.target):
            return self.layer(x, **kwargs)
        return call_with_values(self.layer, self.replacements(), x, **kwargs)

    def replacements(self):
        """`[(variable, value)]`: each weight the file holds in int8, rounded as it is there (the zeros of a
        `PruningMask` around the layer applied first)."""
        masked = self.masked()
        return [(variable, quantized_kernel(masked.get(id(variable), variable.value), mode))
                for variable, mode in quantized_weights(self.target)]

    def masked(self):
        """`{id(variable): value}`: what a `PruningMask` around the layer computes with (its zeros applied)."""
        if self.layer is self.target:
            return {}
        return {id(variable): value for variable, value in self.layer.masked_values()}

    def _activate(self, y):
        if self.activation in ("silu", "swish"):  # the converter's LOGISTIC (fixed range) times its input
            return y * fake_quant(ops.sigmoid(y), *FIXED_RANGES["sigmoid"])
        return keras.activations.get(self.activation)(y)

    def rounded(self, x, weight, training):
        if training:
            batch = ops.stop_gradient(ops.stack([ops.min(x), ops.max(x)]))
            moving = self.ema_decay * weight.value + (1.0 - self.ema_decay) * ops.cast(batch, weight.dtype)
            value = ops.where(self.batches_seen > 0, moving, ops.cast(batch, weight.dtype))
            weight.assign(value)
        else:
            value = weight.value
        low, high = quantization_range(value)
        return fake_quant(x, low, high)

    def compute_output_shape(self, input_shape):
        return wrapped_output_shape(self.layer, input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        output = self.output_mode if self.output_mode in OUTPUTS else list(self.output_mode)
        return {
            **super().get_config(),
            "activation": self.activation,
            "output_mode": output,
            "quantize_inputs": self.quantize_inputs,
            "ema_decay": self.ema_decay,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # A file saved with output= (the argument's name before output_mode) loads without a warning.
        return super().from_config({**config, "_from_config": True}, custom_objects=custom_objects)


def quantization_range(value):
    """A learned `[min, max]` as the range `fake_quant` takes: widened to hold 0, never empty."""
    low = ops.minimum(value[0], 0.0)
    high = ops.maximum(ops.maximum(value[1], 0.0), low + 1e-6)
    return low, high


def _is_range(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_number(v) for v in value)
        and float(value[0]) < float(value[1])
    )


# The layers the converter writes as several int8 operators, each tensor between them with a range of its own.
@dataclasses.dataclass(frozen=True)
class Simulation:
    """How `QuantizeAware` computes one layer type as the file's operators do (`layer_types`' `simulation`).

    `steps` name the tensors between the operators (each a learned range, the
    wrapper's variable `<step>_range`, in `wrapper.step_ranges`, their names in
    `wrapper.step_names`), or is a function of the layer and its input shape
    that gives them (a `Bidirectional`'s: its layer's);
    `compute(wrapper, inputs, *args, training=..., **kwargs)` computes the
    layer, rounding the tensor of step i with `wrapper.rounded(value,
    wrapper.step_ranges[i], training)`. `builds_from_arguments`: called with
    several tensors (an attention layer's query, value, key and masks).
    """

    steps: tuple
    compute: object
    builds_from_arguments: bool = False
    refusal: object = None  # refusal(layer, node): why this call of the layer cannot be simulated, or None

    def steps_of(self, layer, input_shape):
        """The names of `layer`'s steps, called on inputs of `input_shape`."""
        return tuple(self.steps(layer, input_shape)) if callable(self.steps) else self.steps


def _attention(wrapper, query, value=None, key=None, attention_mask=None, use_causal_mask=False,
               return_attention_scores=False, training=None, **unused):
    """A MultiHeadAttention as its int8 operators compute it, every tensor between them quantized.

    Under a mask (`attention_mask`, `use_causal_mask`, padding masks), a masked score is the lowest
    value of the scores' int8 grid, as the file's SELECT_V2 writes it (its constant, -1e9 in float,
    takes the scores' scale): masked positions keep a small weight, as in the file."""
    layer = wrapper.target
    if return_attention_scores:
        raise ValueError(f"QuantizeAware rounds {layer.name!r}'s attention output, not its scores; it was "
                         "called with return_attention_scores=True")
    mask = _keras_private.attention_mask(layer, query, value, key, attention_mask, use_causal_mask)
    key = value if key is None else key
    masked = wrapper.masked()
    ranges = iter(wrapper.step_ranges)
    step = lambda value_: wrapper.rounded(value_, next(ranges), training)  # noqa: E731

    rounded_kernels = dict((id(variable), value) for variable, value in wrapper.replacements())

    def project(dense, x):
        pairs = [(dense.kernel, rounded_kernels[id(dense.kernel)])]
        if dense.bias is not None:
            pairs.append((dense.bias, masked.get(id(dense.bias), dense.bias.value)))
        return call_with_values(dense, pairs, x)

    queries, keys, values, output = _keras_private.attention_projections(layer)
    q, k, v = step(project(queries, query)), step(project(keys, key)), step(project(values, value))
    if isinstance(layer, keras.layers.GroupQueryAttention):
        k, v = ops.repeat(k, layer.num_repeats, axis=2), ops.repeat(v, layer.num_repeats, axis=2)
    q = step(q * (1.0 / math.sqrt(q.shape[-1])))
    scores_range = next(ranges)
    scores = wrapper.rounded(ops.einsum("aecd,abcd->acbe", k, q), scores_range, training)  # [b, heads, q, k]
    if mask is not None:
        low, high = quantization_range(scores_range.value)
        floor = fake_quant(ops.zeros_like(scores) + low, low, high)
        mask = ops.expand_dims(ops.cast(mask, "bool"), 1)
        scores = ops.where(mask, scores, floor)
    probabilities = fake_quant(ops.softmax(scores, axis=-1), *FIXED_RANGES["softmax"])
    if layer.dropout > 0:
        if mask is not None:  # Keras's masked softmax (its path with dropout) zeroes what it masked
            probabilities = ops.where(mask, probabilities, 0.0)
        probabilities = _keras_private.attention_dropout(layer)(probabilities, training=training)
    context = step(ops.einsum("acbe,aecd->abcd", probabilities, v))
    return project(output, context)


def _attention_refusal(layer, node):
    described = f"{type(layer).__name__} {layer.name!r}"
    if getattr(layer, "use_gate", False):
        return f"{described} is gated (use_gate=True: not covered yet)"
    if len(node.outputs) > 1 or node.arguments.kwargs.get("return_attention_scores"):
        return f"{described} returns its attention scores"
    tensors = node.arguments.keras_tensors
    if len(tensors[0].shape) != 3 or layer.get_config().get("attention_axes") not in (None, [1], (1,), 1):
        return f"{described} attends over axes other than a sequence's (only [batch, sequence, features] inputs)"
    return None


def _separable(wrapper, x, training=None, mask=None):
    """A separable convolution as the file's two operators: the depthwise one's output quantized too."""
    layer = wrapper.target
    kernels = [value for _, value in wrapper.replacements()]
    bias = wrapper.masked().get(id(layer.bias), layer.bias) if layer.bias is not None else None
    y = ops.depthwise_conv(x, kernels[0], strides=layer.strides, padding=layer.padding,
                           data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    y = wrapper.rounded(y, wrapper.step_ranges[0], training)
    y = ops.conv(y, kernels[1], strides=1, padding="valid", data_format=layer.data_format)
    if bias is not None:
        y = ops.add(y, bias)
    return layer.activation(y) if layer.activation is not None else y


def _layer_norm(wrapper, x, training=None, mask=None):
    """A LayerNormalization as its int8 operators compute it, every tensor between them quantized."""
    layer = wrapper.target
    constants = {id(variable): value for variable, value in wrapper.replacements()}
    ranges = iter(wrapper.step_ranges)
    step = lambda value: wrapper.rounded(value, next(ranges), training)  # noqa: E731
    mean = step(ops.mean(x, axis=-1, keepdims=True))
    centered = step(x - mean)
    variance = step(ops.mean(step(centered * centered), axis=-1, keepdims=True))
    normalized = step(centered * step(ops.rsqrt(step(variance + layer.epsilon))))
    if layer.gamma is not None:
        normalized = normalized * constants[id(layer.gamma)]
    scaled = step(normalized)  # without gamma, the same tensor again: quantizing twice changes nothing
    return scaled + constants[id(layer.beta)] if layer.beta is not None else scaled


# A GroupQueryAttention is the same as a MultiHeadAttention, its keys and values repeated for the query heads
# that share them (the file's TILE keeps their scale).
ATTENTION = Simulation(ATTENTION_STEPS, _attention, builds_from_arguments=True, refusal=_attention_refusal)
SEPARABLE = Simulation(("depthwise",), _separable)  # the tensor between DEPTHWISE_CONV_2D and CONV_2D
LAYER_NORM = Simulation(LAYER_NORM_STEPS, _layer_norm)


# A recurrent layer as its unrolled int8 file computes it, one step after another (the same ranges at every
# step): its kernel's FULLY_CONNECTED (with the bias), the recurrent kernel's FULLY_CONNECTED, their ADD,
# the gates' LOGISTIC and TANH (fixed ranges) and the MULs and ADDs of the state.
LSTM_STEPS = ("input_projection", "recurrent_projection", "gates", "forget_carry", "input_carry", "carry", "state")
GRU_STEPS = ("input_projection", "recurrent_projection", "update_reset", "reset_recurrent", "candidate_input",
             "kept_state", "update_complement", "new_state", "state")
SIMPLE_RNN_STEPS = ("input_projection", "recurrent_projection", "state_input")


def recurrent_kernels(layer):
    """An `LSTM`'s, `GRU`'s or `SimpleRNN`'s kernel and recurrent kernel (a `Bidirectional`'s, of both
    directions): FULLY_CONNECTED kernels."""
    return [(variable, "per_tensor") for direction in _directions(layer)
            for variable in (direction.cell.kernel, direction.cell.recurrent_kernel)]


def _directions(layer):
    return (layer.forward_layer, layer.backward_layer) if isinstance(layer, keras.layers.Bidirectional) else (layer,)


def _recurrent_refusal(layer, node):
    described = f"{type(layer).__name__} {layer.name!r}"
    arguments = node.arguments
    if isinstance(layer, keras.layers.Bidirectional):
        inner = [type(direction).__name__ for direction in _directions(layer) if type(direction) not in RECURRENT]
        if inner:
            return f"{described} wraps {inner[0]} (taken: LSTM, GRU, SimpleRNN)"
        if layer.merge_mode not in MERGES:
            return f"{described} has merge_mode={layer.merge_mode!r} (taken: {', '.join(map(repr, MERGES))})"
    if layer.return_state or len(node.outputs) > 1:
        return f"{described} returns its states"
    if len(arguments.args) > 1 or arguments.kwargs.get("initial_state") is not None:
        return f"{described} is given initial states"
    if layer.stateful:
        return f"{described} is stateful"
    shape = arguments.keras_tensors[0].shape
    if len(shape) != 3 or shape[1] is None:
        return f"{described} reads sequences of unknown length (its file is unrolled: give the Input a length)"
    for direction in _directions(layer):
        cell = direction.cell
        if cell.dropout or cell.recurrent_dropout:
            return f"{described} has dropout or recurrent_dropout (not simulated: train it without, then QAT)"
        activations = [cell.activation] + ([cell.recurrent_activation] if hasattr(cell, "recurrent_activation")
                                           else [])
        if [getattr(a, "__name__", None) for a in activations] != ["tanh", "sigmoid"][:len(activations)]:
            return f"{described} has activations other than tanh and sigmoid (their int8 kernels' fixed ranges)"
        if isinstance(direction, keras.layers.GRU) and not (cell.reset_after or not cell.use_bias):
            return f"{described} has reset_after=False with a bias (taken: reset_after=True, Keras's default)"
    if layer.return_sequences and _keras_private.keras_mask(arguments.keras_tensors[0]) is not None:
        return f"{described} returns sequences under a padding mask (taken: return_sequences=False)"
    return None


def _recurrent(wrapper, x, training=None, mask=None):
    """The layer unrolled over its (known) length, each step's tensors rounded with the layer's ranges."""
    ranges = wrapper.named_step_ranges()
    return _unrolled(wrapper, wrapper.target, ranges, x, training, mask)


def _bidirectional(wrapper, x, training=None, mask=None):
    """Both directions unrolled (the backward one's sequence flipped back, as Keras does), then merged as
    the file merges them: CONCATENATION, ADD, MUL, or ADD and MUL by 0.5 (`"ave"`, its sum a step)."""
    layer = wrapper.target
    ranges = wrapper.named_step_ranges()
    outputs = []
    for prefix, direction in (("forward", layer.forward_layer), ("backward", layer.backward_layer)):
        own = {name: ranges[f"{prefix}_{name}"] for name in _steps(direction)}
        output = _unrolled(wrapper, direction, own, x, training, mask)
        if layer.return_sequences:  # PACK and REVERSE_V2 keep the states' grid; the converter needs it said
            output = ops.flip(output, axis=1) if prefix == "backward" else output
            output = (fake_quant(output, *FIXED_RANGES["tanh"]) if isinstance(direction, keras.layers.SimpleRNN)
                      else wrapper.rounded(output, own["state"], training))
        outputs.append(output)
    forward, backward = outputs
    if layer.merge_mode == "concat":
        return ops.concatenate([forward, backward], axis=-1)
    if layer.merge_mode == "sum":
        return forward + backward
    if layer.merge_mode == "mul":
        return forward * backward
    return wrapper.rounded(forward + backward, ranges["merged"], training) * 0.5


def _unrolled(wrapper, layer, ranges, x, training, mask):
    """`layer` (one direction) unrolled, its step `name`'s tensors rounded with `ranges[name]`."""
    cell = layer.cell
    values = {id(variable): value for variable, value in wrapper.replacements()}
    masked = wrapper.masked()
    kernel, recurrent = values[id(cell.kernel)], values[id(cell.recurrent_kernel)]
    bias = masked.get(id(cell.bias), cell.bias) if cell.use_bias else None
    # A GRU's bias is [2, 3 * units] (reset_after): the input's and the recurrent kernel's.
    input_bias, recurrent_bias = (bias[0], bias[1]) if bias is not None and len(bias.shape) == 2 else (bias, None)
    step = lambda name, value: wrapper.rounded(value, ranges[name], training)  # noqa: E731
    sigmoid = lambda value: fake_quant(ops.sigmoid(value), *FIXED_RANGES["sigmoid"])  # noqa: E731
    tanh = lambda value: fake_quant(ops.tanh(value), *FIXED_RANGES["tanh"])  # noqa: E731
    units = cell.units
    state = ops.zeros((ops.shape(x)[0], units), x.dtype)
    carry = state
    times = range(x.shape[1])
    outputs = []
    for time in (reversed(times) if layer.go_backwards else times):
        projected = ops.matmul(x[:, time], kernel)  # the kernel's FULLY_CONNECTED, with its bias
        projected = step("input_projection", projected if input_bias is None else projected + input_bias)
        if isinstance(layer, keras.layers.GRU):
            from_state = ops.matmul(state, recurrent)
            from_state = step("recurrent_projection",
                              from_state if recurrent_bias is None else from_state + recurrent_bias)
            x_z, x_r, x_h = ops.split(projected, 3, axis=-1)
            r_z, r_r, r_h = ops.split(from_state, 3, axis=-1)
            update = sigmoid(step("update_reset", x_z + r_z))
            reset = sigmoid(step("update_reset", x_r + r_r))
            candidate = tanh(step("candidate_input", x_h + step("reset_recurrent", reset * r_h)))
            complement = step("update_complement", 1.0 - update)  # the file's SUB from 1, in int8 too
            new = step("state", step("kept_state", update * state) + step("new_state", complement * candidate))
        elif isinstance(layer, keras.layers.LSTM):
            if outputs:
                gates = step("gates", projected + step("recurrent_projection", ops.matmul(state, recurrent)))
                z_i, z_f, z_c, z_o = ops.split(gates, 4, axis=-1)
            else:  # the first step reads zero states: the converter folds them away, and so does this. Its
                # forget gate is unused: sliced, not SPLIT (a SPLIT with an unused output stayed float32 in
                # the file in some conversions of the same model, chosen by the converter at random)
                z_i, z_c, z_o = (projected[:, units * k:units * (k + 1)] for k in (0, 2, 3))
            from_input = step("input_carry", sigmoid(z_i) * tanh(z_c))
            new_carry = from_input
            if outputs:
                new_carry = step("carry", step("forget_carry", sigmoid(z_f) * carry) + from_input)
            new = step("state", sigmoid(z_o) * tanh(new_carry))
            if mask is not None:
                new_carry = ops.where(mask[:, time, None], new_carry, carry)
            carry = new_carry
        else:  # SimpleRNN
            new = tanh(step("state_input", projected + step("recurrent_projection", ops.matmul(state, recurrent))))
        state = ops.where(mask[:, time, None], new, state) if mask is not None else new
        outputs.append(state)
    # A backward layer's sequence is in the order it was computed, as Keras returns it.
    return ops.stack(outputs, axis=1) if layer.return_sequences else state


RECURRENT = {layer: Simulation(steps, _recurrent, refusal=_recurrent_refusal)
             for layer, steps in ((keras.layers.LSTM, LSTM_STEPS), (keras.layers.GRU, GRU_STEPS),
                                  (keras.layers.SimpleRNN, SIMPLE_RNN_STEPS))}
MERGES = ("concat", "sum", "mul", "ave")


def _steps(layer):
    return RECURRENT[type(layer)].steps if type(layer) in RECURRENT else ()


def _bidirectional_steps(layer, input_shape):
    """Each direction's steps, `forward_` and `backward_` before their names; `"merged"` for `"ave"`."""
    steps = [f"{prefix}_{name}" for prefix, direction in (("forward", layer.forward_layer),
                                                          ("backward", layer.backward_layer))
             for name in _steps(direction)]
    return tuple(steps) + (("merged",) if layer.merge_mode == "ave" else ())


BIDIRECTIONAL = Simulation(_bidirectional_steps, _bidirectional, refusal=_recurrent_refusal)
