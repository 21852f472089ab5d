"""The TensorFlow-backend half of an export from JAX or PyTorch (`_other_backend`).

`_other_backend` saves the model and its arrays into a work folder and runs
`python -m tflite_export._convert_worker WORK` with `KERAS_BACKEND=tensorflow`.
This module loads them, runs `export` (or `quantization_report`) as a
TensorFlow-backend process would, and writes `WORK/result.pkl`: a dict with the
report (and, for `export`, the file's input names), or with the error raised,
which the calling process raises in turn.

The work folder holds `model.keras`; `data.npz` with `examples_<i>` and
`representative_<i>` arrays, one per model input; and `options.json`, the other
arguments of the function named by its `"function"` key (`"export"` when absent).
"""

import json
import os
import pickle
import sys


def main(argv=None):
    """Runs the work folder `argv[0]` (default: the command line's); always writes its `result.pkl`."""
    work = (sys.argv[1:] if argv is None else argv)[0]
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


def _result(work):
    import numpy as np

    from tflite_export import export, quantization_report

    with open(os.path.join(work, "options.json")) as stream:
        options = json.load(stream)
    data = np.load(os.path.join(work, "data.npz"))

    def inputs(prefix):
        keys = sorted((k for k in data.files if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))
        values = [data[k] for k in keys]
        return None if not values else values[0] if len(values) == 1 else values

    model = _load(os.path.join(work, "model.keras"))
    if options.pop("function", "export") == "quantization_report":
        return {"report": quantization_report(model, inputs("representative_"), debug_data=inputs("examples_"),
                                              **options)}
    report = export(model, os.path.join(work, "model.tflite"), verify_with=inputs("examples_"),
                    representative_data=inputs("representative_"), **options)
    from keras_compact._cloning import io_names

    # The file's names for the inputs, in the model's order (what export compared with).
    return {"report": report, "names": io_names(model.inputs)}


def _load(path):
    import keras

    import keras_compact  # noqa: F401 - registers this package's layers for loading

    try:
        return keras.models.load_model(path)
    except Exception as error:
        raise RuntimeError(
            "export converts a JAX or PyTorch model in a TensorFlow-backend Python, which could not load it "
            f"from its .keras file: {error}. Custom layers must be registered "
            "(keras.saving.register_keras_serializable) in a module that module imports."
        ) from None


if __name__ == "__main__":
    sys.exit(main())
