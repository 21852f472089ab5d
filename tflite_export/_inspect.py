import dataclasses
import json
import os

import numpy as np

from tflite_export import _flatbuffer as fb

_IDENTIFIER = b"TFL3"
METADATA_NAME = "keras_compact"


@dataclasses.dataclass
class TensorInfo:
    """An input or output of a `.tflite` file."""

    name: str
    dtype: str
    shape: tuple  # -1 marks a length set per invoke
    scale: list = None  # quantization scales (one, or one per channel); None when not quantized
    zero_point: list = None


@dataclasses.dataclass
class InspectReport:
    """What a `.tflite` file holds and what runs it.

    Attributes:
        path: the file (None for bytes).
        bytes: its size.
        operators: operator name -> count, in order of first use.
        builtin_only: every operator is a TFLite builtin, so the stock LiteRT
            runtime (Android included) runs the file without custom code.
        flex_operators: TF ("Flex", select-TF-ops) operators, which need the
            Flex delegate; custom_operators: other custom operators.
        inputs, outputs: `TensorInfo`s of the first signature (or subgraph).
        weight_bytes: bytes of constant tensors (weights, seeds, tables).
        weight_tensors: name -> bytes of each constant tensor, largest first.
        signatures: the signature keys.
        metadata: the `keras_compact` metadata `export` wrote (labels, input
            formats, ...), or None.
    """

    path: str
    bytes: int
    operators: dict
    builtin_only: bool
    flex_operators: list
    custom_operators: list
    inputs: list
    outputs: list
    weight_bytes: int
    weight_tensors: dict
    signatures: list
    metadata: dict = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self):
        def tensor(info):
            quantized = "" if info.scale is None else f" (scale {info.scale[0]:.4g}, zero point {info.zero_point[0]})"
            return f"{info.name} {info.dtype} {list(info.shape)}{quantized}"

        runtime = "stock LiteRT runs it" if self.builtin_only else (
            "needs " + ("the Flex delegate" if self.flex_operators else "custom operator code")
        )
        labels = (self.metadata or {}).get("labels")
        lines = [
            f"{self.path or '<bytes>'}: {self.bytes:,} bytes ({self.weight_bytes:,} in constant tensors); {runtime}",
            "operators: " + ", ".join(f"{name} x{count}" for name, count in self.operators.items()),
            "inputs: " + "; ".join(tensor(info) for info in self.inputs),
            "outputs: " + "; ".join(tensor(info) for info in self.outputs),
        ]
        if labels:
            lines.append(f"labels: {', '.join(labels)}")
        return "\n".join(lines)


def inspect(path_or_bytes):
    """Reports the operators, inputs/outputs and weights of any `.tflite` file.

    Args:
        path_or_bytes: a path or the file's bytes.

    Returns:
        An `InspectReport` (`str(report)` for people, `report.to_json()` for tools).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the bytes are not a (complete) TFLite model.

    Example:

    >>> report = inspect("projection.tflite")  # doctest: +SKIP
    >>> report.builtin_only, report.operators["LSH_PROJECTION"]  # doctest: +SKIP
    (True, 1)
    """
    path = None
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        path = os.fspath(path_or_bytes)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such .tflite file: {path}")
        with open(path, "rb") as stream:
            data = stream.read()
    model = _parse(data, path)
    subgraph = model.subgraphs[0]
    operators = fb.operators(model)
    counts = {}
    for name, _ in operators:
        counts[name] = counts.get(name, 0) + 1
    custom = sorted({name for name, builtin in operators if not builtin})
    flex = [name for name in custom if name.startswith("Flex")]
    inputs, outputs = _io_tensors(model)
    weights = _weight_bytes(model)
    return InspectReport(
        path=path,
        bytes=len(data),
        operators=counts,
        builtin_only=not custom,
        flex_operators=flex,
        custom_operators=[name for name in custom if name not in flex],
        inputs=[_tensor_info(subgraph.tensors[i]) for i in inputs],
        outputs=[_tensor_info(subgraph.tensors[i]) for i in outputs],
        weight_bytes=sum(weights.values()),
        weight_tensors=dict(sorted(weights.items(), key=lambda item: -item[1])),
        signatures=[s.signatureKey.decode() for s in model.signatureDefs or []],
        metadata=_metadata(model),
    )


def _io_tensors(model):
    """The indices of the file's input and output tensors, in its signature's order where it has one."""
    if model.signatureDefs:
        signature = model.signatureDefs[0]
        order = fb.outputs_order([entry.name.decode() for entry in signature.outputs])
        return [entry.tensorIndex for entry in signature.inputs], [signature.outputs[i].tensorIndex for i in order]
    subgraph = model.subgraphs[0]
    return list(subgraph.inputs), list(subgraph.outputs)


def _weight_bytes(model):
    """`{tensor name: bytes}` of every tensor the file stores data for."""
    weights = {}
    for tensor in model.subgraphs[0].tensors:
        buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
        size = 0 if buffer is None or buffer.data is None else len(buffer.data)
        if size:
            weights[tensor.name.decode()] = size
    return weights


def read_metadata(path_or_bytes):
    """The `keras_compact` metadata of a `.tflite` file written by `export` (a dict), or None.

    Example:

    >>> read_metadata("intents.tflite")["labels"][:2]  # doctest: +SKIP
    ['UNK', 'AddToPlaylist']
    """
    return inspect(path_or_bytes).metadata


def recorded_kinds(model_bytes, names):
    """`{output name: "classes" or "values"}` as `export` recorded them in the file's metadata, for `names`."""
    metadata = _metadata(fb.read(model_bytes)) or {}
    return {entry["name"]: entry["kind"] for entry in metadata.get("outputs") or []
            if isinstance(entry, dict) and entry.get("name") in names and entry.get("kind") in ("classes", "values")}


def _metadata(model):
    data = fb.get_metadata(model, METADATA_NAME)
    if data is None:
        return None
    try:
        return json.loads(data.decode())
    except ValueError:
        return None


def _parse(data, path):
    where = path or "the bytes"
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ValueError(f"{where} is not a TFLite model (no 'TFL3' flatbuffer identifier).")
    try:
        model = fb.read(data)
        if not model.subgraphs:
            raise ValueError("no subgraph")
    except Exception as error:  # the flatbuffer parser raises many types on broken bytes
        raise ValueError(_first_line(f"{where} is not a valid TFLite model ({type(error).__name__}: {error})")) from error
    if all(builtin for _, builtin in fb.operators(model)):
        # LiteRT's verifier catches inconsistent files the parser accepts; it cannot load
        # files with custom operators it does not know, which are reported instead.
        from ai_edge_litert.interpreter import Interpreter

        try:
            Interpreter(model_content=data)
        except Exception as error:
            raise ValueError(_first_line(f"{where} is not a valid TFLite model (LiteRT: {error})")) from error
    return model


def _first_line(text):
    return text.strip().splitlines()[0]


def _tensor_info(tensor):
    shape = tensor.shape if tensor.shapeSignature is None else tensor.shapeSignature
    quantization = tensor.quantization
    scale = zero_point = None
    if quantization is not None and quantization.scale is not None and len(quantization.scale):
        scale = [float(v) for v in np.asarray(quantization.scale)]
        zero_point = [int(v) for v in np.asarray(quantization.zeroPoint)]
    return TensorInfo(
        name=tensor.name.decode(),
        dtype=fb.tensor_type_name(tensor.type),
        shape=tuple(int(d) for d in shape),
        scale=scale,
        zero_point=zero_point,
    )
