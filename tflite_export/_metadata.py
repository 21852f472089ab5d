"""The `keras_compact` metadata entry of a file: what an app needs to feed and read it."""

import json

import keras_compact
from tflite_export import _flatbuffer as fb
from tflite_export import _inspect


def with_metadata(model_bytes, cuts, labels, options, kinds):
    """Adds the `keras_compact` metadata entry: what an app needs to feed and read the file.

    `inputs` and `outputs` list the file's tensors in the Keras model's order (the
    order `export` writes them in); each output's `kind` is how it was verified
    (`"classes"` or `"values"`, `kinds` in that order)."""
    parsed = fb.read(model_bytes)
    cut_inputs = {}
    for cut in cuts:
        kinds = ["lsh_ids", "lsh_weights"] if cut.ragged else ["lsh_dense"]
        cut_inputs.update(zip(cut.input_names, kinds))
    formats = {
        "lsh_dense": "float32 [n]: features 0..n-1 weighted by the values; one example per invoke",
        "lsh_ids": "int64 [k]: the example's feature ids (at least one; resize per example)",
        "lsh_weights": "float32 [k]: weight of each id (pass one id of weight 0 for no features)",
    }
    inputs = []
    for name, dtype, shape in fb.input_specs(parsed):
        kind = cut_inputs.get(name, "tensor")
        inputs.append(dict(name=name, dtype=dtype, shape=list(shape), format=formats.get(kind, "tensor")))
    outputs = [dict(name=name, dtype=dtype, shape=list(shape), kind=kind)
               for (name, dtype, shape), kind in zip(fb.output_specs(parsed), kinds)]
    description = {
        "producer": f"keras-compact {keras_compact.__version__}",
        "signature": "serving_default",
        "inputs": inputs,
        "outputs": outputs,
        "labels": labels,
        "quantization": options.quantization,
        "projection_lowering": options.projection_lowering,
        "metadata": options.metadata,
    }
    fb.set_metadata(parsed, _inspect.METADATA_NAME, json.dumps(description).encode())
    return fb.write(parsed)
