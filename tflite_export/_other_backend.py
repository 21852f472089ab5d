"""Export from a process whose Keras runs on JAX or PyTorch.

The TFLite converter reads TensorFlow graphs, so the model is saved to a `.keras`
file and converted by `export` in the TensorFlow-backend worker Python (`_worker`:
the same code, so the same file as a TensorFlow-backend process makes from those
weights). The file is then run
in LiteRT here and compared with the user's own model before it is renamed
into place, as on TensorFlow.
"""

import dataclasses
import json
import os
import sys
import tempfile

import numpy as np

from tflite_export import _convert_worker, _worker


def convert(reference, examples, representative, path, **options):
    """`export(reference, ...)` in a TensorFlow-backend Python: `(bytes, ExportReport)`.

    Args:
        reference: the deployable Keras model.
        examples: the input arrays it is compared on, one per model input.
        representative: the calibration arrays, one per input, or None.
        path: the user's path, which a refusal from that Python names instead of its own file.
        **options: the other arguments of `export` (JSON-serialisable).
    """
    with tempfile.TemporaryDirectory(prefix="keras-compact-export-") as work:
        written = os.path.join(work, "model.tflite")
        try:
            result = _run(work, reference, examples, representative, options)
        except ValueError as error:
            if written not in str(error):
                raise
            raise ValueError(str(error).replace(written, os.fspath(path))) from None
        with open(written, "rb") as stream:
            return stream.read(), result["report"]


def quantization_report(reference, representative, debug, quantization):
    """`quantization_report(reference, ...)` in a TensorFlow-backend Python (`debug`: the arrays the
    errors are measured on, one per input)."""
    with tempfile.TemporaryDirectory(prefix="keras-compact-export-") as work:
        options = {"function": "quantization_report", "quantization": quantization}
        return _run(work, reference, debug, representative, options)["report"]


def write_job(work, reference, examples, representative, options):
    """The folder `_convert_worker` reads: the model, its data, the options and what to import first."""
    with open(os.path.join(work, "imports.json"), "w") as stream:
        json.dump({"modules": defining_modules(reference), "path": [os.path.abspath(p or ".") for p in sys.path]},
                  stream)
    reference.save(os.path.join(work, "model.keras"))
    np.savez(os.path.join(work, "data.npz"), **_convert_worker.numbered("examples_", examples),
             **_convert_worker.numbered("representative_", representative))
    with open(os.path.join(work, "options.json"), "w") as stream:
        json.dump(options, stream)


def _run(work, reference, examples, representative, options):
    """Runs `_convert_worker` on the model saved in `work`; its result dict, or its error raised here."""
    write_job(work, reference, examples, representative, options)
    try:
        return _worker.run(work)
    except _worker.WorkerDied as died:
        from tflite_export import _convert

        raise _convert.crashed(reference, _convert.stage(options.get("quantization"), representative), died) from None


def defining_modules(model):
    """The modules that define `model`'s layer classes outside Keras and this package (a user's layer, a
    KerasHub block): the worker imports them so that their classes are registered when it loads the file.
    A class defined in `__main__` (a script, a notebook) cannot be imported there: refused, with the way out."""
    from keras_compact import _keras_private

    modules, inline = set(), set()
    for layer in _keras_private.sublayers(model):
        module = type(layer).__module__
        if module == "__main__":
            inline.add(type(layer).__name__)
        elif module.split(".")[0] not in ("keras", "keras_compact", "tflite_export"):
            modules.add(module)
    if inline:
        raise ValueError(
            f"export converts a JAX or PyTorch model in a TensorFlow-backend Python, which must import the "
            f"classes of its layers; {sorted(inline)} are defined in __main__ (a script or a notebook), which it "
            "cannot import. Define them in a module (a .py file on the path), or export on the TensorFlow "
            "backend."
        )
    return sorted(modules)


def report_with(report, path, verification):
    """The subprocess's report for `path`, with the comparison made against the user's model."""
    return dataclasses.replace(report, path=os.fspath(path), verification=verification)
