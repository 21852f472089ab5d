"""How each `ProjectionLayer` is written to the `.tflite` file, and what that asks of the rest.

Two lowerings (`projection_lowering`):

- `"builtin"`: TFLite's builtin LSH_PROJECTION, holding only the hash seeds. The
  TF converter cannot emit it, so the lowered copy is cut in two: the
  projections, found in the copy's own graph (`find_projections`) and written
  here as builtin operators, and the *head* (every layer after them), which the
  converter converts as usual with the projection outputs as its inputs
  (`head_model`; calibrated on the bits computed in Keras, `head_inputs`). The
  projections are then prepended to the head's graph (`lower_projections`):

      x float32 [n]  (a dense input: features 0..n-1, weighted by x)
        or ids int64 [n] (+ weights float32 [n])  (a ragged input)
      --LSH_PROJECTION(DENSE)--> int32 [T*d] --CAST--> float32 --RESHAPE--> [1, T*d]  (bits)
      --LSH_PROJECTION(SPARSE)--> int32 [T] --RESHAPE--> [1, T]  (signatures)
      --> the head

  LSH_PROJECTION takes one example per invoke and its bits enter the network as
  float: such a file has batch size 1 and no `int8_io` (`check_options`).
- `"matrix"`: the layer as its hash matrix (`HashMatrixProjection`): FULLY_CONNECTED,
  GREATER and CAST, a larger file, faster for dense inputs, quantizable.

`_lowering.lowered_copy` applies `lowered` to each layer; `lsh_projection_model`
is a file holding one LSH_PROJECTION alone (the runtime's own answer, for tests).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from keras_compact import _keras_private
from keras_compact.layers import ProjectionLayer
from keras_compact.ops import hashing
from tflite_export import _flatbuffer as fb

LOWERINGS = ("builtin", "matrix")


def lowered(layer, projection_lowering):
    """`layer` (a ProjectionLayer) as the lowered copy holds it: `(replacement, weights)`, or None
    where it stays itself (the builtin lowering cuts it out later)."""
    if projection_lowering == "matrix":
        return HashMatrixProjection.of(layer), None
    return None


def check_options(cuts, batch_size, quantization):
    """Raises when the options ask of the builtin lowering's `cuts` what LSH_PROJECTION cannot do."""
    if cuts and batch_size != 1:
        raise ValueError(
            "A model with a ProjectionLayer exports with batch_size=1 (LSH_PROJECTION takes one example "
            f"per invoke), or with projection_lowering='matrix'. Received: batch_size={batch_size}"
        )
    if cuts and quantization == "int8_io":
        raise ValueError(
            "quantization='int8_io' is not available for models with a ProjectionLayer: the "
            "LSH_PROJECTION bits enter the network as float. Use quantization='int8' (int8 inside, "
            "float32 inputs and outputs)."
        )


@dataclasses.dataclass
class ProjectionCut:
    """One ProjectionLayer call of the lowered model and the model inputs it reads."""

    layer: ProjectionLayer
    output: object  # the KerasTensor it computes in the lowered model
    input_names: list  # [dense] or [ids] or [ids, weights]
    ragged: bool  # ids (and weights) rather than one dense float vector
    num_features: int  # n of a dense input (None for ragged ids)

    @property
    def placeholder(self):
        """Name of the head's input that stands for the projection's output."""
        return f"{self.layer.name}_output"


def holds_projection(layer):
    return any(isinstance(inner, (ProjectionLayer, HashMatrixProjection)) for inner in _keras_private.sublayers(layer))


def find_projections(model):
    """The ProjectionLayer calls in `model`'s graph, each with the model inputs it reads.

    `model` is a lowered copy: nested models are inlined, so every call is a node
    of its own graph (Keras's `_inbound_nodes` also counts the calls Sequential
    makes while it builds, and those of the user's original model).
    """
    _check_reachable(model)
    inputs_by_id = {id(tensor): tensor for tensor in model.inputs}
    nodes = [
        node
        for node in _keras_private.nodes_in_order(model)
        if isinstance(node.operation, ProjectionLayer)
    ]
    cuts, seen = [], set()
    for node in nodes:
        layer = node.operation
        if id(layer) in seen:
            raise ValueError(
                f"ProjectionLayer {layer.name!r} is called more than once in the model; export lowers each "
                "ProjectionLayer to one LSH_PROJECTION operator, so use one layer per input."
            )
        seen.add(id(layer))
        read = node.arguments.keras_tensors
        if not all(id(tensor) in inputs_by_id for tensor in read):
            raise ValueError(
                f"ProjectionLayer {layer.name!r} must read model inputs directly to be lowered "
                "to LSH_PROJECTION (the builtin op takes the raw features); it reads "
                f"{[tensor.name for tensor in read]}, which are computed by other layers. "
                "Compute those features before the model, or use projection_lowering='matrix'."
            )
        ragged = bool(read[0].ragged)
        cuts.append(
            ProjectionCut(
                layer=layer,
                output=node.outputs[0],
                input_names=[tensor.name for tensor in read],
                ragged=ragged,
                num_features=None if ragged else int(read[0].shape[-1]),
            )
        )
    return cuts


def _check_reachable(model):
    """Raises when a ProjectionLayer sits inside a subclassed layer, where no lowering reaches it."""
    for layer in model.layers:
        if isinstance(layer, ProjectionLayer) or not holds_projection(layer):
            continue
        hidden = [inner.name for inner in _keras_private.sublayers(layer) if isinstance(inner, ProjectionLayer)]
        raise ValueError(
            f"ProjectionLayer(s) {hidden} sit inside {layer.name!r} ({type(layer).__name__}), a subclassed "
            "layer or model whose call export cannot see into, so they cannot become LSH_PROJECTION. "
            "Put the ProjectionLayer in a functional or Sequential model (nested ones are fine), or "
            "export a model built from the same layers functionally."
        )


def head_model(model, cuts):
    """The part of `model` after its projections, taking their outputs as inputs.

    Returns the head and the input specs `(name, dtype, shape)` in its input order.
    """
    projection_inputs = {name for cut in cuts for name in cut.input_names}
    others = [tensor for tensor in model.inputs if tensor.name not in projection_inputs]
    head_inputs = [cut.output for cut in cuts] + others
    # An output that is a head input itself (the bits as the model's output) goes through an Identity:
    # Keras makes no model whose output is one of its inputs.
    passed = {id(tensor) for tensor in head_inputs}
    outputs = [keras.layers.Identity(name=f"{tensor.name}_out")(tensor) if id(tensor) in passed else tensor
               for tensor in model.outputs]
    try:
        head = keras.Model(head_inputs, outputs)
    except ValueError as error:
        raise ValueError(
            "Could not separate the layers after the ProjectionLayers from the rest of the "
            "model: an input read by a ProjectionLayer must not also feed other layers. "
            f"Keras said: {error}"
        ) from error
    specs = [(cut.placeholder, cut.output.dtype, (1, cut.layer.num_outputs)) for cut in cuts]
    specs += [(tensor.name, tensor.dtype, (1,) + tuple(tensor.shape[1:])) for tensor in others]
    return head, specs


def lower_projections(model_bytes, cuts):
    """Prepends one builtin LSH_PROJECTION per cut to the converted head."""
    model = fb.read(model_bytes)
    subgraph = model.subgraphs[0]
    signature = model.signatureDefs[0]
    entries = {entry.name.decode(): entry for entry in signature.inputs}
    prologue = []
    new_inputs = list(subgraph.inputs)
    new_entries = [entry for entry in signature.inputs]
    for cut in cuts:
        head_input = entries[cut.placeholder].tensorIndex
        added, operators = _projection_ops(model, subgraph, cut, head_input)
        prologue += operators
        position = new_inputs.index(head_input)
        new_inputs[position : position + 1] = added
        entry_position = new_entries.index(entries[cut.placeholder])
        new_entries[entry_position : entry_position + 1] = [
            fb.tensor_map(name, index) for name, index in zip(cut.input_names, added)
        ]
        subgraph.tensors[head_input].name = f"{cut.layer.name}/{cut.layer.output_mode}"
    subgraph.operators = prologue + subgraph.operators
    subgraph.inputs = np.asarray(new_inputs, np.int32)
    signature.inputs = new_entries
    return fb.write(model)


def _projection_ops(model, subgraph, cut, head_input):
    """Tensors and operators computing `cut`'s output into the tensor `head_input`."""
    layer = cut.layer
    seeds = layer.hash_seeds
    hash_tensor = fb.add_tensor(model, subgraph, f"{layer.name}/hash_seeds", np.float32, seeds.shape, seeds)
    added, features, weights = _projection_inputs(model, subgraph, cut)
    width = layer.num_outputs
    lsh_output = fb.add_tensor(model, subgraph, f"{layer.name}/lsh", np.int32, [width])
    operators = [
        lsh_projection_operator(
            model, hash_tensor, features, weights, lsh_output, sparse=layer.output_mode == "signatures"
        )
    ]
    return added, operators + _to_head_input(model, subgraph, layer, lsh_output, head_input)


def _projection_inputs(model, subgraph, cut):
    """The file inputs of one projection: `(new input tensors, feature tensor, weight tensor or None)`.

    Ragged ids (and weights) are resizable 1-D inputs; a dense vector is the
    weights of the constant feature ids `0..n-1`.
    """
    if cut.ragged:
        added = [fb.add_tensor(model, subgraph, cut.input_names[0], np.int64, [1], shape_signature=[-1])]
        if len(cut.input_names) == 2:
            added.append(fb.add_tensor(model, subgraph, cut.input_names[1], np.float32, [1], shape_signature=[-1]))
        return added, added[0], added[1] if len(added) == 2 else None
    count = cut.num_features
    weights = fb.add_tensor(model, subgraph, cut.input_names[0], np.float32, [count])
    ids = np.arange(count, dtype=np.int32)
    features = fb.add_tensor(model, subgraph, f"{cut.layer.name}/feature_ids", np.int32, [count], ids)
    return [weights], features, weights


def _to_head_input(model, subgraph, layer, lsh_output, head_input):
    """CAST (bits only) and RESHAPE from the LSH_PROJECTION output to the head's `[1, width]` input."""
    width = layer.num_outputs
    operators = []
    reshape_input = lsh_output
    if layer.output_mode == "bits":
        reshape_input = fb.add_tensor(model, subgraph, f"{layer.name}/bits_flat", np.float32, [width])
        cast_options = schema.CastOptionsT()
        cast_options.inDataType = schema.TensorType.INT32
        cast_options.outDataType = schema.TensorType.FLOAT32
        operators.append(
            fb.make_operator(
                model, schema.BuiltinOperator.CAST, [lsh_output], [reshape_input],
                schema.BuiltinOptions.CastOptions, cast_options,
            )
        )
    new_shape = np.asarray([1, width], np.int32)
    shape = fb.add_tensor(model, subgraph, f"{layer.name}/shape", np.int32, [2], new_shape)
    reshape_options = schema.ReshapeOptionsT()
    reshape_options.newShape = new_shape
    operators.append(
        fb.make_operator(
            model, schema.BuiltinOperator.RESHAPE, [reshape_input, shape], [head_input],
            schema.BuiltinOptions.ReshapeOptions, reshape_options,
        )
    )
    return operators


class HashMatrixProjection(keras.layers.Layer):
    """A dense ProjectionLayer as its hash matrix: the "matrix" lowering.

    `P` (`[n, T*d]`, the Fingerprint64 values scaled by 2**-63 to lie in [-1, 1];
    the scale changes no sign) is a float32 constant, and the bits are
    `cast(x @ P > 0)`: FULLY_CONNECTED, GREATER, CAST in the file. A larger file
    than LSH_PROJECTION's seeds, much faster for dense inputs, and quantizable.
    Sums within float32 rounding of 0 may flip a bit that the builtin's float64
    sum keeps; the export's comparison reports any effect on the outputs. Made
    only inside the export's lowered copy, never saved.
    """

    def __init__(self, matrix, **kwargs):
        super().__init__(**kwargs)
        self.matrix = np.asarray(matrix, np.float32)

    @classmethod
    def of(cls, layer):
        """The matrix lowering of a dense, `output_mode="bits"` ProjectionLayer `layer`."""
        ragged = layer.num_features is None
        if ragged or layer.output_mode != "bits":
            raise ValueError(
                f"projection_lowering='matrix' needs a ProjectionLayer with a dense float input and "
                f"output_mode='bits'; {layer.name!r} has {'ragged feature ids' if ragged else 'a dense input'} "
                f"and output_mode={layer.output_mode!r}. Use projection_lowering='builtin'."
            )
        matrix = hashing.projection_matrix(layer.hash_seeds, layer.num_features).numpy()
        return cls(matrix * 2.0**-63, name=layer.name)

    def call(self, inputs):
        return tf.cast(tf.matmul(tf.cast(inputs, tf.float32), tf.constant(self.matrix)) > 0, tf.float32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.matrix.shape[1])


def head_inputs(lowered, cuts, specs, representative):
    """The representative examples as the head's inputs: projection bits computed in Keras."""
    by_name = dict(zip([tensor.name for tensor in lowered.inputs], representative))
    values = []
    for cut in cuts:
        read = [by_name[name] for name in cut.input_names]
        values.append(np.asarray(cut.layer(read if len(read) > 1 else read[0])))
    values += [np.asarray(by_name[name]) for name, _, _ in specs[len(cuts) :]]
    return values


def lsh_projection_operator(model, hash_tensor, input_tensor, weight_tensor, output_tensor, sparse):
    options = schema.LSHProjectionOptionsT()
    options.type = schema.LSHProjectionType.SPARSE if sparse else schema.LSHProjectionType.DENSE
    inputs = [hash_tensor, input_tensor] + ([] if weight_tensor is None else [weight_tensor])
    return fb.make_operator(
        model,
        schema.BuiltinOperator.LSH_PROJECTION,
        inputs,
        [output_tensor],
        schema.BuiltinOptions.LSHProjectionOptions,
        options,
    )


def lsh_projection_model(seeds, sparse, feature_dtype, with_weights):
    """A model holding one builtin LSH_PROJECTION op; every input has a dynamic length.

    Inputs: `input` (`feature_dtype`, `[n]`) and, if `with_weights`, `weight`
    (float32 `[n]`). Output: int32 `[T*d]` (DENSE) or `[T]` (SPARSE).
    """
    seeds = np.asarray(seeds, np.float32)
    model = fb.empty_model()
    subgraph = model.subgraphs[0]
    hash_tensor = fb.add_tensor(model, subgraph, "hash", np.float32, seeds.shape, seeds)
    ids = fb.add_tensor(model, subgraph, "input", feature_dtype, [1], shape_signature=[-1])
    weight = (
        fb.add_tensor(model, subgraph, "weight", np.float32, [1], shape_signature=[-1])
        if with_weights
        else None
    )
    width = seeds.shape[0] if sparse else seeds.size
    output = fb.add_tensor(model, subgraph, "output", np.int32, [width])
    subgraph.operators.append(
        lsh_projection_operator(model, hash_tensor, ids, weight, output, sparse)
    )
    inputs = [("input", ids)] + ([] if weight is None else [("weight", weight)])
    fb.set_signature(model, inputs, [("output", output)])
    return fb.write(model)
