"""The convert stage: the TFLite converter (and its calibrator) on the model's SavedModel, in a worker process.

The converter and the int8 calibrator are C++ that can kill the process they run in
(int8 calibration of an `LSTM` or `GRU` dies with SIGSEGV in TensorFlow 2.21), so they
never run in the user's process. `export` writes the lowered model's head as a SavedModel
here (`saved_head`) and hands it, with the calibration examples, to a TensorFlow Python
that stays up between exports (`_worker`); a crash there is a `ConverterCrashed` here,
naming the stage, the layer types involved and what to try, and the next export starts a
new worker. The JAX and PyTorch path runs the whole `export` in that worker, so there the
conversion runs in place (`_worker.IN_WORKER`).
"""

import contextlib
import json
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_compact import _keras_private
from tflite_export import _convert_worker
from tflite_export import _pairing
from tflite_export import _projection
from tflite_export import _quantize
from tflite_export import _worker

# Layer types whose int8 calibration crashes TensorFlow 2.21's calibrator, and what converts today.
_RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


class ConverterCrashed(RuntimeError):
    """The TFLite converter or its calibrator killed the worker process it ran in."""


@contextlib.contextmanager
def saved_head(lowered, cuts, batch_size=1):
    """The lowered model's head (without its LSH_PROJECTIONs) as a SavedModel:
    `(folder, head, specs)`, valid inside the `with`; `specs` are `(name, dtype, shape)`
    of the head's inputs, in its order."""
    if cuts:
        head, specs = _projection.head_model(lowered, cuts)
    else:
        head = lowered
        specs = [(t.name, t.dtype, (batch_size,) + tuple(t.shape[1:])) for t in lowered.inputs]
    signature = [tf.TensorSpec(shape, dtype, name=name) for name, dtype, shape in specs]
    struct = _keras_private.inputs_struct(head)
    if isinstance(struct, dict) and not cuts:  # a model called on a dict of inputs takes the signature so
        signature = [keras.tree.pack_sequence_as(struct, signature)]
    elif len(signature) > 1:
        signature = [signature]
    with tempfile.TemporaryDirectory(prefix="keras-compact-convert-") as folder:
        head.export(
            os.path.join(folder, "saved_model"),
            format="tf_saved_model",
            verbose=False,
            input_signature=signature,
        )
        yield folder, head, specs


def convert(lowered, cuts, quantization=None, *, sparse=False, representative=None, batch_size=1,
            float_layers=None, reference=None):
    """The lowered model as `.tflite` bytes, its inputs and outputs in the Keras model's order and
    named after it (`_pairing`); with `cuts`, its head plus builtin LSH_PROJECTIONs; with
    `float_layers` (names of `reference`'s layers), those left in float32."""
    reference = reference if reference is not None else lowered
    with saved_head(lowered, cuts, batch_size) as (folder, head, specs):
        examples = None
        if quantization in _quantize.CALIBRATED and representative is not None:
            examples = _projection.head_inputs(lowered, cuts, specs, representative)
        job = {"quantization": quantization, "sparse": bool(sparse), "specs": _plain_specs(specs)}
        if float_layers:
            job["float_layers"] = list(float_layers)
            job["naming"] = naming(head, reference)
        result = _run(folder, job, examples, head, stage=stage(quantization, examples))
    model_bytes = result["bytes"]
    if cuts:
        model_bytes = _projection.lower_projections(model_bytes, cuts)
    return _pairing.in_keras_order(model_bytes, [tensor.name for tensor in lowered.inputs],
                                   _pairing.output_names(reference))


def statistics(lowered, cuts, quantization, representative, debug, count):
    """TensorFlow's quantization debugger on the int8 file of `lowered`, calibrated on `representative`
    and run on the first `count` of `debug` (both model inputs): `(per-tensor statistics as CSV, head)`."""
    with saved_head(lowered, cuts) as (folder, head, specs):
        examples = _projection.head_inputs(lowered, cuts, specs, representative)
        debug_examples = _projection.head_inputs(lowered, cuts, specs, debug)
        job = {"quantization": quantization, "sparse": False, "specs": _plain_specs(specs), "debug_count": count}
        result = _run(folder, job, examples, head, stage="calibrating and debugging int8 ranges",
                      debug=debug_examples)
    return result["statistics"], head


def naming(head, reference):
    """What maps the converter's tensor names to `reference`'s layers (`_quantization_report.layer_of`)."""
    from tflite_export._quantization_report import head_names, users_names

    names, outputs = head_names(head)
    return {"names": sorted(names), "outputs": outputs, "scope": head.name, "users": users_names(reference)}


def _plain_specs(specs):
    return [(name, keras.backend.standardize_dtype(dtype), [None if d is None else int(d) for d in shape])
            for name, dtype, shape in specs]


def stage(quantization, examples):
    if quantization in _quantize.CALIBRATED and examples is not None:
        return f"calibrating {quantization} ranges"
    return "converting"


def _run(folder, job, examples, head, stage, debug=None):
    """Runs the converter job in `folder` (in the worker, or here inside it); its result dict."""
    np.savez(os.path.join(folder, "data.npz"), **_convert_worker.numbered("head_", examples),
             **_convert_worker.numbered("debug_", debug))
    with open(os.path.join(folder, "options.json"), "w") as stream:
        json.dump(dict(job, function="convert"), stream)
    try:
        return _worker.run(folder)
    except _worker.WorkerDied as died:
        raise crashed(head, stage, died) from None
    except _quantize.FloatLayersError:
        raise
    except Exception as error:  # the converter raises ConverterError and others, with MLIR dumps
        raise unsupported(head, error) from error


def crashed(model, stage, died):
    """The ConverterCrashed for `model`, whose conversion killed the worker while `stage`."""
    types = sorted({type(layer).__name__ for layer in _keras_private.sublayers(model, include_self=False)})
    recurrent = [name for name in types if name in _RECURRENT]
    advice = ("Recurrent layers are the known cause: TensorFlow's int8 calibrator crashes on their loop, which "
              "export unrolls (unroll=True) only over sequences of known length. Give the model a fixed length "
              "(keras.Input((steps, features)), sequences padded to it), or export float32, float16 or "
              "quantization='dynamic', which do not calibrate."
              if recurrent else "Try another quantization (float32, float16 or 'dynamic' do not calibrate).")
    return ConverterCrashed(
        f"The TFLite converter crashed ({died.how}) while {stage} for {model.name!r}, in the worker process that "
        f"converts; this process is unaffected and nothing was written. Layer types in the model: "
        f"{recurrent or types[:12]}. {advice}" + (f" The worker's last words: {died.tail}" if died.tail else "")
    )


def unsupported(model, error):
    """A one-paragraph ValueError naming the layers and TF ops the converter could not write."""
    text = str(error)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", text)))
    names = {layer.name for layer in _keras_private.sublayers(model)} - {model.name}
    layers = []
    for path in re.findall(r'"([\w./-]+)@__inference', text):
        for part in path.split("/"):
            for candidate in (part, re.sub(r"_\d+$", "", part)):
                if candidate in names and candidate not in layers:
                    layers.append(candidate)
    if ops:
        where = f"Layer(s) {layers} use" if layers else "The model uses"
        return ValueError(
            f"{where} TensorFlow op(s) {ops} that have no TFLite builtin operator, so the stock LiteRT "
            "runtime could not run the file. Replace that computation with layers made of supported ops, "
            "or do it outside the model (before or after the .tflite file)."
        )
    first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    advice = (" LiteRT's 16x8 quantization covers fewer operators than int8: use quantization='int8' (or "
              "float32 for this model)." if "16x8" in first else "")
    return ValueError(f"The TFLite converter could not convert the model: {first}{advice}")


def run_job(folder, options):
    """The worker's side of a converter job (`_convert_worker`): the converter on `folder`'s SavedModel."""
    data = np.load(os.path.join(folder, "data.npz"))
    specs = options["specs"]
    examples = _convert_worker.read_numbered(data, "head_")
    converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(folder, "saved_model"))
    _quantize.configure(converter, options["quantization"],
                        None if examples is None else lambda: batches_of_one(specs, examples))
    if options["sparse"]:
        converter.optimizations = list(converter.optimizations) + [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if "debug_count" in options:
        debug = _convert_worker.read_numbered(data, "debug_")
        return {"statistics": _quantize.statistics(
            converter, lambda: lists_of_one(specs, debug, options["debug_count"]))}
    if options.get("float_layers"):
        debug = lambda: lists_of_one(specs, examples, 8)  # noqa: E731 (the debugger runs none of them)
        return {"bytes": _quantize.selective(converter, options["naming"], options["float_layers"], debug)}
    return {"bytes": converter.convert()}


def batches_of_one(specs, values):
    for i in range(len(values[0])):
        yield {name: np.asarray(value[i : i + 1], dtype=dtype) for (name, dtype, _), value in zip(specs, values)}


def lists_of_one(specs, values, count):
    """The first `count` examples, each a list of batch-1 inputs in `specs`' order (the debugger's format)."""
    for i in range(min(len(values[0]), count)):
        yield [np.asarray(value[i : i + 1], dtype=dtype) for (_, dtype, _), value in zip(specs, values)]
