"""How a `.tflite` file's tensors pair with a Keras model's inputs and outputs: by name.

`export` names the file's inputs after the Keras model's inputs (`input_names`) and its
outputs after the model's outputs (`output_names`), and writes both, in the signature and
in the subgraph, in the Keras model's order (`in_keras_order`); the metadata records the
names in that order. So for a file `export` wrote, the file's order is the model's:

- a list of examples means the Keras model's input order, in `export(verify_with=)`,
  `verify`, `predict`, `quantization_report` and the CLI alike (`entries`);
- a dict means input names;
- outputs come back in the Keras model's order, paired by name (`keras_positions`).

Files written before outputs were named (`output_0`, `output_1`, ..., which the converter
sorts as text) are read in the number's order, so `output_10` comes after `output_9`.
"""

import keras

from keras_compact import _keras_private
from keras_compact._cloning import io_names, known_inputs
from tflite_export import _flatbuffer as fb

_NUMBERED = fb.NUMBERED_OUTPUT


def input_names(model):
    """The names of the file's inputs, in the Keras model's input order."""
    return io_names(known_inputs(model))


def output_names(model):
    """The names of the file's outputs, in the Keras model's output order (`model.outputs`):
    the keys of a model built with a dict of outputs, else the layers that compute them,
    made unique (`dense`, `dense_1`) where one layer computes several."""
    count = len(model.outputs)
    structure = _keras_private.outputs_struct(model)
    if isinstance(structure, dict):
        names = [str(name) for name in keras.tree.flatten({key: key for key in structure})]
    else:
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != count and isinstance(model, keras.Sequential) and count == 1:
            names = [model.layers[-1].name]
    if len(names) != count:
        names = [f"output_{i}" for i in range(count)]
    return _unique(names)


def _unique(names):
    seen, unique = set(), []
    for name in names:
        candidate, n = name, 0
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def in_keras_order(model_bytes, inputs, outputs):
    """The converted file with its signature (and subgraph) inputs and outputs in the Keras
    model's order and named after it (`inputs`, `outputs`: names, in that order), each
    input and output tensor named after its entry.

    The converter sorts a signature's entries by name and names a list of outputs
    `output_0`, `output_1`, ... (a dict of outputs by its keys)."""
    model = fb.read(model_bytes)
    signature = model.signatureDefs[0]
    by_name = {entry.name.decode(): entry for entry in signature.inputs}
    ordered_inputs = [by_name[name] for name in inputs]
    file_outputs = {entry.name.decode(): entry for entry in signature.outputs}
    if set(file_outputs) != set(outputs):  # `output_<i>`: the i-th output
        file_outputs = {outputs[int(_NUMBERED.fullmatch(name).group(1))]: entry
                        for name, entry in file_outputs.items()}
    ordered_outputs = [file_outputs[name] for name in outputs]
    fb.set_signature(model, [(name, entry.tensorIndex) for name, entry in zip(inputs, ordered_inputs)],
                     [(name, entry.tensorIndex) for name, entry in zip(outputs, ordered_outputs)],
                     key=signature.signatureKey.decode())
    subgraph = model.subgraphs[0]
    for entry in model.signatureDefs[0].inputs + model.signatureDefs[0].outputs:
        subgraph.tensors[entry.tensorIndex].name = entry.name
    return fb.write(model)


def keras_positions(file_names, keras_names, what, owner="file"):
    """For each Keras name, the position of the file's tensor of that name.

    `what` is "inputs" or "outputs". Files written before outputs were named
    (`output_0`, ...: already in the number's order, `fb.outputs_order`) and a
    file of one tensor pair by position; any other file whose names differ is refused,
    naming both sides.
    """
    positions = {name: i for i, name in enumerate(file_names)}
    # Every input of the file must be fed; a model may read some of the file's outputs.
    if set(keras_names) <= set(positions) and (what == "outputs" or len(keras_names) == len(file_names)):
        return [positions[name] for name in keras_names]
    numbered = all(_NUMBERED.fullmatch(name) for name in file_names)
    if len(file_names) == len(keras_names) and (len(file_names) == 1 or (what == "outputs" and numbered)):
        return list(range(len(file_names)))
    raise ValueError(
        f"The {owner}'s {what} {list(file_names)} do not pair with the Keras model's {what} {list(keras_names)}: "
        f"files written by tflite_export.export name their {what} after the model's. Was the file exported from "
        "this model?"
    )


def entries(samples, names, argument, owner="model"):
    """`samples` as a list with one entry per input in `names`, in that order.

    A dict keyed by input name (other keys are ignored, so one `TextViews` dict feeds
    any text model); a list or tuple with one entry per input, in `names`' order (the
    Keras model's); for a single input, also the entry itself. Anything else is refused,
    naming the inputs expected. Errors name `argument` and the `owner` ("model" or
    "file") whose inputs `names` are.
    """
    if isinstance(samples, dict):
        missing = [name for name in names if name not in samples]
        if missing:
            raise ValueError(
                f"{argument} is missing inputs {missing}; the {owner}'s inputs are {list(names)} "
                f"(received keys {sorted(map(str, samples))})."
            )
        return [samples[name] for name in names]
    if len(names) > 1:
        if not isinstance(samples, (list, tuple)) or len(samples) != len(names):
            received = f"{len(samples)} entries" if isinstance(samples, (list, tuple)) else type(samples).__name__
            raise ValueError(
                f"{argument} must hold one entry per input of the {owner} {list(names)}: a list in that order "
                f"(the Keras model's) or a dict keyed by those names. Received: {received}"
            )
        return list(samples)
    if isinstance(samples, (list, tuple)) and len(samples) == 1 and hasattr(samples[0], "shape"):
        return [samples[0]]  # the list form, of one input (a list of lists of numbers is that input's entry)
    return [samples]
