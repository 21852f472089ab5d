"""The `layer_types` facets of a layer described to `register_layer`: its channels, sizes, MACs and int8 weights.

A described layer's weights are `Matrix` views, as an attention layer's: each
weight's `"in"` axes read the channels of the layer's input (rows), its `"out"`
axes write its output channels (columns). With `channels="new"` the output
channels are a new space; with `channels="same"` they are the input's, and
every channel axis of a weight follows them (columns: cut with the channel,
read by nobody).
"""

import dataclasses
import math

from keras_compact.pruning._layout import Matrix


@dataclasses.dataclass(frozen=True)
class Spec:
    """What `register_layer` was told (checked there)."""

    channels: str
    weights: dict
    size: str
    macs: object
    quantize: dict


def _described(layer):
    return f"{type(layer).__name__} {layer.name!r}"


def _short_name(variable):
    return variable.path.split("/")[-1]


def _check_weights(spec, layer):
    """Raises where the layer's weights are not what `register_layer` described."""
    names = [_short_name(variable) for variable in layer.weights]
    missing = [name for name in names if name not in spec.weights]
    unknown = [name for name in spec.weights if name not in names]
    if missing or unknown:
        lacks = ([f"weights {missing} are not described"] if missing else []) + (
            [f"described weights {unknown} are not the layer's"] if unknown else [])
        raise ValueError(
            f"register_layer({type(layer).__name__}, ...) does not describe {_described(layer)}: "
            f"{'; '.join(lacks)}. The layer has weights {names}; give register_layer(weights=...) an entry "
            "for each, with the role of every axis."
        )
    for variable in layer.weights:
        axes = spec.weights[_short_name(variable)]
        if len(axes) != len(variable.shape):
            raise ValueError(
                f"register_layer({type(layer).__name__}, ...) describes weight {_short_name(variable)!r} of "
                f"{_described(layer)} with {len(axes)} axes {tuple(axes)!r}; it has shape {tuple(variable.shape)}."
            )


def _sizes(spec, layer, inputs, output):
    """Raises where an `"in"` or `"out"` axis is not as long as the channels it follows."""
    for variable in layer.weights:
        axes = spec.weights[_short_name(variable)]
        for role, layout in (("in", inputs), ("out", output)):
            along = [axis for axis, name in enumerate(axes) if name == role]
            size = math.prod(variable.shape[axis] for axis in along)
            if along and size != layout.width * layout.positions:
                raise ValueError(
                    f"register_layer({type(layer).__name__}, ...): the {role!r} axes {tuple(along)} of weight "
                    f"{_short_name(variable)!r} of {_described(layer)} hold {size} values, but the layer's "
                    f"{'input' if role == 'in' else 'output'} has {layout.width * layout.positions} channels."
                )


def channels(spec):
    """The channel-group handler of a described layer."""

    def handler(graph, node, layer, inputs):
        if not layer.built:
            return f"{_described(layer)} is not built"
        _check_weights(spec, layer)
        described = _described(layer)
        tensors = node.arguments.keras_tensors
        if len(tensors) != 1 or len(node.outputs) != 1:
            return f"{described} takes or returns several tensors (a registered layer maps one to one)"
        width = node.outputs[0].shape[-1]
        if spec.channels == "same":
            if width != tensors[0].shape[-1] or inputs[0].positions > 1:
                return f"{described} is registered with channels='same' but changes the channel axis"
            output = inputs[0]
        else:
            output = graph.new_space(width, described)
        _sizes(spec, layer, inputs[0], output)
        matrices = []
        for index, variable in enumerate(layer.weights):
            axes = spec.weights[_short_name(variable)]
            reads = tuple(axis for axis, role in enumerate(axes) if role == "in")
            writes = tuple(axis for axis, role in enumerate(axes) if role == "out")
            if spec.channels == "same":  # one channel axis, cut with the channel it follows
                matrices.append(Matrix(index, None, inputs[0], (), reads + writes))
            elif reads or writes:
                matrices.append(Matrix(index, inputs[0] if reads else None, output if writes else None, reads,
                                       writes))
        return "declared", output, None, tuple(matrices)

    return handler


def resize(spec):
    """Writes a cut layer's new output channel count into its config (`size`)."""

    def write(member, config, values):
        if spec.channels != "new":
            return
        for variable, value in zip(member.layer.weights, values):
            axes = spec.weights[_short_name(variable)]
            if "out" in axes:
                config[spec.size] = int(value.shape[axes.index("out")])
                return

    return write


def macs(spec):
    """The user's count, called as `macs(layer, input_shape, output_shape)`."""

    def count(layer, input_shapes, output_shape):
        return int(spec.macs(layer, input_shapes[0] if input_shapes else None, output_shape))

    return count


def quantized(spec):
    """The named weights, each in its mode."""

    def weights(layer):
        found = {_short_name(variable): variable for variable in layer.weights}
        missing = [name for name in spec.quantize if name not in found]
        if missing:
            raise ValueError(
                f"register_layer({type(layer).__name__}, quantize=...) names weights {missing} that "
                f"{_described(layer)} does not have (it has {list(found)})."
            )
        return [(found[name], "table" if mode == "constant" else mode) for name, mode in spec.quantize.items()]

    return weights
