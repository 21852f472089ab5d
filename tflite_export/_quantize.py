"""Quantization settings of the converter and the representative data they need."""

import keras
import tensorflow as tf

from keras_compact import _keras_private
from keras_compact._checks import one_of, raise_errors
from tflite_export import _verify

QUANTIZATIONS = (None, "dynamic", "float16", "int8", "int8_io", "int16x8")
# The ones that quantize activations: calibrated on representative data.
CALIBRATED = ("int8", "int8_io", "int16x8")
# Calibration rarely improves past a few hundred examples; more only costs time.
MAX_REPRESENTATIVE_EXAMPLES = 300


def check(quantization):
    raise_errors([one_of("quantization", quantization, QUANTIZATIONS)])


def check_calibration(quantization, representative_data, quantize_aware):
    """Raises when `quantization` needs ranges that neither the model nor `representative_data` gives."""
    if quantization in CALIBRATED and representative_data is None and not quantize_aware:
        raise ValueError(
            f"quantization={quantization!r} quantizes activations and needs representative_data: "
            "a few hundred real inputs (an array, a list/dict per input, a tf.data.Dataset or a "
            "generator), or a model trained with keras_compact.quantization.quantize_aware, which learned its "
            "ranges. Received: representative_data=None"
        )


def check_integer_inputs(model, quantization):
    """Raises when `quantization="int16x8"` meets an integer input, on which the converter's 16x8 mode fails."""
    if quantization != "int16x8":
        return
    integers = [tensor.name for tensor in keras.tree.flatten(model.inputs)
                if keras.backend.standardize_dtype(tensor.dtype).startswith(("int", "uint", "bool"))]
    if integers:
        raise ValueError(
            f"quantization='int16x8' cannot take {model.name!r}: its input(s) {integers} hold integers (token ids, "
            "as an Embedding reads), and the TFLite converter's 16x8 mode fails on them (\"Max and min for dynamic "
            "tensors should be recorded during calibration\", tensorflow/model-optimization#1090; it has no 16x8 "
            "CAST either). Use quantization='int8' (or float32) for this model."
        )


class FloatLayersError(ValueError):
    """`float_layers` names a layer the file has no operator of."""


def float_layer_names(model, float_layers, quantization):
    """`float_layers` (names, or a callable `layer -> bool`) as checked names of `model`'s layers, or None."""
    if float_layers is None:
        return None
    if quantization != "int8":
        raise ValueError(
            "float_layers keeps the named layers in float32 in an otherwise int8 file: it needs "
            f"quantization='int8'. Received: quantization={quantization!r}"
        )
    layers = [layer for layer in _keras_private.sublayers(model, include_self=False)
              if not isinstance(layer, keras.layers.InputLayer)]
    if callable(float_layers):
        names = [layer.name for layer in layers if float_layers(layer)]
        if not names:
            raise ValueError("float_layers (a callable) chose no layer of the model; nothing would stay in float32.")
        return names
    if isinstance(float_layers, str) or not all(isinstance(name, str) for name in float_layers) or not float_layers:
        raise ValueError(
            "float_layers must be a non-empty list of layer names or a callable layer -> bool. "
            f"Received: float_layers={float_layers!r}"
        )
    unknown = sorted(set(float_layers) - {layer.name for layer in layers})
    if unknown:
        raise ValueError(
            f"float_layers names layers that {model.name!r} does not have: {unknown}. Its layers: "
            f"{sorted(layer.name for layer in layers)[:30]}"
        )
    return list(dict.fromkeys(float_layers))


def selective(converter, naming, float_layers, representative):
    """The int8 file with `float_layers` (names of the user's layers; wrappers name what they wrap)
    left in float32: calibrated once, then quantized with their operators on the quantizer's
    deny list (`tf.lite.experimental.QuantizationDebugger`'s selective quantization). `naming`
    maps the converter's tensor names to layers (`_convert.naming`: plain data, as a worker gets it)."""
    from tflite_export import _flatbuffer as fb
    from tflite_export._quantization_report import layer_of

    wanted = {name: user for name, user in naming["users"].items() if user in float_layers}
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative)
    subgraph = fb.read(debugger.calibrated_model).subgraphs[0]
    names = set(naming["names"])
    nodes, found = [], set()
    for operator in subgraph.operators:
        for index in operator.outputs:
            tensor = subgraph.tensors[index].name.decode()
            layer = layer_of(tensor, names, naming["outputs"], scope=naming["scope"])
            if layer in wanted:
                nodes.append(tensor)
                found.add(wanted[layer])
    missing = [name for name in float_layers if name not in found]
    if missing:
        raise FloatLayersError(
            f"float_layers names layers with no operator of their own in the file: {missing} (a layer the "
            "converter folds into its neighbour, or one that computes nothing at inference, such as Dropout). "
            "Name the layer that computes it."
        )
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
    return debugger.get_nondebug_quantized_model()


def statistics(converter, debug_dataset):
    """TensorFlow's quantization debugger on the converter's int8 file: its per-tensor statistics (CSV)."""
    import io

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_dataset)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    return dump.getvalue()


def representative_examples(model, data):
    """Up to MAX_REPRESENTATIVE_EXAMPLES examples as a list with one entry per model input.

    `data` is what `verify_with` accepts (an array, a list or dict per input), a
    `tf.data.Dataset`, or a generator / iterable of such batches; `(x, y)` pairs
    keep `x`.
    """
    entries = _verify.model_inputs(model, data, "representative_data", limit=MAX_REPRESENTATIVE_EXAMPLES)
    entries = [entry[:MAX_REPRESENTATIVE_EXAMPLES] for entry in entries]
    bad = _verify.non_finite_examples(entries)
    if bad.any():
        raise ValueError(
            f"representative_data holds NaN or infinite values in {int(bad.sum())} of its {len(bad)} examples; "
            "int8 ranges calibrated on them would be meaningless. Clean them first."
        )
    return entries


def configure(converter, quantization, representative):
    """Sets the converter's options; `representative()` yields dicts of batch-1 head inputs, or is
    None for a quantization-aware model without representative data (the converter then reads
    every range from its fake-quantization ops)."""
    if quantization is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int16x8":  # int16 activations, int8 weights: LiteRT's 16x8 kernels
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    elif quantization in ("int8", "int8_io"):
        if representative is not None:
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantization == "int8_io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
