"""Lowering of `ProjectionLayer`s to TFLite's builtin LSH_PROJECTION operator.

The TF converter cannot emit LSH_PROJECTION, so the model is cut in two: the
projections, which become builtin operators written here, and the *head* (every
layer after them), which the converter converts as usual with the projection
outputs as its inputs. The projections are then prepended to the head's graph:

    x float32 [n]  (a dense input: features 0..n-1, weighted by x)
      or ids int64 [n] (+ weights float32 [n])  (a ragged input)
    --LSH_PROJECTION(DENSE)--> int32 [T*d] --CAST--> float32 --RESHAPE--> [1, T*d]  (bits)
    --LSH_PROJECTION(SPARSE)--> int32 [T] --RESHAPE--> [1, T]  (signatures)
    --> the head
"""

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from keras_compact.layers import ProjectionLayer
from keras_compact.ops import hashing
from tflite_export import _flatbuffer as fb

LOWERINGS = ("builtin", "matrix")


@dataclasses.dataclass
class ProjectionCut:
    """One ProjectionLayer of the model and the model inputs it reads."""

    layer: ProjectionLayer
    input_names: list  # [dense] or [ids] or [ids, weights]
    ragged: bool  # ids (and weights) rather than one dense float vector
    placeholder: str  # name of the head's input that stands for its output


def find_projections(model):
    """The top-level ProjectionLayers of `model` and the inputs each reads."""
    nested = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.Model)
        and any(isinstance(inner, ProjectionLayer) for inner in layer._flatten_layers())
    ]
    if nested:
        raise ValueError(
            "tflite_export lowers ProjectionLayers that sit directly in the exported model, "
            f"but layers {nested} are sub-models that contain one. Export the sub-model, or "
            "build the model functionally with the ProjectionLayer at the top level."
        )
    inputs_by_id = {id(tensor): tensor for tensor in model.inputs}
    cuts = []
    for layer in model.layers:
        if not isinstance(layer, ProjectionLayer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise ValueError(
                f"ProjectionLayer {layer.name!r} is called {len(layer._inbound_nodes)} times; "
                "export supports a ProjectionLayer called exactly once."
            )
        read = keras.tree.flatten(layer.input)
        if not all(id(tensor) in inputs_by_id for tensor in read):
            raise ValueError(
                f"ProjectionLayer {layer.name!r} must read model inputs directly to be lowered "
                "to LSH_PROJECTION (the builtin op takes the raw features); it reads "
                f"{[tensor.name for tensor in read]}, which are computed by other layers."
            )
        cuts.append(
            ProjectionCut(
                layer=layer,
                input_names=[tensor.name for tensor in read],
                ragged=bool(read[0].ragged),
                placeholder=f"{layer.name}_output",
            )
        )
    return cuts


def head_model(model, cuts):
    """The part of `model` after its projections, taking their outputs as inputs.

    Returns the head and the input specs `(name, dtype, shape)` in its input order.
    """
    projection_inputs = {name for cut in cuts for name in cut.input_names}
    others = [tensor for tensor in model.inputs if tensor.name not in projection_inputs]
    head_inputs = [cut.layer.output for cut in cuts] + others
    try:
        head = keras.Model(head_inputs, model.outputs)
    except ValueError as error:
        raise ValueError(
            "Could not separate the layers after the ProjectionLayers from the rest of the "
            "model: an input read by a ProjectionLayer must not also feed other layers. "
            f"Keras said: {error}"
        ) from error
    specs = [(cut.placeholder, cut.layer.output.dtype, (1, cut.layer.num_outputs)) for cut in cuts]
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
    name = layer.name
    hash_tensor = fb.add_tensor(model, subgraph, f"{name}/hash_seeds", np.float32, seeds.shape, seeds)
    if cut.ragged:
        added = [
            fb.add_tensor(model, subgraph, cut.input_names[0], np.int64, [1], shape_signature=[-1])
        ]
        if len(cut.input_names) == 2:
            added.append(
                fb.add_tensor(
                    model, subgraph, cut.input_names[1], np.float32, [1], shape_signature=[-1]
                )
            )
        features = added[0]
        weights = added[1] if len(added) == 2 else None
    else:
        num_features = layer.input.shape[-1]
        weights = fb.add_tensor(model, subgraph, cut.input_names[0], np.float32, [num_features])
        added = [weights]
        features = fb.add_tensor(
            model,
            subgraph,
            f"{name}/feature_ids",
            np.int32,
            [num_features],
            np.arange(num_features, dtype=np.int32),
        )
    width = layer.num_outputs
    lsh_output = fb.add_tensor(model, subgraph, f"{name}/lsh", np.int32, [width])
    operators = [
        fb.lsh_projection_operator(
            model, hash_tensor, features, weights, lsh_output, sparse=layer.output_mode == "signatures"
        )
    ]
    reshape_input = lsh_output
    if layer.output_mode == "bits":
        reshape_input = fb.add_tensor(model, subgraph, f"{name}/bits_flat", np.float32, [width])
        cast_options = schema.CastOptionsT()
        cast_options.inDataType = schema.TensorType.INT32
        cast_options.outDataType = schema.TensorType.FLOAT32
        operators.append(
            fb.make_operator(
                model,
                schema.BuiltinOperator.CAST,
                [lsh_output],
                [reshape_input],
                schema.BuiltinOptions.CastOptions,
                cast_options,
            )
        )
    shape = fb.add_tensor(
        model, subgraph, f"{name}/shape", np.int32, [2], np.asarray([1, width], np.int32)
    )
    reshape_options = schema.ReshapeOptionsT()
    reshape_options.newShape = np.asarray([1, width], np.int32)
    operators.append(
        fb.make_operator(
            model,
            schema.BuiltinOperator.RESHAPE,
            [reshape_input, shape],
            [head_input],
            schema.BuiltinOptions.ReshapeOptions,
            reshape_options,
        )
    )
    return added, operators


@contextlib.contextmanager
def matrix_projections(model):
    """While converting: every ProjectionLayer of `model` as a matmul with its hash matrix.

    The "matrix" lowering: `P` (`[n, T*d]`, the Fingerprint64 values scaled by 2**-63
    to lie in [-1, 1]; the scale changes no sign) is stored as float32 weights, and
    the bits are `cast(x @ P > 0)`: FULLY_CONNECTED, GREATER, CAST. A larger file
    than LSH_PROJECTION's seeds, much faster for dense inputs, and quantizable.
    Sums within float32 rounding of 0 may flip a bit that the builtin's float64 sum
    keeps; the export's comparison reports any effect on the outputs.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, ProjectionLayer)]
    for layer in layers:
        ragged = isinstance(layer.input, (list, tuple)) or bool(getattr(layer.input, "ragged", False))
        if ragged or layer.output_mode != "bits":
            raise ValueError(
                f"projection_lowering='matrix' needs a ProjectionLayer with a dense float input and "
                f"output='bits'; {layer.name!r} has {'ragged feature ids' if ragged else 'a dense input'} "
                f"and output={layer.output_mode!r}. Use projection_lowering='builtin'."
            )
    try:
        for layer in layers:
            matrix = hashing.projection_matrix(layer.hash_seeds, int(layer.input.shape[-1]))
            with tf.init_scope():
                weights = tf.constant((np.asarray(matrix) * 2.0**-63).astype(np.float32))
            layer.call = lambda inputs, weights=weights: tf.cast(
                tf.matmul(tf.cast(inputs, tf.float32), weights) > 0, tf.float32
            )
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)
