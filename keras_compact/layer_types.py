"""One table of what keras-compact knows about each layer type, and `register_layer` for your own.

Every module that treats layers by type asks this table (`lookup(layer)`)
instead of keeping tuples of classes: channel pruning and `shrink` (how the
layer couples channels and how its weights are cut), unit merging (whether a
unit's constant passes it), `macs`, quantization-aware training (which weights
the int8 file rounds and how, whether the output keeps its input's scale) and
export (the layer's lowering). A layer's type is looked up along its class's
method resolution order, so a subclass of `Dense` is a `Dense` until it is
registered itself. The built-in entries are one table in `_builtin_types.py`
(read on the first lookup); `register_layer` adds a user's layer.
"""

import dataclasses
import importlib
import numbers

import keras

# What each channel axis of a weight does, in `register_layer(weights=...)`.
AXIS_ROLES = ("in", "out", None)
CHANNELS = ("new", "same")
WEIGHT_MODES = ("per_channel", "per_tensor", "constant")


@dataclasses.dataclass(frozen=True)
class LayerType:
    """What the package knows about one layer type; None where it knows nothing.

    Attributes:
        channels: the channel-group handler (`pruning._groups`): `handler(graph,
            node, layer, input layouts)` returns `(kind, output layout, ...)` or
            the reason the layer's channels cannot be mapped.
        resize: `resize(member, config, values)` writes a cut layer's new sizes
            into its config (the layers whose weights are `Matrix` views).
        masked_by_matrix: `PruningMask` masks each of its weights by channel
            (`granularity="channel"` only), not one kernel.
        elementwise: acts on each value on its own at inference (activations,
            dropout): channels stay apart even after a `Flatten`.
        in_chain: acts on each channel on its own and maps a constant channel
            to a constant (what unit merging folds a dead unit's value through;
            padding is not: its border is 0, not the constant).
        macs: `macs(layer, input shapes, output shape)`: one call's
            multiply-accumulates, or None where they cannot be counted.
        quantized: `quantized(layer)`: `[(variable, mode)]`, the weights the
            int8 file holds and how each is rounded (`"per_channel"`,
            `"per_tensor"`, `"depthwise"`, `"table"`); `[]` for a layer whose
            weights the file keeps in float or folds, None for one it cannot take.
        kernel_mode: for a layer the file writes as one kernel operator
            (FULLY_CONNECTED, CONV_2D, ...): how its kernel is rounded.
        fuses: what the converter fuses into the layer's operator:
            `"own_activation"` (its `activation=`, a ReLU or ReLU6), `"activation"`
            (a ReLU or ReLU6 layer after it), `"batch_norm"` (a
            `BatchNormalization` after it).
        splits_activation: its `activation`, where the operator cannot fuse it,
            is computed (and quantized) after the layer's own output.
        simulation: for a layer the file writes as several int8 operators
            (attention, `LayerNormalization`, a separable convolution), how
            `QuantizeAware` computes it with each tensor between them rounded
            (`layers.quantize_aware.Simulation`).
        keeps_scale: its int8 output keeps its input's scale (no range of its own).
        lowering: `lowering(layer, projection_lowering)`: `(replacement,
            weights)` the converter sees instead of the layer, or None.
        registered_by: `"keras_compact"` (built in), `"register_layer"`, or None
            for a type nobody registered.
    """

    channels: object = None
    resize: object = None
    masked_by_matrix: bool = False
    elementwise: bool = False
    in_chain: bool = False
    macs: object = None
    quantized: object = None
    kernel_mode: str = None
    fuses: tuple = ()
    splits_activation: bool = False
    simulation: object = None
    keeps_scale: bool = False
    lowering: object = None
    registered_by: str = None


_UNKNOWN = LayerType()
_TABLE = {}
_BY_NAME = {}  # rows for classes of packages not imported to know them: "module.QualifiedName" -> LayerType
_BUILTINS_LOADED = []


def define(classes, **facets):
    """Sets `facets` of the built-in entry of each class in `classes` (the table's own writers)."""
    for cls in classes if isinstance(classes, tuple) else (classes,):
        _TABLE[cls] = dataclasses.replace(_TABLE.get(cls, _UNKNOWN), registered_by="keras_compact", **facets)


def define_by_name(names, **facets):
    """`define` for classes named `"module.QualifiedName"` (a KerasHub layer), found without importing them."""
    for name in names if isinstance(names, tuple) else (names,):
        _BY_NAME[name] = dataclasses.replace(_BY_NAME.get(name, _UNKNOWN), registered_by="keras_compact", **facets)


def lookup(layer):
    """The `LayerType` of `layer` (a layer or a layer class): the entry of the first class of its method
    resolution order that has one; an entry of Nones for a type nobody registered."""
    _load_builtins()
    cls = layer if isinstance(layer, type) else type(layer)
    for base in cls.__mro__:
        if base in _TABLE:
            return _TABLE[base]
        named = _BY_NAME.get(f"{base.__module__}.{base.__qualname__}")
        if named is not None:
            return named
    return _UNKNOWN


def _load_builtins():
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED.append(True)
        importlib.import_module("keras_compact._builtin_types")


def register_layer(layer_class, *, channels=None, weights=None, size=None, macs=None, quantize=None):
    """Lets your own layer type join channel pruning, `shrink`, `macs` and quantization-aware training.

    A layer the package does not know blocks the channels around it, counts no
    MACs (with a warning) and is refused by `quantize_aware`. Describe it once:

    - `channels="new"`: the layer makes new output channels from the ones it
      reads, as `Dense` does; `size` names the config key that holds their
      number (`"units"`). Its output channels become a channel group of their
      own, and the channels it reads stay free to be pruned by the layers that
      make them.
    - `channels="same"`: output channel j is computed from input channel j alone
      (a per-channel scale, an elementwise gate): the layer joins the group of
      what it reads.
    - `weights={name: axes}`: for every weight of the layer (by variable name),
      what each axis is: `"in"` (one index per input channel), `"out"` (one per
      output channel) or None (anything else: kernel positions, ...). With
      `channels="same"`, `"in"` and `"out"` are the same channels. Every weight
      must be described: pruning cuts these axes, nothing else.
    - `macs(layer, input_shape, output_shape)`: one call's multiply-accumulates
      (shapes with the batch axis).
    - `quantize={name: mode}`: the weights quantization-aware training rounds
      as the int8 file holds them: `"per_channel"` or `"per_tensor"` for a
      kernel (symmetric int8; per output channel: over every axis but the
      last), `"constant"` for an operand of an elementwise MUL or ADD (a gain,
      a bias added by hand: asymmetric over its own range, as the converter
      quantizes constants). The layer's output gets a learned 8-bit range.
      Whether the converter writes your computation in int8 is its own
      matter: `export` verifies the file, and reports operators left in float.

    Channel pruning then masks the described axes (`PruningMask`, by channel),
    and `shrink` builds a layer from the config with the new `size` and the cut
    weights, so the layer must rebuild from its config with weights of those
    shapes, as Keras layers do.

    Args:
        layer_class: a subclass of `keras.layers.Layer` the package has no entry
            for (a subclass of a built-in layer inherits the built-in's entry
            until registered).
        channels: `"new"`, `"same"` or None (the layer's channels cannot be pruned).
        weights: `{variable name: tuple of "in"/"out"/None per axis}`; required
            with `channels`.
        size: with `channels="new"`, the config key of the output channel count.
        macs: a function `(layer, input_shape, output_shape) -> int`, or None.
        quantize: `{variable name: "per_channel", "per_tensor" or "constant"}`, or None.

    Returns:
        The registered `LayerType`.

    Raises:
        ValueError: an argument outside what is accepted, or a description that
            cannot prune the layer (named with what it lacks).

    Example:

    >>> @keras.saving.register_keras_serializable(package="docs")
    ... class Scale(keras.layers.Layer):  # multiplies each channel by a weight of its own
    ...     def build(self, input_shape):
    ...         self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
    ...     def call(self, x):
    ...         return x * self.scale
    >>> layer_type = register_layer(Scale, channels="same", weights={"scale": ("in",)})
    >>> lookup(Scale()).registered_by
    'register_layer'
    """
    problems = _registration_problems(layer_class, channels, weights, size, macs, quantize)
    if problems:
        raise ValueError(f"register_layer cannot register {getattr(layer_class, '__name__', layer_class)!r}: "
                         + "; ".join(problems) + ".")
    from keras_compact.pruning import _declared  # the handlers of described layers

    spec = _declared.Spec(channels, dict(weights or {}), size, macs, dict(quantize or {}))
    entry = LayerType(
        channels=_declared.channels(spec) if channels else None,
        resize=_declared.resize(spec) if channels else None,
        masked_by_matrix=channels is not None,
        macs=_declared.macs(spec) if macs else None,
        quantized=_declared.quantized(spec) if quantize else None,
        registered_by="register_layer",
    )
    _load_builtins()
    _TABLE[layer_class] = entry
    return entry


def unregister_layer(layer_class):
    """Removes what `register_layer` registered for `layer_class` (a built-in entry cannot be removed)."""
    entry = _TABLE.get(layer_class)
    if entry is None or entry.registered_by != "register_layer":
        raise ValueError(f"unregister_layer removes types registered by register_layer. Received: "
                         f"layer_class={getattr(layer_class, '__name__', layer_class)!r}, which is "
                         + ("built in" if entry is not None else "not registered"))
    del _TABLE[layer_class]


def _registration_problems(layer_class, channels, weights, size, macs, quantize):
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        return [f"layer_class must be a subclass of keras.layers.Layer. Received: layer_class={layer_class!r}"]
    _load_builtins()
    if layer_class in _TABLE and _TABLE[layer_class].registered_by == "keras_compact":
        return [f"{layer_class.__name__} is built in; register a subclass of it to change what is known"]
    problems = []
    if channels not in CHANNELS + (None,):
        problems.append(f"channels must be one of {CHANNELS} or None. Received: channels={channels!r}")
    if channels is None and weights is not None:
        problems.append("weights describes how channel pruning cuts the layer: give channels too")
    if channels is not None:
        problems += _weights_problems(weights, channels)
    if channels == "new" and not (isinstance(size, str) and size):
        problems.append(f"channels='new' needs size, the config key of the output channel count "
                        f"(as 'units'). Received: size={size!r}")
    if channels != "new" and size is not None:
        problems.append(f"size is the output channel count of channels='new'. Received: size={size!r} "
                        f"with channels={channels!r}")
    if macs is not None and not callable(macs):
        problems.append(f"macs must be a function (layer, input_shape, output_shape) -> int. Received: "
                        f"macs={macs!r}")
    if quantize is not None:
        if not isinstance(quantize, dict) or not quantize or any(
                not isinstance(name, str) or mode not in WEIGHT_MODES for name, mode in quantize.items()):
            problems.append(f"quantize must map weight names to one of {WEIGHT_MODES}. Received: "
                            f"quantize={quantize!r}")
    if channels is None and macs is None and quantize is None:
        problems.append("give at least one of channels (with weights), macs or quantize")
    return problems


def _weights_problems(weights, channels):
    if not isinstance(weights, dict) or any(not isinstance(name, str) for name in weights):
        return [f"weights must map every weight's name to its axes (a tuple of 'in', 'out' or None per axis). "
                f"Received: weights={weights!r}"]
    problems = []
    for name, axes in weights.items():
        if not isinstance(axes, (tuple, list)) or any(
                isinstance(axis, numbers.Number) or axis not in AXIS_ROLES for axis in axes):
            problems.append(f"weights[{name!r}] must be a tuple of 'in', 'out' or None, one per axis. "
                            f"Received: {axes!r}")
        elif channels == "new" and len([axis for axis in axes if axis == "out"]) > 1:
            problems.append(f"weights[{name!r}] names more than one 'out' axis: {tuple(axes)!r}")
        elif channels == "same" and len([axis for axis in axes if axis is not None]) > 1:
            problems.append(f"weights[{name!r}] names more than one channel axis: {tuple(axes)!r} (with "
                            "channels='same', 'in' and 'out' are the same channels)")
    roles = {axis for axes in weights.values() if isinstance(axes, (tuple, list)) for axis in axes}
    if channels == "new" and "out" not in roles:
        problems.append("channels='new' needs a weight with an 'out' axis: the output channels pruning cuts")
    return problems
