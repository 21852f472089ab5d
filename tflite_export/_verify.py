"""Running an exported model in LiteRT, one example per invoke, against Keras."""

import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_compact import _backend, _data, _keras_private
from tflite_export import _flatbuffer as fb
from tflite_export import _pairing


# A dataset or generator given as examples to compare on is read up to this many (it may repeat forever).
MAX_STREAM_EXAMPLES = 1000


def model_inputs(model, samples, argument="verify_with", limit=MAX_STREAM_EXAMPLES):
    """`samples` as a list with one entry per `model.inputs`, in that order.

    Accepts a dict keyed by input name, a list/tuple with one entry per input, or
    (for a single-input model) the entry itself. Ragged inputs accept a
    `tf.RaggedTensor` or a list of lists. A `tf.data.Dataset`, a generator (or
    a function returning one) or a `keras.utils.PyDataset` of such batches is
    read up to `limit` examples; `(x, y)` batches keep `x`. Errors name `argument`.
    """
    if _data.is_stream(samples) or callable(samples):
        batches = [model_inputs(model, _data.split_pair(batch)[0], argument)
                   for batch in _data.batches(samples, limit, argument)]
        return [_data.concatenated([batch[i] for batch in batches])[:limit] for i in range(len(batches[0]))]
    entries = _pairing.entries(samples, [tensor.name for tensor in model.inputs], argument, "model")
    converted = []
    for tensor, entry in zip(model.inputs, entries):
        _check_not_text(tensor, entry, argument)
        _check_whole(tensor, entry, argument)
        converted.append(_ragged_entry(tensor, entry, argument) if tensor.ragged
                         else _dense_entry(tensor, entry, argument))
    counts = {int(entry.shape[0]) for entry in converted}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(
            f"{argument} must hold the same positive number of examples for every input. "
            f"Received counts: {sorted(counts)}"
        )
    _check_weights_match_ids(model, converted, argument)
    return converted


def _ragged_entry(tensor, entry, argument):
    """`entry` for the ragged input `tensor`: a `tf.RaggedTensor` of its dtype."""
    try:
        if not isinstance(entry, tf.RaggedTensor):
            entry = tf.ragged.constant(entry, dtype=tensor.dtype)
        return tf.cast(entry, tensor.dtype)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(
            f"{argument} for ragged input {tensor.name!r} must be a tf.RaggedTensor or a list of lists of "
            f"{tensor.dtype} values, one list per example. Received {type(entry).__name__}: {error}"
        ) from None


def _dense_entry(tensor, entry, argument):
    """`entry` for the dense input `tensor`: an array of its dtype and shape."""
    try:
        entry = np.asarray(entry, dtype=tensor.dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{argument} for input {tensor.name!r} must be an array of {tensor.dtype} values. "
            f"Received {type(entry).__name__}: {error}"
        ) from None
    expected = tuple(tensor.shape[1:])
    if entry.ndim != len(expected) + 1 or any(
        want is not None and want != got for want, got in zip(expected, entry.shape[1:])
    ):
        raise ValueError(
            f"{argument} for input {tensor.name!r} must have shape (examples,) + "
            f"{expected}. Received shape: {entry.shape}"
        )
    return entry


def _first_leaf(entry):
    while isinstance(entry, (list, tuple)) and entry:
        entry = entry[0]
    if isinstance(entry, np.ndarray) and entry.dtype == object and entry.size:
        return _first_leaf(entry.flat[0])
    return entry


def _check_not_text(tensor, entry, argument):
    """Refuses sentences where the model takes numbers (featurized ids and weights)."""
    if np.dtype(tensor.dtype) == np.dtype(object) or str(tensor.dtype) == "string":
        return
    text = isinstance(_first_leaf(entry), (str, bytes)) or (
        isinstance(entry, (tf.Tensor, tf.RaggedTensor)) and entry.dtype == tf.string
    ) or (isinstance(entry, np.ndarray) and entry.dtype.kind in "US")
    if text:
        raise ValueError(
            f"{argument} for input {tensor.name!r} must be {tensor.dtype} numbers, not text. A model that reads "
            "feature ids and weights takes sentences featurized first: "
            "ids, weights = keras_compact.TextFeaturizer(...)(sentences), then pass [ids, weights]."
        )


def _check_weights_match_ids(model, converted, argument):
    """Ragged weights must have one weight per id, example by example."""
    ragged = [(tensor, entry) for tensor, entry in zip(model.inputs, converted) if isinstance(entry, tf.RaggedTensor)]
    ids = [entry.row_lengths().numpy() for tensor, entry in ragged if entry.dtype.is_integer]
    for tensor, entry in ragged:
        if not entry.dtype.is_floating or not ids:
            continue
        lengths = entry.row_lengths().numpy()
        if not any(len(other) == len(lengths) and np.array_equal(other, lengths) for other in ids):
            first = next((i for i in range(len(lengths)) if all(lengths[i] != other[i] for other in ids)), 0)
            raise ValueError(
                f"{argument} for input {tensor.name!r} must hold one weight per feature id, example by example: "
                f"example {first} has {lengths[first]} weights and {ids[0][first]} ids."
            )


def _check_whole(tensor, entry, argument):
    """Refuses non-integer values for an integer Keras input (ids): a cast would truncate them."""
    if not np.issubdtype(np.dtype(tensor.dtype), np.integer):
        return
    if isinstance(entry, tf.RaggedTensor):
        values = entry.flat_values.numpy()
    else:
        try:
            values = np.asarray(entry) if not tensor.ragged else np.concatenate([np.ravel(row) for row in entry])
        except (TypeError, ValueError):
            return  # the conversion below says what is wrong
    _refuse_fractions(values, f"{argument} for input {tensor.name!r}", f"the input is {np.dtype(tensor.dtype).name}")


def _refuse_fractions(values, what, because):
    """Raises when float `values` that will be read as integers are not whole numbers (or not finite)."""
    if values.dtype.kind != "f":
        return
    wrong = ~np.isfinite(values) | (values != np.round(values))
    if wrong.any():
        raise ValueError(
            f"{what} must be whole numbers: {because}, so {values[wrong].flat[0]:g} would be truncated. "
            "Round or cast them first."
        )


def random_inputs(model, count, seed):
    """`count` random examples for every input: floats in [0, 1), ragged ids and weights."""
    rng = np.random.default_rng(seed)
    row_lengths = rng.integers(1, 17, size=count)
    samples = []
    for tensor in model.inputs:
        dtype = np.dtype(tensor.dtype)
        if tensor.ragged and dtype == np.int64:
            values = rng.integers(0, 2**40, size=row_lengths.sum(), dtype=np.int64)
        elif tensor.ragged and dtype.kind == "f":
            values = rng.uniform(0.1, 1.0, size=row_lengths.sum()).astype(dtype)
        elif not tensor.ragged and dtype.kind == "f" and None not in tensor.shape[1:]:
            samples.append(rng.uniform(0.0, 1.0, size=(count,) + tuple(tensor.shape[1:])).astype(dtype))
            continue
        else:
            raise ValueError(
                f"Cannot make random examples for input {tensor.name!r} "
                f"(dtype={tensor.dtype}, shape={tuple(tensor.shape)}, ragged={tensor.ragged}); "
                "pass real examples with verify_with=."
            )
        samples.append(tf.RaggedTensor.from_row_lengths(values, row_lengths))
    return samples


def run_keras(model, inputs, batch_size=256):
    """The Keras model's outputs as a list of NumPy arrays, one per output.

    Dense inputs go in batches of one size (the last padded by repeating its last example, whose
    outputs are dropped), so that JAX compiles the model once (`_backend.inference`)."""
    count = int(inputs[0].shape[0])
    batch_size = min(batch_size, count)
    # A functional model built from a list (or dict) of inputs is called with the same structure.
    structure = _keras_private.inputs_struct(model)
    call = _backend.inference(model)
    ragged = any(isinstance(entry, tf.RaggedTensor) for entry in inputs)
    chunks = []
    for start in range(0, count, batch_size):
        kept = min(batch_size, count - start)
        rows = np.minimum(np.arange(start, start + batch_size), count - 1)
        batch = [entry[start : start + kept] if ragged else np.asarray(entry)[rows] for entry in inputs]
        if structure is not None:
            feed = keras.tree.pack_sequence_as(structure, batch)
        else:
            feed = batch if len(batch) > 1 else batch[0]
        outputs = call(feed)
        chunks.append([np.asarray(output)[:kept] for output in keras.tree.flatten(outputs)])
    return [np.concatenate(parts) for parts in zip(*chunks)]


class UnpreparedFile(RuntimeError):
    """LiteRT refused to prepare a file (an operator without a kernel for its types or shapes)."""


class LiteRTRunner:
    """Feeds one example at a time to a `.tflite` model by input name.

    Inputs with a fixed leading dimension of 1 get `example[None]`; 1-D inputs
    (the LSH_PROJECTION features) get the example's row, resized as needed.
    `names` and `output_names` are the signature's, in the order the file is fed and
    read (`_pairing`: the Keras model's, for a file `export` wrote).
    """

    def __init__(self, model_bytes):
        self.interpreter = Interpreter(model_content=bytes(model_bytes))
        try:
            self.interpreter.allocate_tensors()
        except RuntimeError as error:  # a kernel's Prepare refused the file
            raise UnpreparedFile(f"LiteRT cannot run this file: {str(error).strip()}") from error
        signature = fb.read(model_bytes).signatureDefs[0]
        details = {d["index"]: d for d in self.interpreter.get_input_details()}
        self.inputs = [details[entry.tensorIndex] for entry in signature.inputs]
        self.names = [entry.name.decode() for entry in signature.inputs]
        # LSH_PROJECTION's feature lists (any length): int ids and, when the layer has them, float weights.
        self.feature_lists = [
            len(d["shape_signature"]) == 1 and int(d["shape_signature"][0]) == -1 for d in self.inputs
        ]
        self.weighted = any(
            listed and np.issubdtype(d["dtype"], np.floating) for listed, d in zip(self.feature_lists, self.inputs)
        )
        outputs = {d["index"]: d for d in self.interpreter.get_output_details()}
        names = [entry.name.decode() for entry in signature.outputs]
        order = fb.outputs_order(names)
        self.outputs = [outputs[signature.outputs[i].tensorIndex] for i in order]
        self.output_names = [names[i] for i in order]
        self.id_rows = _id_rows(fb.read(model_bytes), [entry.tensorIndex for entry in signature.inputs])

    def __call__(self, example):
        """Runs one example (a list of per-input rows); returns (outputs, seconds)."""
        values = self._padded([_shaped(detail, row) for detail, row in zip(self.inputs, example)])
        resized = False
        for detail, value in zip(self.inputs, values):
            if tuple(self.interpreter.get_tensor(detail["index"]).shape) != value.shape:
                self.interpreter.resize_tensor_input(detail["index"], value.shape)
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
        for detail, value in zip(self.inputs, values):
            self.interpreter.set_tensor(detail["index"], value)
        start = time.perf_counter()
        self.interpreter.invoke()
        seconds = time.perf_counter() - start
        return [_dequantized(d, self.interpreter.get_tensor(d["index"])) for d in self.outputs], seconds

    def _padded(self, values):
        """An example without features as the Java featurizer sends it: one id 0 of weight 0
        (LSH_PROJECTION needs at least one feature; a weight of 0 adds nothing)."""
        empty = [listed and value.size == 0 for listed, value in zip(self.feature_lists, values)]
        if not any(empty):
            return values
        if not self.weighted:
            name = self.names[empty.index(True)]
            raise ValueError(
                f"An example has no features in input {name!r}. The file's LSH_PROJECTION needs at least one "
                "feature, and without a weights input it cannot be given one that adds nothing (the Keras layer "
                "gives all bits 0). Give the ProjectionLayer [ids, weights] inputs (TextFeaturizer does), or "
                "leave such examples out."
            )
        return [np.zeros(1, value.dtype) if blank else value for blank, value in zip(empty, values)]


# Operators an embedding's ids pass through on their way to GATHER: the cast of a
# float input, and Keras's wrap of negative ids (LESS, ADD, SELECT).
_ID_PATH = {"CAST", "LESS", "ADD", "SELECT", "SELECT_V2", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def _id_rows(model, input_indices):
    """`{input position: rows}` for each input that ends as GATHER indices (token ids):
    the fewest rows of the tables it indexes."""
    subgraph = model.subgraphs[0]
    names = [name for name, _ in fb.operators(model)]
    producer = {int(out): i for i, op in enumerate(subgraph.operators) for out in op.outputs}
    position = {int(index): i for i, index in enumerate(input_indices)}
    rows = {}
    for i, operator in enumerate(subgraph.operators):
        if names[i] != "GATHER" or len(operator.inputs) < 2:
            continue
        table = subgraph.tensors[int(operator.inputs[0])]
        if not len(table.shape) or table.shape[0] < 1:
            continue
        frontier, seen = [int(operator.inputs[1])], set()
        while frontier:
            tensor = frontier.pop()
            if tensor in seen or tensor < 0:
                continue
            seen.add(tensor)
            if tensor in position:
                at = position[tensor]
                rows[at] = min(rows.get(at, int(table.shape[0])), int(table.shape[0]))
            elif tensor in producer and names[producer[tensor]] in _ID_PATH:
                frontier.extend(int(t) for t in subgraph.operators[producer[tensor]].inputs)
    return rows


def check_ids(runner, inputs, argument="examples"):
    """Raises a ValueError naming `argument` and the input when values that the file
    reads as integers (an int input, or token ids cast to int before an embedding)
    are not whole numbers, or ids fall outside the embedding's rows."""
    for at, (detail, entry) in enumerate(zip(runner.inputs, inputs)):
        scale, _ = detail["quantization"]
        integer = np.issubdtype(detail["dtype"], np.integer) and not scale
        if not integer and at not in runner.id_rows:
            continue
        values = entry.flat_values.numpy() if isinstance(entry, tf.RaggedTensor) else np.asarray(entry)
        if values.dtype.kind not in "iufb":
            try:
                values = values.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{argument} for input {detail['name']!r} must be numbers (the file takes "
                    f"{np.dtype(detail['dtype']).name}). Received dtype {values.dtype}"
                ) from None
        what = f"{argument} for input {detail['name']!r}"
        _refuse_fractions(values, what, "the file reads them as integers (token ids)")
        if at in runner.id_rows and values.size:
            rows = runner.id_rows[at]
            low, high = values.min(), values.max()
            if low < -rows or high >= rows:
                bad = low if low < -rows else high
                raise ValueError(
                    f"{argument} for input {detail['name']!r} are token ids of an embedding with {rows} rows: "
                    f"each must lie in [0, {rows}) (or [-{rows}, 0), counted from the end). Received: {bad:g}"
                )
        if integer:
            info = np.iinfo(detail["dtype"])
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise ValueError(
                    f"{argument} for input {detail['name']!r} do not fit the file's "
                    f"{np.dtype(detail['dtype']).name}: values in [{values.min():g}, {values.max():g}]"
                )


def _shaped(detail, row):
    # One example for a batch-1 file gets its batch axis; a batch of B is fed as it is.
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        # An int8 input of a fully quantized model takes the quantized example.
        info = np.iinfo(detail["dtype"])
        row = np.clip(np.round(np.asarray(row, np.float64) / scale + zero_point), info.min, info.max)
    value = np.asarray(row, dtype=detail["dtype"])
    if len(detail["shape"]) > 1 and detail["shape"][0] == 1 and value.ndim == len(detail["shape"]) - 1:
        value = value[None]
    return value


def _dequantized(detail, value):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        return (value.astype(np.float32) - zero_point) * scale
    return value.copy()


def run_litert(runner, inputs, argument="examples"):
    """Outputs of the `.tflite` model for every example (in `runner.output_names`' order), and the median
    time per example.

    `runner` is a `LiteRTRunner` (or the file's bytes); `inputs` are in its input order
    (`runner.names`). A file with a fixed batch of B > 1 examples gets them B at a time
    (the last batch padded by repeating its last example, whose outputs are dropped).
    """
    if not isinstance(runner, LiteRTRunner):
        runner = LiteRTRunner(runner)
    check_ids(runner, inputs, argument)
    count = int(inputs[0].shape[0])
    batch = _batch_size(runner)
    results, times = [], []
    for start in range(0, count, batch):
        if batch == 1:
            example = [entry[start].numpy() if isinstance(entry, tf.RaggedTensor) else entry[start] for entry in inputs]
            outputs, seconds = runner(example)
            results.append([out[0] if out.ndim > 1 and out.shape[0] == 1 else out for out in outputs])
            times.append(seconds)
            continue
        rows = [min(i, count - 1) for i in range(start, start + batch)]
        outputs, seconds = runner([np.asarray(entry)[rows] for entry in inputs])
        kept = min(batch, count - start)
        for i in range(kept):
            results.append([out[i] for out in outputs])
        times.append(seconds / batch)
    stacked = [np.stack(per_output) for per_output in zip(*results)]
    return stacked, float(np.median(times))


def _batch_size(runner):
    shapes = [detail["shape"] for detail in runner.inputs]
    if all(len(shape) > 1 for shape in shapes) and shapes and shapes[0][0] > 1:
        return int(shapes[0][0])
    return 1


def non_finite_outputs(outputs):
    """bool `[examples]`: the examples with a NaN or an infinity in any output."""
    flags = np.zeros(len(outputs[0]), bool)
    for output in outputs:
        output = np.asarray(output)
        if output.dtype.kind in "fc":
            flags |= ~np.isfinite(output.reshape(len(output), -1)).all(axis=1)
    return flags


def non_finite_examples(inputs):
    """bool `[examples]`: the examples with a NaN or an infinity in any float input."""
    flags = None
    for entry in inputs:
        if isinstance(entry, tf.RaggedTensor):
            if not entry.dtype.is_floating:
                continue
            bad = tf.reduce_any(~tf.math.is_finite(entry), axis=1).numpy()
        else:
            entry = np.asarray(entry)
            if entry.dtype.kind != "f":
                continue
            bad = ~np.isfinite(entry.reshape(len(entry), -1)).all(axis=1)
        flags = bad if flags is None else flags | bad
    return np.zeros(int(inputs[0].shape[0]), bool) if flags is None else np.asarray(flags, bool)


def check_file_inputs(runner, inputs, argument="examples"):
    """Raises a ValueError naming `argument` unless `inputs` fit the file's inputs.

    One entry per file input, each with a leading examples axis followed by the
    shape of one example (`-1` in the file: any length), all with the same count.
    """
    names = [detail["name"] for detail in runner.inputs]
    if len(inputs) != len(names):
        raise ValueError(
            f"{argument} must hold one entry per input of the file {names}. Received {len(inputs)} entries."
        )
    counts = set()
    for detail, entry in zip(runner.inputs, inputs):
        signature = [int(d) for d in detail["shape_signature"]]
        # Inputs with a batch axis (1 or B) take examples of the rest; 1-D LSH inputs a whole row.
        per_example = signature[1:] if len(signature) > 1 else signature
        if isinstance(entry, tf.RaggedTensor):
            shape = (int(entry.nrows()), -1)
        else:
            shape = np.shape(entry)
        if len(shape) != len(per_example) + 1 or any(
            want not in (-1, got) and got != -1 for want, got in zip(per_example, shape[1:])
        ):
            example = tuple("n" if d == -1 else d for d in per_example)
            hint = " (one example needs a leading axis: x[None] or x[:1])" if len(shape) == len(per_example) else ""
            raise ValueError(
                f"{argument} for input {detail['name']!r} must have shape (examples,) + {example}{hint}. "
                f"Received shape: {tuple(shape)}"
            )
        counts.add(int(shape[0]))
    if len(counts) != 1 or 0 in counts:
        raise ValueError(
            f"{argument} must hold the same positive number of examples for every input. "
            f"Received counts: {sorted(counts)}"
        )
