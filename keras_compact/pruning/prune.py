"""One-shot magnitude pruning with the criterion Targeted Dropout trains for."""

import dataclasses

import keras
import numpy as np

from keras_compact._checks import check_rate
from keras_compact._cloning import clone_with, fresh_copy
from keras_compact.layers.targeted_dropout import SUPPORTED_LAYERS, TargetedDropout, call_with_values
from keras_compact.ops import targeting

_SCOPES = ("layer", "global")


@keras.saving.register_keras_serializable(package="keras_compact")
class PruningMask(keras.layers.Wrapper):
    """Holds a layer's pruned weights at zero: kernel (and bias) times fixed masks.

    Made by `prune`; removed by `strip`, which writes the zeros into the layer.
    Fine-tuning a model with these wrappers keeps the pruned weights at zero
    (their gradient is zero and the forward pass never sees them). Unit pruning
    also masks the pruned units' biases, so a pruned unit outputs `activation(0)`.

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D` or `DepthwiseConv2D` layer.
    """

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.mask = self.add_weight(
            shape=self.layer.kernel.shape, initializer="ones", trainable=False, name="mask"
        )
        self.bias_mask = (
            self.add_weight(shape=self.layer.bias.shape, initializer="ones", trainable=False, name="bias_mask")
            if self.layer.use_bias
            else None
        )
        self.built = True

    def masked_values(self):
        """`(variable, masked value)` pairs of the kernel and, if any, the bias."""
        pairs = [(self.layer.kernel, self.layer.kernel.value * self.mask.value)]
        if self.bias_mask is not None:
            pairs.append((self.layer.bias, self.layer.bias.value * self.bias_mask.value))
        return pairs

    def call(self, inputs):
        return call_with_values(self.layer, self.masked_values(), inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


@dataclasses.dataclass
class LayerPruning:
    """What `prune` did to one layer."""

    name: str
    weights: int
    zeros: int
    units: int
    pruned_units: int

    @property
    def sparsity(self):
        return self.zeros / self.weights


@dataclasses.dataclass
class PruningReport:
    """The pruned model and, per layer, weights, zeros and achieved sparsity."""

    model: keras.Model
    layers: list

    @property
    def sparsity(self):
        """Zeros over weights, all pruned layers together."""
        return sum(layer.zeros for layer in self.layers) / sum(layer.weights for layer in self.layers)

    def __str__(self):
        rows = [
            "| layer | weights | zeros | sparsity | pruned units |",
            "|---|---|---|---|---|",
        ]
        rows += [
            f"| {l.name} | {l.weights:,} | {l.zeros:,} | {l.sparsity:.2%} | {l.pruned_units}/{l.units} |"
            for l in self.layers
        ]
        rows.append(f"| all | {sum(l.weights for l in self.layers):,} | "
                    f"{sum(l.zeros for l in self.layers):,} | {self.sparsity:.2%} | |")
        return "\n".join(rows)


def prune(model, sparsity, granularity="weight", scope=None, layers=None):
    """Prunes the least important weights (or units) of `model`, one shot.

    The criterion is the one `TargetedDropout` targets: per output unit the
    smallest |w| of its incoming weights (`granularity="weight"`), or the units
    whose weight column has the smallest L2 norm (`"unit"`). Each pruned layer
    reaches exactly `round(sparsity * kernel.size)` zeros (weights: after
    `floor(sparsity * fan_in)` per unit, the remainder goes to the units whose
    next-smallest weight is smallest) or `round(sparsity * units)` zero units.
    Biases are not pruned, except those of pruned units (`"unit"`), so that
    `shrink` can remove the units exactly.

    Every `Dense`, `Conv1D`, `Conv2D` and `DepthwiseConv2D` (also inside a
    `TargetedDropout`, which is replaced) gets a `PruningMask` wrapper, so the
    returned model can be fine-tuned with its zeros held at zero; `strip` then
    leaves plain layers. The returned model shares its layers (and weights) with
    `model`, whose kernels now hold the zeros too.

    Args:
        model: a functional or Sequential Keras model.
        sparsity: the fraction to prune, in [0, 1].
        granularity: `"weight"` or `"unit"`.
        scope: `None` or `"layer"` (every layer pruned to `sparsity`), or
            `"global"` (`"weight"` only: one magnitude threshold over all layers,
            so the total reaches `sparsity` and layers differ).
        layers: names of the layers to prune (default: every supported layer;
            for `"unit"`, every one but those computing a model output, whose
            units are the classes).

    Returns:
        A `PruningReport` with `.model` and `.layers`.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
    ...                           keras.layers.Dense(10, activation="softmax")])
    >>> report = prune(model, 0.9)
    >>> [(layer.weights, layer.zeros) for layer in report.layers]
    [(2048, 1843), (320, 288)]
    >>> export_model = strip(report.model)
    """
    check_rate("sparsity", sparsity)
    if granularity not in targeting.GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {targeting.GRANULARITIES}. Received: granularity={granularity!r}"
        )
    scope = "layer" if scope is None else scope
    if scope not in _SCOPES:
        raise ValueError(f"scope must be None or one of {_SCOPES}. Received: scope={scope!r}")
    if scope == "global" and granularity != "weight":
        raise ValueError("scope='global' ranks weights across layers; it needs granularity='weight'.")
    targets = _prunable(model, layers, skip_outputs=granularity == "unit" and layers is None)
    masks = _masks(targets, sparsity, granularity, scope)

    def wrap(layer):
        inner = layer.layer if isinstance(layer, TargetedDropout) else layer
        if inner.name not in masks:
            return layer
        return PruningMask(inner, name=f"{inner.name}_pruned")

    pruned_model = keras.models.clone_model(model, clone_function=wrap)
    report = []
    for layer in pruned_model._flatten_layers():
        if isinstance(layer, PruningMask) and layer.layer.name in masks:
            mask = masks[layer.layer.name]
            columns = keras.ops.convert_to_numpy(targeting.kernel_columns(mask, _is_depthwise(layer.layer)))
            layer.mask.assign(mask)
            if granularity == "unit" and layer.bias_mask is not None:
                layer.bias_mask.assign(columns.any(axis=0).astype(np.float32))
            for variable, value in layer.masked_values():
                variable.assign(value)
            report.append(
                LayerPruning(
                    name=layer.layer.name,
                    weights=int(mask.size),
                    zeros=int(mask.size - np.count_nonzero(mask)),
                    units=columns.shape[1],
                    pruned_units=int(np.sum(~columns.any(axis=0))),
                )
            )
    return PruningReport(model=pruned_model, layers=report)


def strip(model):
    """Removes `PruningMask` and `TargetedDropout` wrappers, leaving plain layers.

    Returns a functional copy of `model` (nested models included) in which each
    `PruningMask` is a new plain layer holding the masked weights (the pruned ones
    zero) and each `TargetedDropout` is the layer it wraps. `model` itself is not
    changed: its masks and kernels stay as they were. Other layers, and the layers
    inside `TargetedDropout`, are shared with `model`, as tfmot's `strip_pruning`
    shares them. Use it for export and for tfmot-style workflows.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> plain = strip(prune(model, 0.5).model)
    >>> float(np.mean(plain.layers[-1].get_weights()[0] == 0))
    0.5
    """
    return clone_with(model, stripped_replacement)


def stripped_replacement(layer):
    """`clone_with`'s choice for `strip` (and the export's lowered copy): wrappers out, the rest shared."""
    if isinstance(layer, PruningMask):
        masked = {id(variable): value for variable, value in layer.masked_values()}
        weights = [np.asarray(masked.get(id(v), v.value)) for v in layer.layer.weights]
        return fresh_copy(layer.layer), weights
    if isinstance(layer, TargetedDropout):
        return layer.layer, None
    return None


def _is_depthwise(layer):
    return isinstance(layer, keras.layers.DepthwiseConv2D)


def _prunable(model, names, skip_outputs):
    """Prunable layers by name; with `skip_outputs`, not those computing a model output
    (removing units there would remove classes)."""
    outputs = {id(tensor) for tensor in model.outputs}
    found = {}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, (TargetedDropout, PruningMask)) else layer
        if skip_outputs and id(layer.output) in outputs:
            continue
        if isinstance(inner, SUPPORTED_LAYERS) and inner.built:
            found.setdefault(inner.name, inner)
    if names is not None:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise ValueError(
                f"layers {unknown} are not prunable layers of {model.name!r}; prunable: {sorted(found)}."
            )
        found = {name: found[name] for name in names}
    if not found:
        supported = ", ".join(cls.__name__ for cls in SUPPORTED_LAYERS)
        raise ValueError(
            f"The model {model.name!r} has no prunable layer (built {supported}); nothing to prune."
        )
    return found


def _masks(targets, sparsity, granularity, scope):
    if scope == "global":
        magnitudes = np.concatenate([np.abs(np.asarray(l.kernel.value)).ravel() for l in targets.values()])
        count = int(round(sparsity * magnitudes.size))
        order = np.argsort(magnitudes, kind="stable")
        keep = np.ones(magnitudes.size, np.float32)
        keep[order[:count]] = 0.0
        masks, offset = {}, 0
        for name, layer in targets.items():
            size = int(np.prod(layer.kernel.shape))
            masks[name] = keep[offset : offset + size].reshape(layer.kernel.shape)
            offset += size
        return masks
    return {
        name: _layer_mask(np.asarray(layer.kernel.value), sparsity, granularity, _is_depthwise(layer))
        for name, layer in targets.items()
    }


def _layer_mask(kernel, sparsity, granularity, depthwise):
    columns = keras.ops.convert_to_numpy(targeting.kernel_columns(kernel, depthwise))
    fan_in, units = columns.shape
    if granularity == "unit":
        pruned = targeting.unit_candidates(np.linalg.norm(columns, axis=0), int(round(sparsity * units)))
        keep = np.broadcast_to(~pruned[None, :], columns.shape)
    else:
        # floor(sparsity * fan_in) per unit, then the remainder of the layer's total
        # to the units whose next-smallest weight is smallest.
        per_column = int(np.floor(sparsity * fan_in))
        remainder = int(round(sparsity * fan_in * units)) - per_column * units
        keep = ~targeting.weight_candidates(columns, per_column)
        if remainder > 0:
            magnitudes = np.abs(columns)
            next_smallest = np.where(keep, magnitudes, np.inf).min(axis=0)
            extra = np.argsort(next_smallest, kind="stable")[:remainder]
            with_one_more = targeting.weight_candidates(columns, per_column + 1)
            keep[:, extra] = ~with_one_more[:, extra]
    return keep.astype(np.float32).reshape(kernel.shape)
