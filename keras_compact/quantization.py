"""Quantization-aware training for Keras 3: a model that trains as its int8 `.tflite` file computes.

`quantize_aware(model)` returns a copy in which every layer is a
`keras_compact.layers.QuantizeAware` wrapper placed where the TFLite converter
quantizes (tfmot's default 8-bit scheme, Jacob et al. 2018): weights per output
channel (per tensor for `Dense`), symmetric int8; activations per tensor,
asymmetric, ranges learned by moving averages; nothing between a convolution
and the `BatchNormalization` and ReLU the converter fuses into it.
`tflite_export.export(qat_model, path, quantization="int8")` writes the int8
file with those ranges.
"""

import dataclasses

import keras

from keras_compact import _keras_private, layer_types
from keras_compact._checks import check_rate
from keras_compact._cloning import check_model, clone_with, fresh_copy, inlined
from keras_compact.layers.quantize_aware import (
    FIXED_RANGES, QuantizeAware, quantized_weights,
)
from keras_compact.layers.projection_layer import ProjectionLayer
from keras_compact.layers.targeted_dropout import TargetedDropout
from keras_compact.pruning.prune import PruningMask

# Activations the converter fuses into the operator before them.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one layer's wrapper quantizes."""

    activation: str = None
    output: object = "learned"
    quantize_inputs: bool = False


def quantize_aware(model, ema_decay=0.999):
    """A copy of `model` that trains with the int8 file's rounding (quantization-aware training).

    Every layer of `model` (nested functional and Sequential models are inlined
    into one functional graph) is wrapped in a `QuantizeAware` that rounds what
    the converter will round: the kernels of `Dense`, `Conv1D`/`2D`/`3D`,
    `DepthwiseConv1D`/`2D`, `Conv1DTranspose`/`Conv2DTranspose` and
    `SeparableConv1D`/`2D` to symmetric int8 (per output channel; per tensor for
    `Dense`, the 1-D layers and the transposed ones, whose operators cannot take
    a per-channel fake quantization), a separable convolution as the file's
    DEPTHWISE_CONV_2D and CONV_2D with the tensor between them quantized too, a
    transposed convolution with its activation after it (TRANSPOSE_CONV fuses
    none), a `LayerNormalization` as the file's MEAN, SUB, MUL, RSQRT, ...
    with every tensor between them and its gamma and beta rounded, a
    `MultiHeadAttention` (or `GroupQueryAttention`) as its FULLY_CONNECTED
    projections, MUL, BATCH_MATMUL, SOFTMAX and BATCH_MATMUL with every
    tensor between them rounded (under a padding, causal or given mask, a
    masked score is the lowest value of the scores' int8 grid, as the file's
    SELECT_V2 writes it), an `Embedding`'s table to the asymmetric int8 grid
    its GATHER reads, an `LSTM`, `GRU` or `SimpleRNN` (alone or in a
    `Bidirectional`) over sequences of known length as its unrolled file (each
    step's operators, one range per tensor for all steps), the weights a user's layer registers
    (`keras_compact.register_layer(..., quantize=...)`), a `QRNN`'s gate convolutions, the model inputs and each
    operator's output to 8-bit ranges learned during training. Outputs the
    converter fuses away are left alone: a convolution or `Dense` followed by
    `BatchNormalization` and/or a ReLU (or ReLU6) is one operator in the file,
    quantized after the ReLU, and a per-channel kernel quantized before the
    batch norm is folded is the same grid scaled per channel. Softmax, sigmoid
    and tanh outputs get the converter's fixed ranges; an activation the file
    computes as an operator of its own (swish as LOGISTIC and MUL, GELU, ...)
    is split out of its layer and quantized before and after. Layers that keep
    their input's scale in the file (reshapes, max pooling, padding, dropout)
    are not quantized.

    A `ProjectionLayer` is left as it is (the file's LSH_PROJECTION) and its
    bits are quantized where the next layer reads them: a `ProjectionNet`'s
    projection trains quantization-aware as `ProjectionNet(trainer,
    quantize_aware(net.projection))`.

    Train the copy for a few epochs from `model`'s weights (compile it first),
    then export it: `tflite_export.export(copy, path, quantization="int8")`.
    Pruned weights stay zero: `PruningMask` wrappers (from `prune` or
    `prunable`) are kept inside the new ones. `model` is not changed.

    Raw `keras.ops` calls in the graph (`x + 3.0`, as in `keras.applications`'
    MobileNetV3) cannot be wrapped: they train in float, the layers reading them
    quantize what they read, and `export` calibrates the ranges between them on
    `representative_data` (without it those operators stay float32 in the file,
    and `export` warns). The same holds inside a `QRNN`: its gate kernels are
    rounded and its output range learned, while the gates and the unrolled state
    between them train in float and are calibrated at export, and a `Conv3D`,
    whose CONV_3D LiteRT computes in float32 only.

    Args:
        model: a built functional or Sequential model.
        ema_decay: decay of the ranges' moving averages (tfmot's is 0.999).

    Returns:
        A functional model of `QuantizeAware` layers, uncompiled.

    Raises:
        ValueError: a layer with weights this scheme does not quantize (named,
            with the supported ones), or a model already quantize-aware.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu", name="hidden"),
    ...                           keras.layers.Dense(2, activation="softmax", name="classes")])
    >>> qat = quantize_aware(model)
    >>> [(layer.name, layer.activation, layer.output_mode) for layer in qat.layers[1:]]
    [('hidden_quant', None, 'learned'), ('classes_quant', 'softmax', (0.0, 0.99609375))]
    """
    check_model(model, "quantize_aware", graph=True)
    ema_decay = check_rate("ema_decay", ema_decay)
    if ema_decay >= 1:
        raise ValueError(f"ema_decay must be in [0, 1). Received: ema_decay={ema_decay!r}")
    flat, _, _ = inlined(model)
    if len(flat.inputs) == 1 or len(flat.outputs) == 1:  # one tensor, not a list of one: what users feed
        flat = keras.Model(flat.inputs[0] if len(flat.inputs) == 1 else flat.inputs,
                           flat.outputs[0] if len(flat.outputs) == 1 else flat.outputs, name=flat.name)
    plans = _plans(flat)

    def replace(layer):
        if layer.name not in plans:
            return None
        plan = plans[layer.name]
        values = layer.get_weights()
        inner = fresh_copy(layer)
        if plan.activation is not None and not isinstance(layer, keras.layers.Activation):
            inner = _without_activation(layer)
        wrapper = QuantizeAware(inner, activation=plan.activation, output_mode=plan.output,
                                quantize_inputs=plan.quantize_inputs, ema_decay=ema_decay, name=f"{layer.name}_quant")
        return wrapper, lambda built: built.layer.set_weights(values)

    return clone_with(flat, replace)


def _without_activation(layer):
    """A fresh copy of `layer` (or of the layer in its `PruningMask`) with a linear activation."""
    target = getattr(layer, "target", layer)
    linear = type(target).from_config({**target.get_config(), "activation": "linear"})
    if target is layer:
        return linear
    return PruningMask(linear, granularity=layer.granularity, name=layer.name)


def _plans(model):
    """`{layer name: _Plan}` for every layer of the flat functional `model`."""
    readers = {}
    nodes = _keras_private.nodes_in_order(model)
    for node in nodes:
        for tensor in node.arguments.keras_tensors:
            readers.setdefault(id(tensor), []).append(node)
    inputs = {id(tensor) for tensor in model.inputs}
    outputs = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    plans, refused = {}, []
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, ProjectionLayer) or not isinstance(layer, keras.layers.Layer):
            # LSH_PROJECTION's bits, or a raw keras.ops call that trains in float: the layers reading
            # them quantize what they read, as they would a model input.
            inputs.update(id(tensor) for tensor in node.outputs)
            continue
        problem = _unsupported(layer) or _unsupported_call(layer, node)
        if problem:
            refused.append(problem)
            continue
        plan = _plan(layer, node, readers, inputs, outputs)
        if layer.name in plans and plans[layer.name] != plan:  # a shared layer: quantize every call's output
            plan = dataclasses.replace(plan, output=plans[layer.name].output or plan.output,
                                       quantize_inputs=plans[layer.name].quantize_inputs or plan.quantize_inputs)
        plans[layer.name] = plan
    if refused:
        raise ValueError(
            f"quantize_aware cannot make {model.name!r} quantization-aware: {'; '.join(sorted(set(refused)))}. "
            "Layers with weights it quantizes: Dense, Conv1D, Conv2D, Conv3D, DepthwiseConv1D, DepthwiseConv2D, "
            "Conv1DTranspose, Conv2DTranspose, SeparableConv1D, SeparableConv2D (alone or in a PruningMask), "
            "Embedding, QRNN, BatchNormalization, Normalization, LayerNormalization, MultiHeadAttention and "
            "GroupQueryAttention (masked or not), LSTM, GRU and SimpleRNN (unrolled, alone or in a Bidirectional), and layers given quantize= by keras_compact.register_layer; "
            "layers without weights are all taken."
        )
    return plans


def _unsupported(layer):
    """Why `layer` cannot be wrapped, or None."""
    if isinstance(layer, QuantizeAware):
        return f"{layer.name!r} is already a QuantizeAware layer (the model is quantization-aware)"
    if isinstance(layer, TargetedDropout):
        return (f"{layer.name!r} is a TargetedDropout: prune the model (keras_compact.pruning.prune) or strip "
                "the dropout (keras_compact.pruning.strip) first")
    if isinstance(layer, PruningMask):
        return None if quantized_weights(layer.target) else f"{layer.name!r} masks a {type(layer.target).__name__}"
    if isinstance(layer, keras.layers.LayerNormalization) and layer.rms_scaling:
        return f"LayerNormalization {layer.name!r} uses rms_scaling (taken: without it)"
    if isinstance(layer, keras.layers.LayerNormalization) and not _last_axis(layer):
        return f"LayerNormalization {layer.name!r} normalises axis {layer.axis} (taken: the last axis alone)"
    entry = layer_types.lookup(layer)
    if not layer.weights or entry.kernel_mode is not None or entry.quantized is not None:
        return None
    return f"{type(layer).__name__} {layer.name!r} has weights this scheme does not quantize"


def _unsupported_call(layer, node):
    """Why this call of `layer` cannot be quantization-aware (its simulation's refusal: an attention layer
    returning its scores, a recurrent layer returning its states, ...), or None."""
    target = getattr(layer, "target", layer)
    simulation = layer_types.lookup(target).simulation
    return simulation.refusal(target, node) if simulation is not None and simulation.refusal else None


def _last_axis(layer):
    """Whether a normalization's `axis` is its input's last one (and that one alone)."""
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    try:
        rank = len(layer.input.shape)
    except (AttributeError, ValueError):  # called more than once: the axes as written
        rank = None
    return len(axes) == 1 and (axes[0] == -1 or (rank is not None and axes[0] == rank - 1))


def _plan(layer, node, readers, inputs, outputs):
    target = getattr(layer, "target", layer)
    single_input = len(node.arguments.keras_tensors) == 1
    first = node.arguments.keras_tensors[0]
    quantize_inputs = single_input and id(first) in inputs and keras.backend.is_float_dtype(first.dtype)
    activation = _split_activation(target)
    if activation is not None:
        return _Plan(activation, FIXED_RANGES.get(activation, "learned"), quantize_inputs)
    if isinstance(target, keras.layers.Softmax):
        return _Plan(None, FIXED_RANGES["softmax"], quantize_inputs)
    if layer_types.lookup(target).keeps_scale or _fused_into_next(target, node, readers, outputs):
        return _Plan(None, None, quantize_inputs)
    return _Plan(None, "learned", quantize_inputs)


def _activation_name(layer):
    function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", None)
    if name is None or keras.activations.get(name) is not function:
        return None  # a custom callable: computed inside its layer, quantized after it
    return name


def _split_activation(layer):
    """The activation to compute after `layer`'s quantized output, or None (fused or absent)."""
    entry = layer_types.lookup(layer)
    if not entry.splits_activation:
        return None
    name = _activation_name(layer)
    if name is None or name == "linear" or (name in FUSED_ACTIVATIONS and "own_activation" in entry.fuses):
        return None
    return name


def _fused_into_next(layer, node, readers, outputs):
    """Whether the converter fuses `layer`'s output into the one operator that reads it."""
    fuses = layer_types.lookup(layer).fuses
    if len(node.outputs) != 1 or id(node.outputs[0]) in outputs or not fuses:
        return False
    consumers = readers.get(id(node.outputs[0]), [])
    if len(consumers) != 1:
        return False
    reader = getattr(consumers[0].operation, "target", consumers[0].operation)
    if "batch_norm" in fuses and isinstance(reader, keras.layers.BatchNormalization):
        return True
    return "activation" in fuses and _is_fused_activation(reader)


def _is_fused_activation(layer):
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer) in FUSED_ACTIVATIONS
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return (config.get("negative_slope", 0) == 0 and config.get("threshold", 0) == 0
                and config.get("max_value") in (None, 6, 6.0))
    return False
