"""The worker process's side of a job (`_worker`): run it, write `WORK/result.pkl`.

`python -m tflite_export._convert_worker --serve` (what `_worker` starts, with
`KERAS_BACKEND=tensorflow`) reads one work folder per line from stdin and answers
`done` on its own line when the folder's result is written; `python -m
tflite_export._convert_worker WORK` runs one folder. The result is a dict with what
the job returns, or with the error it raised, which the calling process raises in turn.

The work folder holds `options.json`, whose `"function"` key names the job:
- `"convert"` (`_convert.run_job`): the TFLite converter on `saved_model/`, with
  `data.npz` holding the head's calibration examples;
- `"export"` (the default) or `"quantization_report"`, for a JAX or PyTorch process
  (`_other_backend`): that function on `model.keras`, with `data.npz` holding
  `examples_<i>` and `representative_<i>` arrays, one per model input, and the other
  arguments in `options.json`.
"""

import json
import os
import pickle
import sys


def main(argv=None):
    """Runs the work folder `argv[0]` (default: the command line's), or with `--serve` every folder
    read from stdin; always writes each folder's `result.pkl`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "--serve":
        return _serve()
    work = argv[0]
    try:
        result = _result(work)
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the calling process
        result = {"error": error}
    with open(os.path.join(work, "result.pkl"), "wb") as stream:
        try:
            pickle.dump(result, stream)
        except Exception:  # an error that does not pickle goes back as its repr
            stream.seek(0)
            stream.truncate()
            pickle.dump({"error": RuntimeError(repr(result.get("error")))}, stream)
    return 0


def numbered(prefix, values):
    """`values` (arrays, one per input) as `data.npz` entries `<prefix><i>`."""
    import numpy as np

    return {f"{prefix}{i}": np.asarray(value) for i, value in enumerate(values or [])}


def read_numbered(data, prefix):
    """The arrays `numbered` wrote under `prefix`, in order; None when there are none."""
    keys = sorted((k for k in data.files if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    return [data[k] for k in keys] or None


def _serve():
    """Answers `done` for each work folder read from stdin, until stdin closes. Whatever the job
    prints goes to stderr: stdout carries only the answers."""
    from tflite_export import _convert, _worker  # noqa: F401 - TensorFlow loads before the first job comes

    _worker.IN_WORKER = True
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import keras

    for line in sys.stdin:
        main([line.strip()])
        keras.backend.clear_session()
        answers.write("done\n")
        answers.flush()
    return 0


def _result(work):
    import numpy as np

    with open(os.path.join(work, "options.json")) as stream:
        options = json.load(stream)
    if options.get("function") == "convert":
        from tflite_export import _convert

        return _convert.run_job(work, options)

    from tflite_export import export, quantization_report

    data = np.load(os.path.join(work, "data.npz"))

    def inputs(prefix):
        values = read_numbered(data, prefix)
        return values[0] if values and len(values) == 1 else values

    _import_defining_modules(work)
    model = _load(os.path.join(work, "model.keras"))
    if options.pop("function", "export") == "quantization_report":
        return {"report": quantization_report(model, inputs("representative_"), debug_data=inputs("examples_"),
                                              **options)}
    report = export(model, os.path.join(work, "model.tflite"), verify_with=inputs("examples_"),
                    representative_data=inputs("representative_"), **options)
    return {"report": report}


def _import_defining_modules(work):
    """Imports the modules that define the model's own layer classes (`_other_backend.defining_modules`),
    on the calling Python's path, so that loading the file finds them registered."""
    import importlib

    with open(os.path.join(work, "imports.json")) as stream:
        imports = json.load(stream)
    sys.path.extend(entry for entry in imports["path"] if entry not in sys.path)
    for module in imports["modules"]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise RuntimeError(
                f"export converts a JAX or PyTorch model in a TensorFlow-backend Python, which could not import "
                f"{module!r}, where layers of the model are defined: {error}"
            ) from None


def _load(path):
    import keras

    import keras_compact  # noqa: F401 - registers this package's layers for loading

    try:
        return keras.models.load_model(path)
    except Exception as error:
        raise RuntimeError(
            "export converts a JAX or PyTorch model in a TensorFlow-backend Python, which could not load it "
            f"from its .keras file: {error}. Custom layers must be registered "
            "(keras.saving.register_keras_serializable) in the module that defines them."
        ) from None


if __name__ == "__main__":
    sys.exit(main())
