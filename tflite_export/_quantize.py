"""Quantization settings of the converter and the representative data they need."""

import tensorflow as tf

from tflite_export import _verify

QUANTIZATIONS = (None, "dynamic", "float16", "int8", "int8_io", "int16x8")
# The ones that quantize activations: calibrated on representative data.
CALIBRATED = ("int8", "int8_io", "int16x8")
# Calibration rarely improves past a few hundred examples; more only costs time.
MAX_REPRESENTATIVE_EXAMPLES = 300


def check(quantization, representative_data):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    if quantization in CALIBRATED and representative_data is None:
        raise ValueError(
            f"quantization={quantization!r} quantizes activations and needs representative_data: "
            "a few hundred real inputs (an array, a list/dict per input, a tf.data.Dataset or a "
            "generator). Received: representative_data=None"
        )


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
    """Sets the converter's options; `representative()` yields dicts of batch-1 head inputs."""
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
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantization == "int8_io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
