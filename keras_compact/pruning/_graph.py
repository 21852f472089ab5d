"""Where a layer's units go: the one-consumer chains that unit merging edits.

Channels coupled across layers (residual adds, depthwise convolutions,
concatenations) are `_groups`' channel groups, which channel pruning, `shrink`
and `grow` edit. A chain is the simplest group, with exactly one reader: what
merging (`prune(..., merge=True)`, `criterion="similarity"`) refits and what
`shrink` folds a unit's constant `activation(0)` into. Each needs the path
from the unit to that reader: through
layers that act on each channel on its own and keep a constant channel constant
(`in_chain` in `layer_types`: activations, dropout, `BatchNormalization`,
pooling, at most one `Flatten`) to exactly one `Dense` or
convolution. A `Chain` is that path; where there is none (a branch, a residual
add, a model output), the reason says why, in words a `ValueError` can quote.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_compact import _keras_private, layer_types
from keras_compact._cloning import as_functional, fresh_copy
from keras_compact.layers import targeted_dropout
from keras_compact.layers.targeted_dropout import TargetedDropout

RESIZABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def unwrapped(layer):
    """The `Dense`/convolution inside `PruningMask` and `TargetedDropout` wrappers (or `layer`)."""
    # PruningMask is known by its method: it is defined in prune.py, which imports this module.
    while isinstance(layer, TargetedDropout) or hasattr(layer, "masked_values"):
        layer = layer.layer
    return layer


def columns(kernel, layer):
    """`layer`'s `kernel` (or a kernel-shaped array) as NumPy `[fan_in, units]` columns."""
    return np.asarray(keras.ops.convert_to_numpy(targeted_dropout.kernel_columns(kernel, layer)))


def to_kernel(columns, layer):
    """Inverse of `columns`: NumPy in the shape of `layer`'s kernel."""
    return np.asarray(keras.ops.convert_to_numpy(targeted_dropout.columns_to_kernel(columns, layer)))


def masked_kernel(layer):
    """A `PruningMask`'s kernel with its mask applied, as NumPy."""
    return keras.ops.convert_to_numpy(layer.masked_values()[0][1])


def unit_norms(layer):
    """The L2 norm of each unit's masked incoming weights: what magnitude unit pruning ranks."""
    return np.linalg.norm(columns(masked_kernel(layer), layer.target), axis=0)


@dataclasses.dataclass
class Chain:
    """A resizable layer's units, up to the one layer that reads them.

    `producer` and `consumer` are the graph's layers (wrappers included);
    `between` the channel-wise layers in order; `positions` how many positions a
    `Flatten` among them spreads each channel over (1 without one); `tensor` the
    consumer's input.
    """

    producer: keras.layers.Layer
    between: list
    consumer: keras.layers.Layer
    positions: int
    tensor: object

    def consumer_rows(self, kernel):
        """The consumer's kernel with the producer's channels on axis -2."""
        if isinstance(unwrapped(self.consumer), keras.layers.Dense):
            return kernel.reshape(self.positions, -1, kernel.shape[-1])
        return kernel

    def consumer_kernel(self, rows):
        """Inverse of `consumer_rows`."""
        if isinstance(unwrapped(self.consumer), keras.layers.Dense):
            return rows.reshape(-1, rows.shape[-1])
        return rows


@dataclasses.dataclass
class Blocked:
    """Why a resizable layer's units have no `Chain`; `output` when they are (or reach) a model output."""

    reason: str
    output: bool = False

    def __str__(self):
        return self.reason


def chains(model):
    """`{name of the unwrapped producer: Chain or Blocked}` for every resizable layer of `model`'s own graph."""
    graph = as_functional(model)
    readers, calls = {}, {}
    for node in _keras_private.nodes(graph):
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.arguments.keras_tensors:
            readers.setdefault(id(tensor), []).append(node)
    outputs = {id(tensor) for tensor in keras.tree.flatten(graph.outputs)}
    found = {}
    for node in _keras_private.nodes(graph):
        inner = unwrapped(node.operation)
        if isinstance(inner, RESIZABLE):
            if calls[id(node.operation)] > 1:
                found[inner.name] = Blocked(f"{inner.name!r} is called more than once in the model")
            else:
                found[inner.name] = _follow(node, readers, outputs, calls)
    return found


def _follow(node, readers, outputs, calls):
    producer, tensor = node.operation, node.outputs[0]
    name = unwrapped(producer).name
    if id(tensor) in outputs:
        return Blocked(f"the units of {name!r} are a model output", output=True)
    blocked = _producer_blocked(unwrapped(producer))
    if blocked:
        return blocked
    between, positions = [], 1
    while True:
        if id(tensor) in outputs:
            return Blocked(f"the units of {name!r} are a model output", output=True)
        nodes = readers.get(id(tensor), [])
        if len(nodes) != 1:
            names = sorted(node.operation.name for node in nodes)
            return Blocked(f"the units of {name!r} feed {len(nodes)} layers {names}, not one")
        node = nodes[0]
        layer = node.operation
        if len(node.arguments.keras_tensors) != 1:
            return Blocked(
                f"the units of {name!r} reach {type(layer).__name__} {layer.name!r}, which combines several inputs"
            )
        if calls[id(layer)] > 1:
            return Blocked(f"the units of {name!r} reach {layer.name!r}, which is called more than once")
        inner = unwrapped(layer)
        if isinstance(inner, RESIZABLE):
            return _consumer_blocked(inner, name, positions) or Chain(producer, between, layer, positions, tensor)
        reason = _not_channelwise(layer, tensor, flattened=positions > 1 or any(
            isinstance(b, keras.layers.Flatten) for b in between))
        if reason:
            return Blocked(f"the units of {name!r} reach {reason}")
        if isinstance(layer, keras.layers.Flatten):
            positions = math.prod(tensor.shape[1:-1])
        between.append(layer)
        tensor = node.outputs[0]


def _producer_blocked(producer):
    """Why the units of `producer` (unwrapped) cannot be resized at all, as a Blocked, or None."""
    name = producer.name
    if getattr(producer, "data_format", "channels_last") != "channels_last":
        return Blocked(f"{name!r} is channels_first; only channels_last layers are resized")
    if not _elementwise(producer.activation):
        return Blocked(f"the activation of {name!r} mixes its units")
    if getattr(producer, "groups", 1) > 1:
        return Blocked(f"{name!r} is a grouped convolution, whose groups keep equal widths")
    return None


def _consumer_blocked(inner, name, positions):
    """Why `inner`, the resizable layer that reads the units of `name`, cannot take fewer, or None."""
    if positions > 1 and not isinstance(inner, keras.layers.Dense):
        return Blocked(f"the units of {name!r} are flattened into {type(inner).__name__} {inner.name!r}")
    if getattr(inner, "data_format", "channels_last") != "channels_last":
        return Blocked(f"{inner.name!r} is channels_first; only channels_last layers are resized")
    if getattr(inner, "groups", 1) > 1:
        return Blocked(f"the units of {name!r} reach {inner.name!r}, a grouped convolution")
    return None


def _not_channelwise(layer, tensor, flattened):
    described = f"{type(layer).__name__} {layer.name!r}"
    if isinstance(layer, keras.layers.Flatten):
        if flattened:
            return f"a second Flatten {layer.name!r}"
        if any(size is None for size in tensor.shape[1:]):
            return f"{described} with an unknown input shape {tensor.shape}"
        return None
    entry = layer_types.lookup(layer)
    if not (entry.elementwise if flattened else entry.in_chain):
        return f"{described}, which is not channel-wise"
    if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (-1, len(tensor.shape) - 1):
        return f"{described}, which normalises axis {layer.axis}, not the channels"
    if isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and not _elementwise(layer.activation)
    ):
        return f"{described}, which mixes channels"
    return None


def _elementwise(activation):
    """Whether `activation`'s output at one position ignores the others (softmax does not)."""
    probe = np.array([[0.0, 1.0]], np.float32)
    moved = np.array([[0.0, -1.0]], np.float32)
    first = lambda x: float(keras.ops.convert_to_numpy(activation(x))[0, 0])  # noqa: E731
    return first(probe) == first(moved)


def constants(chain, channels):
    """The value each channel of the consumer's input takes when the producer's
    unit outputs `activation(0)`: a NumPy vector of `channels` values."""
    producer = unwrapped(chain.producer)
    shape = [1] + [8 if size is None else size for size in chain.producer.output.shape[1:-1]] + [channels]
    value = producer.activation(keras.ops.zeros(shape))
    for layer in chain.between:
        value = layer(value, training=False)
    # Flattened or not, the first `channels` values are the first position's channels.
    return keras.ops.convert_to_numpy(value).reshape(-1)[:channels]


def kernel_and_bias(layer, weights):
    """`layer`'s kernel and bias (None without one) as NumPy: from `weights[layer.name]`
    when an edit has set them, else from the layer."""
    values = weights.get(layer.name) or [keras.ops.convert_to_numpy(v) for v in layer.weights]
    at = 1 if isinstance(layer, targeted_dropout.SEPARABLE_LAYERS) else 0  # after its depthwise kernel
    # From the list, not `layer.use_bias`: an edit may have given the layer a bias (a folded constant).
    return values[at], (values[at + 1] if len(values) > at + 1 else None)


def replacement(layer, configs, weights):
    """`clone_with`'s choice for an edit: a layer of `configs[name]` holding
    `weights[name]`; other layers with weights copied; the rest shared."""
    if not isinstance(layer, keras.layers.Layer):  # a raw keras.ops call in the graph (`x + 3.0`)
        return None
    if layer.name in configs:
        return type(layer).from_config(configs[layer.name]), weights.get(layer.name)
    if layer.weights:
        return fresh_copy(layer), weights.get(layer.name) or layer.get_weights()
    return None
