"""The export of a quantization-aware model (`keras_compact.quantization.quantize_aware`).

On the TensorFlow backend a `QuantizeAware` layer computes with
`tf.quantization.fake_quant_with_min_max_vars` ops, whose ranges the converter
reads: the lowered copy keeps them. What the converter would otherwise fold
itself is folded here first, so that the ranges it reads are the ones trained:
each `BatchNormalization` that follows a convolution or `Dense` goes into that
layer's kernel and bias (with per-channel kernels this is the grid trained, scaled
per channel), and `PruningMask` wrappers give way to plain layers with their zeros.
"""

import warnings

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._cloning import as_functional, clone_with
from keras_compact.layers.quantize_aware import QuantizeAware, weight_mode

QUANTIZATIONS = ("int8", "int8_io")


def is_quantize_aware(model):
    return any(isinstance(layer, QuantizeAware) for layer in _keras_private.sublayers(model, include_self=False))


def check(model, quantization, float_layers):
    """Raises unless a quantization-aware `model` is exported as int8."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"{model.name!r} is quantization-aware (made by quantize_aware): it exports with its learned int8 "
            f"ranges, quantization='int8' or 'int8_io'. Received: quantization={quantization!r}. For a float "
            "file, export the model it was made from (with the trained weights copied back)."
        )
    if float_layers is not None:
        raise ValueError(
            "float_layers is not taken for a quantization-aware model: every layer of it trained with int8 "
            f"rounding. Received: float_layers={float_layers!r}"
        )


def warn_float_parts(report, model, quantization):
    """Warns when the file of a quantization-aware `model` computes some tensors in float32 (it has
    DEQUANTIZE operators beyond its outputs'): those had no learned range. Returns `report`."""
    outputs = 0 if quantization == "int8_io" else len(model.outputs)
    extra = report.operators.get("DEQUANTIZE", 0) - outputs
    if extra > 0:
        warnings.warn(
            f"{extra} DEQUANTIZE operator(s) inside {report.path}: some tensors of {model.name!r} had no learned "
            "range (raw keras.ops calls in the graph, the inside of a QRNN, or a BatchNormalization that follows no "
            "convolution or a transposed or separable one), so the converter left the operators reading them in float32. Pass representative_data= "
            "to export and the converter calibrates those tensors, keeping the learned ranges everywhere else (an "
            "operator LiteRT has no int8 kernel for, as CONV_3D, stays float32 either way).",
            stacklevel=3,
        )
    return report


def folded(model):
    """A functional copy of the quantization-aware `model` with batch norms folded and masks applied."""
    model = as_functional(model)
    pairs = _batch_norm_pairs(model)
    folded_into = {bn: kernel_layer for kernel_layer, bn in pairs.items()}
    layers = {layer.name: layer for layer in model.layers}

    def replace(layer):
        if not isinstance(layer, QuantizeAware):
            return None
        if layer.name in folded_into:
            return _identity(layer)
        batch_norm = layers[pairs[layer.name]].layer if layer.name in pairs else None
        if batch_norm is None and layer.layer is layer.target:
            return None
        return _with_kernel(layer, batch_norm)

    return clone_with(model, replace)


def _batch_norm_pairs(model):
    """`{kernel layer's wrapper name: batch norm's wrapper name}` for every foldable pair."""
    readers, calls = {}, {}
    for node in _keras_private.nodes(model):
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.arguments.keras_tensors:
            readers.setdefault(id(tensor), []).append(node.operation)
    pairs = {}
    for node in _keras_private.nodes(model):
        layer = node.operation
        if not (isinstance(layer, QuantizeAware) and weight_mode(layer.target) and layer.output_mode is None
                and layer.activation is None and calls[id(layer)] == 1):
            continue
        consumers = readers.get(id(node.outputs[0]), [])
        if len(consumers) != 1 or calls[id(consumers[0])] != 1:
            continue
        reader = consumers[0]
        if isinstance(reader, QuantizeAware) and isinstance(reader.layer, keras.layers.BatchNormalization) \
                and reader.layer.axis in (-1, len(node.outputs[0].shape) - 1) and not reader.quantize_inputs:
            pairs[layer.name] = reader.name
    return pairs


def _identity(wrapper):
    """What a folded batch norm's wrapper becomes: its output quantization alone."""
    identity = QuantizeAware(keras.layers.Identity(), output_mode=wrapper.output_mode, ema_decay=wrapper.ema_decay,
                             name=wrapper.name)
    values = _range_values(wrapper)
    return identity, lambda built: _set_ranges(built, values)


def _with_kernel(wrapper, batch_norm):
    """`wrapper` around a plain copy of its layer: the pruning mask applied, `batch_norm` folded in."""
    target = wrapper.target
    config = target.get_config()
    masked = {id(v): value for v, value in wrapper.layer.masked_values()} if wrapper.layer is not target else {}
    weights = [keras.ops.convert_to_numpy(masked.get(id(v), v.value)) for v in target.weights]
    if batch_norm is not None:  # a kernel and, with use_bias, a bias
        kernel, bias = _fold(weights[0], weights[1] if len(weights) > 1 else None, batch_norm, weight_mode(target))
        weights = [kernel, bias]
        config["use_bias"] = True
    inner = type(target).from_config(config)
    copy = QuantizeAware(inner, activation=wrapper.activation, output_mode=wrapper.output_mode,
                         quantize_inputs=wrapper.quantize_inputs, ema_decay=wrapper.ema_decay, name=wrapper.name)
    values = _range_values(wrapper)

    def set_weights(built):
        built.layer.set_weights(weights)
        _set_ranges(built, values)

    return copy, set_weights


def _fold(kernel, bias, batch_norm, mode):
    """`kernel` and `bias` of the layer computing `batch_norm(layer(x))` at inference."""
    gamma = keras.ops.convert_to_numpy(batch_norm.gamma.value) if batch_norm.scale else 1.0
    beta = keras.ops.convert_to_numpy(batch_norm.beta.value) if batch_norm.center else 0.0
    mean = keras.ops.convert_to_numpy(batch_norm.moving_mean.value)
    variance = keras.ops.convert_to_numpy(batch_norm.moving_variance.value)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    if bias is None:
        bias = np.zeros_like(mean)
    if mode == "depthwise":  # output channel c * multiplier + m
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    return kernel.astype("float32"), ((bias - mean) * scale + beta).astype("float32")


def _range_values(wrapper):
    """`{name: value}` of the wrapper's own variables (its learned ranges and step count), not its layer's."""
    inner = {id(variable) for variable in wrapper.layer.weights}
    return {variable.name: keras.ops.convert_to_numpy(variable.value) for variable in wrapper.weights
            if id(variable) not in inner}


def _set_ranges(built, values):
    inner = {id(variable) for variable in built.layer.weights}
    for variable in built.weights:
        if id(variable) not in inner and variable.name in values:
            variable.assign(values[variable.name])
