"""Where int8 (or 16x8) quantization loses accuracy: the error each operator of the file adds.

TensorFlow's `tf.lite.experimental.QuantizationDebugger` runs the quantized file
with every quantized operator shadowed by its float computation on the same
(dequantized) inputs, so the difference it records per operator is the error
*that operator* adds, not the error accumulated before it. This module runs it on
the file `export` would write, maps each operator back to the Keras layer it came
from (the converter keeps the layer names in its tensor names), and ranks them.
"""

import csv
import dataclasses
import io
import re

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._cloning import check_model
from tflite_export import _convert
from tflite_export import _lowering
from tflite_export import _other_backend
from tflite_export import _projection
from tflite_export import _quantize
from tflite_export import _verify
from tflite_export import _worker

# The debugger runs each example twice per operator; a few dozen examples rank the layers.
_DEBUG_EXAMPLES = 64


@dataclasses.dataclass(frozen=True)
class LayerError:
    """The error one quantized operator adds.

    `layer` is the name of the Keras layer it computes (None where the
    converter's tensor name names none);
    `error_steps` the root-mean-square difference from the float computation on
    the same inputs, in quantization steps of the output (about 0.29 is the
    rounding alone; larger is error the operator adds, from its weights or a
    range too wide for its values); `max_abs_error` in the output's units.
    """

    layer: str
    operator: str
    tensor: str
    error_steps: float
    max_abs_error: float
    scale: float


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """Per operator of the quantized file, worst first (`quantization_report`)."""

    quantization: str
    examples: int
    layers: tuple

    def worst(self, count=5):
        """The names of the `count` layers that add the most error, worst first."""
        names = []
        for row in self.layers:
            if row.layer is not None and row.layer not in names:
                names.append(row.layer)
        return names[:count]

    def __str__(self):
        rows = [
            f"quantization={self.quantization!r}: the error each operator adds, on {self.examples} examples "
            "(RMSE in quantization steps; rounding alone is about 0.29)",
            "",
            "| layer | operator | error (steps) | max abs error |",
            "|---|---|---|---|",
        ]
        rows += [f"| {row.layer or f'(tensor {row.tensor})'} | {row.operator} | {row.error_steps:.2f} | "
                 f"{row.max_abs_error:.4g} |" for row in self.layers[:15]]
        if len(self.layers) > 15:
            rows.append(f"| ({len(self.layers) - 15} more) | | | |")
        return "\n".join(rows)

    def _repr_markdown_(self):
        return str(self)


def quantization_report(model, representative_data, quantization="int8", debug_data=None):
    """The error each operator of the quantized file adds, mapped to Keras layers, worst first.

    Export with `quantization="int8"` refuses a file whose top-1 class agrees with
    the Keras model too rarely; this says where the error comes from. It converts
    the model as `export` does (calibrated on `representative_data`), then runs
    TensorFlow's quantization debugger on up to 64 of those examples (or of
    `debug_data`): every quantized operator is compared with its float
    computation on the same inputs.
    Layers at the top of the list are the ones to keep in float32 or to train
    quantization-aware.

    Args:
        model: a Keras model (as `export` takes it).
        representative_data: calibration inputs, as `export` takes them (a
            list in the Keras model's input order, or a dict keyed by input name).
        quantization: `"int8"` or `"int8_io"` (the same operators inside). The
            debugger quantizes to int8 only, so `"int16x8"` is refused.
        debug_data: the inputs to measure the errors on, as `export`'s
            `verify_with` takes them (default: `representative_data`).

    Returns:
        A `QuantizationReport`: `.layers` (`LayerError`s, worst first),
        `.worst(count)` (layer names), `print(report)` for a table.

    Example:

    >>> model = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(16, activation="relu",
    ...                           name="hidden"), keras.layers.Dense(3, name="classes")])
    >>> data = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> report = quantization_report(model, data)
    >>> sorted(report.worst())
    ['classes', 'hidden']
    """
    reference = _checked_reference(model, representative_data, quantization)
    _worker.start()
    representative = _quantize.representative_examples(reference, representative_data)
    debug = representative
    if debug_data is not None:
        debug = _verify.model_inputs(reference, debug_data, "debug_data", limit=_DEBUG_EXAMPLES)
    if keras.backend.backend() != "tensorflow":
        return _other_backend.quantization_report(reference, representative, debug, quantization)
    lowered = _lowering.lowered_copy(reference, "builtin", unroll_recurrent=True)
    count = min(len(debug[0]), _DEBUG_EXAMPLES)
    statistics, head = _convert.statistics(lowered, _projection.find_projections(lowered), quantization,
                                           representative, debug, count)
    return QuantizationReport(quantization, count, _rows(statistics, head, reference))


def _checked_reference(model, representative_data, quantization):
    """The model the report converts (`export`'s), after the checks of the arguments."""
    from tflite_export import _export

    if quantization not in ("int8", "int8_io"):
        raise ValueError(
            "quantization_report measures int8 quantization (TensorFlow's debugger quantizes to int8 only), "
            f"one of ('int8', 'int8_io'). Received: quantization={quantization!r}"
        )
    check_model(model, "quantization_report")
    reference = _export._deployable(model)
    if _export._qat.is_quantize_aware(reference):
        raise ValueError(
            f"{reference.name!r} is quantization-aware: its int8 file uses the ranges it learned, and export "
            "verifies that file against it (report.top1_agreement). quantization_report measures post-training "
            "int8 of a float model: pass the model quantize_aware was given."
        )
    if representative_data is None:
        raise ValueError(
            "quantization_report calibrates int8 ranges and needs representative_data: a few hundred real "
            "inputs (an array, a list/dict per input, a tf.data.Dataset or a generator). "
            "Received: representative_data=None"
        )
    return reference


def _rows(statistics, head, reference):
    """The debugger's per-tensor statistics (CSV) as `LayerError`s, worst first."""
    names, outputs = head_names(head)
    users = users_names(reference)
    rows = []
    for stats in csv.DictReader(io.StringIO(statistics)):
        scale = float(stats["scale"] or "nan")
        rmse = float(np.sqrt(float(stats["mean_squared_error"] or "nan")))
        layer = layer_of(stats["tensor_name"], names, outputs, scope=head.name)
        rows.append(LayerError(
            layer=users.get(layer, layer), operator=stats["op_name"], tensor=stats["tensor_name"],
            error_steps=rmse / scale if scale > 0 else float("nan"),
            max_abs_error=float(stats["max_abs_error"] or "nan"), scale=scale,
        ))
    rows.sort(key=lambda row: -row.error_steps if np.isfinite(row.error_steps) else 0.0)
    return tuple(rows)


def head_names(head):
    """`(layer names, output layer names)` of the converted head: what `layer_of` matches. A recurrent
    layer's cell is left out, so its operators name the layer the user made."""
    layers = _keras_private.sublayers(head)
    cells = {layer.cell.name for layer in layers if isinstance(layer, keras.layers.RNN)}
    names = {layer.name for layer in layers} - {head.name} - cells
    return names, list(getattr(head, "output_names", None) or [])


def users_names(model):
    """`{name: the user's name}` for every layer of `model` and every layer inside its wrappers:
    the lowered copy the converter sees holds the layers inside `TargetedDropout` and
    `PruningMask` (and a `Bidirectional`'s two directions), and the user knows the wrapper's name."""
    names = {}
    for layer in _keras_private.sublayers(model, include_self=False):
        names.setdefault(layer.name, layer.name)
        inner = layer
        while isinstance(inner, keras.layers.Wrapper):
            inner = inner.layer
            names.setdefault(inner.name, layer.name)
        if isinstance(layer, keras.layers.Bidirectional):  # its two directions are the user's one layer
            names[layer.forward_layer.name] = names[layer.backward_layer.name] = layer.name
    return names


def layer_of(tensor, names, outputs, scope=None):
    """The Keras layer a converter tensor name comes from (`model_1/block2a_se_reduce_1/Sigmoid`,
    fused names joined by `;`): the last path part that names a layer; a model output
    (`StatefulPartitionedCall_1:0`), the layer that computes it; else None.

    TensorFlow makes name scopes unique by appending `_<n>`, and the converter's trace
    does so for every scope when the model's own (`scope`, its name) reads `<scope>_<n>`:
    then the scope `dense_1` is the layer `dense`, and `dense_1_2` the layer `dense_1`.
    Otherwise (or without `scope`) a part that is a layer's name is that layer.
    """
    output = re.fullmatch(r"StatefulPartitionedCall(?:_\d+)?:(\d+)", tensor)
    if output and int(output.group(1)) < len(outputs):
        return outputs[int(output.group(1))]
    parts = re.split(r"[/;]", tensor)
    suffixed = scope is not None and re.fullmatch(re.escape(scope) + r"_\d+", parts[0]) is not None
    found = None
    for part in parts:
        stripped = re.sub(r"_\d+$", "", part)
        for candidate in ((stripped, part) if suffixed else (part, stripped)):
            if candidate in names:
                found = candidate
                break
    return found
