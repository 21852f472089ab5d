"""Small edits of TFLite flatbuffers with the schema's object API."""

import re

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

_TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.uint8): schema.TensorType.UINT8,
}
# Every tensor type of the schema, by the name of its NumPy-like dtype ("float32", "int8", ...).
_TYPE_NAMES = {
    code: name.lower() for name, code in vars(schema.TensorType).items() if not name.startswith("_")
}
_BUILTIN_NAMES = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}
# Operator codes below this value are also written to the deprecated int8 field.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def read(model_bytes):
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))


def write(model):
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def empty_model():
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = [], [], [], []
    subgraph.name = "main"
    model.subgraphs = [subgraph]
    return model


def add_tensor(model, subgraph, name, dtype, shape, data=None, *, shape_signature=None):
    """Appends a tensor (a constant when `data` is given) and returns its index."""
    tensor = schema.TensorT()
    tensor.name = name
    tensor.type = _TENSOR_TYPES[np.dtype(dtype)]
    tensor.shape = np.asarray(shape, dtype=np.int32)
    if shape_signature is not None:
        tensor.shapeSignature = np.asarray(shape_signature, dtype=np.int32)
    tensor.buffer = 0
    if data is not None:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def opcode_index(model, builtin_code):
    """Index of the operator code for `builtin_code`, added if the model lacks it."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin_code:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin_code
    code.deprecatedBuiltinCode = min(builtin_code, _PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def make_operator(model, builtin_code, inputs, outputs, options_type=0, options=None):
    operator = schema.OperatorT()
    operator.opcodeIndex = opcode_index(model, builtin_code)
    operator.inputs = np.asarray(inputs, dtype=np.int32)
    operator.outputs = np.asarray(outputs, dtype=np.int32)
    operator.builtinOptionsType = options_type
    operator.builtinOptions = options
    return operator


def tensor_map(name, index):
    entry = schema.TensorMapT()
    entry.name = name
    entry.tensorIndex = index
    return entry


def set_signature(model, inputs, outputs, key="serving_default"):
    """Sets the first subgraph's inputs and outputs, `[(name, tensor index)]`, and
    the one signature that names them."""
    subgraph = model.subgraphs[0]
    subgraph.inputs = np.asarray([index for _, index in inputs], np.int32)
    subgraph.outputs = np.asarray([index for _, index in outputs], np.int32)
    signature = schema.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(name, index) for name, index in inputs]
    signature.outputs = [tensor_map(name, index) for name, index in outputs]
    model.signatureDefs = [signature]


def operators(model):
    """`(name, is_builtin)` of each operator in every subgraph, in order.

    Custom operators, Flex (TF select) ones included, are not builtin: a stock
    LiteRT runtime on Android cannot run them without extra code.
    """
    found = []
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = code.customCode
                found.append((custom.decode() if isinstance(custom, bytes) else str(custom), False))
            else:
                found.append((_BUILTIN_NAMES[builtin], True))
    return found


def tensor_type_name(code):
    return _TYPE_NAMES.get(code, f"tensor type {code}")


# The names Keras's SavedModel export gives a list of outputs: `output_0`, `output_1`, ...
NUMBERED_OUTPUT = re.compile(r"output_(\d+)")


def outputs_order(names):
    """Positions of a file's signature outputs in the order to read them: as written, except
    `output_<i>` names (files written before `export` named outputs after the Keras model's,
    which the converter sorted as text: `output_10` before `output_2`), in `i`'s order."""
    numbered = [NUMBERED_OUTPUT.fullmatch(name) for name in names]
    if len(names) > 1 and all(numbered):
        return sorted(range(len(names)), key=lambda i: int(numbered[i].group(1)))
    return list(range(len(names)))


def input_specs(model):
    """`(name, dtype, shape)` of the first subgraph's inputs; -1 marks a free length."""
    return _specs(model, model.subgraphs[0].inputs)


def output_specs(model):
    """`(name, dtype, shape)` of the first subgraph's outputs; -1 marks a free length."""
    return _specs(model, model.subgraphs[0].outputs)


def _specs(model, indices):
    subgraph = model.subgraphs[0]
    specs = []
    for index in indices:
        tensor = subgraph.tensors[index]
        shape = tensor.shape if tensor.shapeSignature is None else tensor.shapeSignature
        dtype = tensor_type_name(tensor.type)
        specs.append((tensor.name.decode(), dtype, tuple(int(d) for d in shape)))
    return specs


def set_metadata(model, name, data):
    """Stores `data` (bytes) in a new buffer referenced by a metadata entry `name`, replacing one of that name."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != name] + [entry]


def get_metadata(model, name):
    """The bytes of the metadata entry `name`, or None."""
    for entry in model.metadata or []:
        if _text(entry.name) == name:
            data = model.buffers[entry.buffer].data
            return b"" if data is None else bytes(np.asarray(data, dtype=np.uint8))
    return None


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)
