"""Pruning weights and units: one shot (`prune`), or during training (`prunable`
with `keras_compact.callbacks.GradualPruning`), with the criterion Targeted
Dropout trains for."""

import dataclasses

import keras
import numpy as np

from keras_compact import _keras_private, layer_types
from keras_compact._checks import (
    ChecksCallInputs, bool_errors, check_rate, describe_non_finite_weights, keyword_only, non_finite_weights, one_of,
    raise_errors,
)
from keras_compact._cloning import check_model, clone_with, fresh_copy
from keras_compact.layers.targeted_dropout import (
    SUPPORTED_LAYERS,
    TargetedDropout,
    call_with_values,
    check_supported,
    kernel_of,
    wrapped_output_shape,
)
from keras_compact.ops import targeting
from keras_compact.pruning import _channel, _criteria, _graph, _groups, _reconstruct
from keras_compact.pruning._graph import masked_kernel

SCOPES = ("unit", "layer", "global")
GRANULARITIES = ("weight", "unit", "channel")
CRITERIA = ("magnitude", "onorm", "taylor", "similarity", "bn_scale")


def masked_by_channel(layer):
    """Whether a `PruningMask` holds every weight of `layer` by channel (attention heads, recurrent units,
    embedding dimensions, a registered layer: `masked_by_matrix` in `layer_types`), not one kernel."""
    return layer_types.lookup(layer).masked_by_matrix


@keras.saving.register_keras_serializable(package="keras_compact")
class PruningMask(_keras_private.BuildsFromArguments, ChecksCallInputs, keras.layers.Wrapper):
    """Holds a layer's pruned weights at zero: kernel (and bias) times fixed masks.

    Made by `prune` (masks set) and `prunable` (all-ones masks, for
    `keras_compact.callbacks.GradualPruning` to set during training); removed by
    `strip`, which writes the zeros into a plain layer. Training a model with
    these wrappers keeps the pruned weights at zero (their gradient is zero and
    the forward pass never sees them). With `granularity="unit"` a unit whose
    weights are all masked loses its bias too, so it outputs `activation(0)` and
    `shrink` can remove it; `granularity="channel"` masks whole channel groups
    (`prunable(model, granularity="channel")`), filters and the kernel rows that
    read them. The masks are non-trainable weights: they are saved with the model.

    By channel it also holds the heads of a `MultiHeadAttention` or
    `GroupQueryAttention`, the units of an `LSTM`, `GRU`, `SimpleRNN` or
    `Bidirectional` one, and an `Embedding`'s dimensions: one mask per weight
    (`masks`), called with the wrapped layer's own arguments
    (`mask(query, value, use_causal_mask=True)`).

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D`, `Conv3D`, `DepthwiseConv2D`, a
            transposed or a separable convolution (its pointwise kernel is
            masked), or a `TargetedDropout` wrapping one (which keeps dropping
            in training); with `granularity="channel"`, also one of the layers
            above.
        granularity: `"weight"`, `"unit"` or `"channel"`: what `GradualPruning` removes.

    Example:

    >>> layer = PruningMask(keras.layers.Dense(4))
    >>> layer.build((None, 3))
    >>> layer.set_mask(np.eye(3, 4, dtype=bool))
    >>> float(np.mean(keras.ops.convert_to_numpy(layer.mask)))
    0.25
    """

    expected_inputs = "what its wrapped layer takes: a tensor or a NumPy array"

    def __init__(self, layer, granularity="weight", **kwargs):
        raise_errors([one_of("granularity", granularity, GRANULARITIES)])
        if masked_by_channel(layer):
            if granularity != "channel":
                raise ValueError(
                    f"PruningMask holds the heads, units or dimensions of a {type(layer).__name__} by channel "
                    f"only. Received: granularity={granularity!r}; use granularity='channel'."
                )
        else:
            check_supported(layer.layer if isinstance(layer, TargetedDropout) else layer)
        super().__init__(layer, **kwargs)
        self.granularity = granularity
        self.supports_masking = bool(getattr(layer, "supports_masking", False))  # a padding mask passes, as unwrapped

    @property
    def target(self):
        """The layer whose weights are masked."""
        return self.layer.layer if isinstance(self.layer, TargetedDropout) else self.layer

    def builds_from_arguments(self):
        return masked_by_channel(self.target)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        target = self.target
        if self.builds_from_arguments():
            self.masks = [self.add_weight(shape=variable.shape, initializer="ones", trainable=False, name=f"mask_{i}")
                          for i, variable in enumerate(target.weights)]
            self.built = True
            return
        self.mask = self.add_weight(shape=kernel_of(target).shape, initializer="ones", trainable=False, name="mask")
        self.bias_mask = (
            self.add_weight(shape=target.bias.shape, initializer="ones", trainable=False, name="bias_mask")
            if target.use_bias
            else None
        )
        self.built = True

    def masked_values(self):
        """`(variable, masked value)` pairs of the kernel and, if any, the bias (every weight, for a layer
        masked by channel: `masked_by_channel`)."""
        target = self.target
        if self.builds_from_arguments():
            return [(variable, variable.value * mask.value) for variable, mask in zip(target.weights, self.masks)]
        kernel = kernel_of(target)
        pairs = [(kernel, kernel.value * self.mask.value)]
        if self.bias_mask is not None:
            pairs.append((target.bias, target.bias.value * self.bias_mask.value))
        return pairs

    def set_mask(self, keep):
        """Keeps the kernel's weights where `keep` (a kernel-shaped bool array) is true.

        With `granularity="unit"`, a unit that keeps no weight loses its bias too.
        The pruned weights are set to zero in the layer as well (as tfmot does),
        so a weight a later mask keeps again starts from zero. For a layer of
        masked by channel (`masked_by_channel`), `keep` is a list: one bool array per weight.
        """
        if self.builds_from_arguments():
            if len(keep) != len(self.masks):
                raise ValueError(f"set_mask takes one array per weight of {self.target.name!r} ({len(self.masks)}). "
                                 f"Received: {len(keep)} arrays")
            for mask, kept in zip(self.masks, keep):
                mask.assign(np.asarray(kept, bool).reshape(mask.shape).astype(mask.dtype))
        else:
            keep = np.asarray(keep, bool).reshape(self.mask.shape)
            self.mask.assign(keep.astype(self.mask.dtype))
            if self.bias_mask is not None:
                alive = _graph.columns(keep, self.target).any(axis=0)
                self.bias_mask.assign(alive if self.granularity != "weight" else np.ones_like(alive))
        for variable, value in self.masked_values():
            variable.assign(value)

    def call(self, inputs, *args, training=None, **kwargs):
        if _keras_private.call_has_training_arg(self.layer):
            kwargs["training"] = training
        kwargs = _keras_private.with_masks(self.layer, (inputs, *args), kwargs)  # as Keras gives it unwrapped
        return call_with_values(self.layer, self.masked_values(), inputs, *args, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        return self.layer.compute_mask(inputs, previous_mask)  # an Embedding's padding mask, as unwrapped

    def compute_output_shape(self, input_shape):
        return wrapped_output_shape(self.layer, input_shape)

    def get_config(self):
        return {**super().get_config(), "granularity": self.granularity}


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
    """The pruned model and, per layer, weights, zeros and achieved sparsity;
    with `granularity="channel"`, `groups` says how many channels each group lost,
    and with `reconstruct=True`, `reconstruction` how each refit tensor's error fell
    (a `Refit` per tensor read: its readers, channels kept, samples, relative
    squared error pruned and refit)."""

    model: keras.Model
    layers: list
    groups: list = None
    reconstruction: list = None

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
        if self.groups:
            rows += ["", "| channel group (producers) | channels | pruned |", "|---|---|---|"]
            rows += [f"| {_groups._names(list(g.producers))} | {g.size} | {g.pruned} |" for g in self.groups]
        if self.reconstruction:
            rows += ["", "| refit readers | channels kept | samples | error pruned | error refit |",
                     "|---|---|---|---|---|"]
            rows += [f"| {_groups._names(list(r.readers))} | {r.kept}/{r.channels} | {r.samples:,} | "
                     f"{r.error_before:.2%} | {r.error_after:.2%} |" for r in self.reconstruction]
        return "\n".join(rows)


@keyword_only
def prune(model, sparsity, granularity="weight", *, scope=None, layers=None, criterion="magnitude", data=None,
          merge=False, round_to=None, ignored_layers=None, reconstruct=False):
    """Prunes the least important weights, units or channels of a copy of `model`, one shot.

    `granularity="weight"` removes the smallest |w|: by default (`scope="unit"`)
    those of each output unit's incoming weights, the criterion `TargetedDropout`
    targets, so each pruned layer reaches exactly `round(sparsity * kernel.size)`
    zeros (`floor(sparsity * fan_in)` per unit, the remainder to the units whose
    next-smallest weight is smallest); `scope="layer"` ranks each layer's weights
    together (Zhu & Gupta's and tfmot's criterion), `"global"` all layers'.

    `granularity="unit"` removes `round(sparsity * units)` whole units (filters)
    per layer, chosen by `criterion`:

    - `"magnitude"`: the smallest L2 norm of the unit's incoming weights (data-free);
    - `"onorm"`: the smallest mean |activation| over `data` (He, Fan, Tian, Huang,
      "Reshaping deep neural network for fast decoding by node-pruning", 2014);
    - `"taylor"`: the smallest mean |activation x d loss / d activation| over
      `data=(x, y)` (Molchanov, Tyree, Karras, Aila, Kautz, "Pruning Convolutional
      Neural Networks for Resource Efficient Inference", 2017); the model must be
      compiled with its loss;
    - `"similarity"`: data-free: repeatedly the unit whose incoming weights (and
      bias) are closest to another unit's, weighted by its outgoing weights'
      norm; the other unit's outgoing weights absorb its own (Srinivas & Babu,
      "Data-free parameter pruning for deep neural networks", 2015).

    `merge=True` then refits the layer reading the pruned units on `data` by
    regularized least squares: its new weights reproduce, from the units kept,
    the inputs it had in the unpruned network, so its pre-activations match it
    without fine-tuning (the reweighting of Mariet & Sra, "Diversity Networks",
    2016). Layers are pruned in order, each refit on the already pruned layers
    before it. It is the same fit as `reconstruct=True` by channel.
    Similarity and merging change the reading layer, so they need a layer that
    `shrink` could shrink (one reader, through channel-wise layers).

    `granularity="channel"` removes whole channel groups (`channel_groups`):
    the channels that residual adds, depthwise convolutions, concatenations and
    squeeze-and-excitation gates couple are ranked together, by their importance
    summed over every member (`"magnitude"`: the L2 norm of all the filters,
    kernel rows and normalization scales that carry the channel; `"bn_scale"`:
    the |gamma| of its `BatchNormalization` layers, Liu et al., "Learning
    Efficient Convolutional Networks through Network Slimming", 2017, magnitude
    for a group without one; `"onorm"`/`"taylor"` as above, over every tensor
    that a `Dense` or convolution reads the channel from; `"obs"`: layer-wise
    Optimal Brain Surgeon, Dong, Chen, Pan, "Learning to Prune Deep Neural
    Networks via Layer-wise Optimal Brain Surgeon", 2017: on `data`, one at a
    time the channel whose loss the other channels, refit by least squares,
    rebuild best, the choice for `reconstruct=True`; on MNIST it kept a small
    ResNet at 90% with half its channels removed and refit, magnitude 79%;
    `"dpp"`: the most diverse channels, Mariet & Sra, "Diversity Networks",
    2016: on `data`, the channels whose centered activations span the most
    volume, chosen greedily, so a weak or redundant channel goes first).
    `scope=None` or
    `"layer"` prunes `round(sparsity * size)` channels of every group,
    `"global"` ranks all groups' channels together (each divided by its group's
    mean). The filters that compute a pruned channel and every kernel row that
    reads it are masked, so nothing downstream sees it: `shrink` then removes it
    from every member with outputs unchanged, also before a `padding="same"`
    convolution and through residual stages.

    `reconstruct=True` then refits, on `data`, every `Dense` and convolution
    that reads a pruned tensor or one computed after it, in the order the
    network computes them: the linear map (plus a constant) from the kept
    channels to all channels of the unpruned network's tensor, fitted by least
    squares pulled towards changing nothing, is folded into the reader's kernel
    and bias (He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep Neural
    Networks", 2017; Luo, Wu, Lin, "ThiNet", 2017). The network then computes
    nearly what it computed before pruning, with its `BatchNormalization`
    statistics still valid: a MobileNetV2 on MNIST with 30% of its channels
    removed keeps 79% (from 88%; 9% without), a small ResNet 95% (from 97%).
    Separable and grouped convolutions, attention, recurrent and embedding
    layers are not refit (a map that mixes channels cannot pass their depthwise
    step or groups); what reads after them is. `report.reconstruction` says, per
    tensor, how far the readers' inputs were from the unpruned ones before and
    after. Otherwise fine-tune networks with `BatchNormalization` after pruning,
    or at least re-estimate its statistics (`recalibrate_batch_norm`).

    Biases are not pruned, except those of pruned units. Every `Dense` and
    convolution pruned (also inside a `TargetedDropout`,
    which is left out) gets a `PruningMask`, so the returned model can be
    fine-tuned with its zeros held at zero; `strip` then leaves plain layers and
    `shrink` removes pruned units. `model` itself is never changed.

    Args:
        model: a functional or Sequential Keras model.
        sparsity: the fraction to prune, in [0, 1] (in [0, 1) by channel). By
            channel, also a dict by what a group's indices are,
            `{"heads": 0.5, "channels": 0.25}`: the attention heads' groups
            lose half their heads, the others a quarter of their channels (a
            kind left out loses none).
        granularity: `"weight"`, `"unit"` or `"channel"`.
        scope: with `"weight"`, where weights are ranked: `None` or `"unit"`,
            `"layer"`, or `"global"` (every layer reaches `sparsity` but the
            last, where the model as a whole does); with `"channel"`, `None`
            or `"layer"` (each group) or `"global"`.
        layers: names of the layers to prune (default: every supported layer;
            for `"unit"`, every one but those computing a model output, whose
            units are the classes; for `"channel"`, the groups these layers
            compute).
        criterion: how units are ranked (above); weights are ranked by |w|.
        data: examples `x` (one input array), `(x, y)`, or a `tf.data.Dataset`
            or generator of such batches (read up to 4,096 examples); needed by
            `"onorm"`, `"taylor"` (with `y`), `"obs"`, `"dpp"`, `merge=True` and
            `reconstruct=True` (a thousand examples or more: fewer than a
            reader's unknowns warn with the counts). NaN or infinite examples
            are refused.
        merge: whether to refit the readers of pruned units on `data`.
        round_to: with `"channel"`, each group keeps a multiple of this many
            channels (rounded up), as accelerators like; `None` for any count.
        ignored_layers: names of layers whose weights must stay unpruned (with
            `"channel"`, every group they touch is kept whole).
        reconstruct: with `"channel"`, whether to refit every layer reading a
            pruned tensor, or one after it, on `data`.

    Returns:
        A `PruningReport` with `.model`, `.layers` and, by channel, `.groups`
        (and `.reconstruction` with `reconstruct=True`).

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
    ...                           keras.layers.Dense(10, activation="softmax")])
    >>> report = prune(model, 0.9)
    >>> [(layer.weights, layer.zeros) for layer in report.layers]
    [(2048, 1843), (320, 288)]
    >>> x = np.random.default_rng(0).normal(size=(256, 64)).astype("float32")
    >>> merged = prune(model, 0.5, granularity="unit", criterion="onorm", data=x, merge=True)
    >>> [layer.pruned_units for layer in merged.layers]
    [16]
    >>> export_model = strip(report.model)
    >>> inputs = keras.Input((16, 16, 3))
    >>> x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    >>> x = keras.layers.Add()([x, keras.layers.Conv2D(8, 3, padding="same")(x)])
    >>> outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    >>> by_channel = prune(keras.Model(inputs, outputs), 0.5, granularity="channel")
    >>> [(group.size, group.pruned) for group in by_channel.groups]
    [(8, 4)]
    """
    check_model(model, "prune", graph=True)
    scope = _check_arguments(sparsity, granularity, scope, criterion, merge, reconstruct, round_to)
    if isinstance(model, keras.Model) and non_finite_weights(model):
        raise ValueError(
            f"prune ranks weights by their values, and some of {model.name!r}'s are not numbers."
            f"{describe_non_finite_weights(model)} Prune a model that trained to finite weights."
        )
    refit = "merge=True" if merge else "reconstruct=True" if reconstruct else None
    x, y = _criteria.examples(model, data, criterion, refit)
    if granularity == "channel":
        return _prune_channels(model, sparsity, scope, criterion, data=(x, y), layers=layers,
                               ignored_layers=ignored_layers, round_to=round_to, reconstruct=reconstruct)
    targets = _prunable(model, layers, skip_outputs=granularity == "unit" and layers is None)
    targets = _without_ignored(model, targets, ignored_layers)
    copy = _masked_copy(model, targets, granularity, keep_dropout=False)
    wrappers = {
        layer.target.name: layer
        for layer in _keras_private.sublayers(copy)
        if isinstance(layer, PruningMask) and layer.target.name in targets
    }
    if granularity == "weight":
        for name, keep in weight_keep(wrappers, sparsity, scope).items():
            wrappers[name].set_mask(keep)
    else:
        _prune_units(model, copy, wrappers, sparsity, criterion, data=(x, y), merge=merge)
    return PruningReport(model=copy, layers=[_layer_report(layer) for layer in wrappers.values()])


def prunable(model, layers=None, granularity="weight"):
    """A copy of `model` ready for pruning during training: masks of ones.

    Wraps every `Dense` and convolution (`Conv1D`/`2D`/`3D`, depthwise,
    transposed, separable; also one inside a `TargetedDropout`, which keeps
    dropping) of a functional,
    Sequential or nested model in a `PruningMask` whose masks keep everything;
    `keras_compact.callbacks.GradualPruning` then raises the sparsity during
    `fit`. Layers already wrapped keep their masks. `model` is not changed.
    Compile the returned model (it has fresh layers holding `model`'s weights).

    With `granularity="channel"` the layers wrapped are the members of every
    prunable channel group (`channel_groups`), and `GradualPruning` removes
    whole channels from them, ranked as `prune(..., granularity="channel")`
    ranks them; `shrink` then removes them from the model.

    Args:
        model: a functional or Sequential Keras model.
        layers: names of the layers to wrap (default: every supported layer;
            for `"unit"`, every one but those computing a model output; for
            `"channel"`, the members of every prunable group, and `layers` is
            not taken).
        granularity: `"weight"`, `"unit"` or `"channel"`: what `GradualPruning` removes.

    Returns:
        The new model.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> ready = prunable(model)
    >>> [type(layer).__name__ for layer in ready.layers]
    ['PruningMask', 'PruningMask']
    """
    check_model(model, "prunable", graph=True)
    raise_errors([one_of("granularity", granularity, GRANULARITIES)])
    if granularity == "channel":
        return _masked_copy(model, _channel_targets(model, layers), granularity, keep_dropout=True)
    targets = _prunable(model, layers, skip_outputs=granularity == "unit" and layers is None)
    return _masked_copy(model, targets, granularity, keep_dropout=True)


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
    check_model(model, "strip", graph=True)
    return clone_with(model, stripped_replacement)


def stripped_replacement(layer):
    """`clone_with`'s choice for `strip` (and the export's lowered copy): wrappers out, the rest shared."""
    if isinstance(layer, PruningMask):
        target = layer.target
        return fresh_copy(target), _masked_weights(layer, target)
    if isinstance(layer, TargetedDropout):
        return layer.layer, None
    return None


def weight_keep(wrappers, sparsity, scope):
    """`{name: kernel-shaped bool}`: the weights magnitude pruning keeps, in exact counts.

    `wrappers` maps names to `PruningMask` layers; their masked kernels are ranked
    (so weights pruned before stay pruned) within each unit (`scope="unit"`),
    each layer (`"layer"`) or all layers together (`"global"`)."""
    kernels = {name: masked_kernel(layer) for name, layer in wrappers.items()}
    if scope == "unit":
        return {name: _layer_keep(kernel, sparsity, wrappers[name].target) for name, kernel in kernels.items()}
    pools = [list(kernels)] if scope == "global" else [[name] for name in kernels]
    result = {}
    for names in pools:
        magnitudes = np.concatenate([np.abs(kernels[name]).ravel() for name in names])
        keep = np.ones(magnitudes.size, bool)
        count = int(round(sparsity * magnitudes.size))
        if count:  # the `count` smallest, in linear time (GradualPruning does this during training)
            keep[np.argpartition(magnitudes, count - 1)[:count]] = False
        offset = 0
        for name in names:
            result[name] = keep[offset : offset + kernels[name].size].reshape(kernels[name].shape)
            offset += kernels[name].size
    return result


def unit_keep(layer, pruned):
    """The kernel-shaped bool keep-mask of `layer` (a `PruningMask`) without the `pruned` units."""
    columns = _graph.columns(np.ones(layer.mask.shape, bool), layer.target)
    columns[:, np.asarray(pruned, bool)] = False
    return _graph.to_kernel(columns, layer.target)


def _check_arguments(sparsity, granularity, scope, criterion, merge, reconstruct, round_to):
    raise_errors([one_of("granularity", granularity, GRANULARITIES)])
    if isinstance(sparsity, dict):
        if granularity != "channel":
            raise ValueError("sparsity as a dict ({'heads': ..., 'channels': ...}) is for granularity='channel'. "
                             f"Received: sparsity={sparsity!r} with granularity={granularity!r}")
        unknown = sorted(set(sparsity) - set(_channel.KINDS), key=str)
        if unknown or not sparsity:
            raise ValueError(f"sparsity as a dict maps {_channel.KINDS} to fractions. Received: sparsity={sparsity!r}")
        for kind, value in sparsity.items():
            check_rate(f"sparsity[{kind!r}]", value)
    else:
        check_rate("sparsity", sparsity)
    raise_errors(bool_errors(merge=merge, reconstruct=reconstruct))
    if granularity == "channel":
        return _check_channel_arguments(sparsity, scope, criterion, merge, round_to)
    if reconstruct:
        raise ValueError(
            "reconstruct=True refits the layers reading pruned channels; use it with granularity='channel' "
            f"(for units, merge=True is the same refit). Received: granularity={granularity!r}"
        )
    if round_to is not None:
        raise ValueError(f"round_to rounds the channels a group keeps; use it with granularity='channel'. "
                         f"Received: round_to={round_to!r} with granularity={granularity!r}")
    if criterion == "bn_scale":
        raise ValueError("criterion='bn_scale' ranks channel groups by their BatchNormalization scales; "
                         "use it with granularity='channel'.")
    scope = "unit" if scope is None else scope
    if scope not in SCOPES:
        raise ValueError(f"scope must be None or one of {SCOPES}. Received: scope={scope!r}")
    if scope != "unit" and granularity != "weight":
        raise ValueError(
            f"scope={scope!r} chooses where weights are ranked; with granularity='unit' leave scope out "
            "(each layer loses the same fraction of units)."
        )
    raise_errors([one_of("criterion", criterion, CRITERIA)])
    if granularity == "weight" and (criterion != "magnitude" or merge):
        chosen = f"criterion={criterion!r}" if criterion != "magnitude" else "merge=True"
        raise ValueError(f"{chosen} chooses whole units; use it with granularity='unit'.")
    return scope


def _check_channel_arguments(sparsity, scope, criterion, merge, round_to):
    for kind, value in (sparsity.items() if isinstance(sparsity, dict) else [(None, sparsity)]):
        if value >= 1:
            name, what = ("sparsity", "a channel") if kind is None else (f"sparsity[{kind!r}]", f"one of its {kind}")
            raise ValueError(
                f"Expected a float value in [0, 1) for granularity='channel': every group keeps {what}. "
                f"Received: {name}={value!r}"
            )
    scope = "layer" if scope is None else scope
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be None, 'layer' or 'global' with granularity='channel'. Received: scope={scope!r}")
    if criterion not in _channel.CRITERIA:
        raise ValueError(
            f"criterion must be one of {_channel.CRITERIA} with granularity='channel'. Received: criterion={criterion!r}"
        )
    if merge is not False:
        raise ValueError(
            f"merge=True refits the one layer reading pruned units; with granularity='channel' every reader of "
            f"a pruned group is refit by reconstruct=True. Received: merge={merge!r}"
        )
    _channel.check_round_to(round_to)
    return scope


def _prune_channels(model, sparsity, scope, criterion, *, data, layers, ignored_layers, round_to, reconstruct):
    """Channel pruning: groups scored on `data` (`(x, y)`), the lowest `sparsity` of each masked; with
    `reconstruct`, every layer reading them refit on `data`."""
    x, y = data
    graph = _groups.analyse(model, ignored_layers)
    groups = _groups.ChannelGroups(graph)
    if not groups.prunable:
        raise ValueError(
            f"The model {model.name!r} has no prunable channel group; nothing to prune by channel.\n{groups}"
        )
    missing = [kind for kind, value in (sparsity.items() if isinstance(sparsity, dict) else [])
               if value > 0 and not any(group.of == kind for group in groups.prunable)]
    if missing:
        raise ValueError(
            f"sparsity asks for {missing[0]} of {model.name!r} to be pruned, and it has no prunable group of "
            f"{missing[0]}. Received: sparsity={sparsity!r}; its groups:\n{groups}"
        )
    only = None
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
            raise ValueError(f"layers must be a list of layer names. Received: layers={layers!r}")
        # A layer whose channels a concatenation splits computes several groups: all of them.
        chosen = {name: [g.root for g in groups.prunable if name in g.producers] for name in layers}
        wrong = sorted(name for name, roots in chosen.items() if not roots)
        if wrong:
            raise ValueError(
                f"layers {wrong} compute no prunable channel group of {model.name!r}; "
                f"prunable: {sorted({n for g in groups.prunable for n in g.producers})}."
            )
        only = {root for roots in chosen.values() for root in roots}
    importance = _channel.scores(graph, criterion, model, x, y)
    keep = _channel.choose(graph, importance, sparsity, scope, round_to, only)
    keeps = _channel.kernel_keeps(graph, keep)
    copy = _masked_copy(model, set(keeps), "channel", keep_dropout=False)
    wrappers = {
        layer.target.name: layer
        for layer in _keras_private.sublayers(copy)
        if isinstance(layer, PruningMask) and layer.target.name in keeps
    }
    for name, kept in keeps.items():
        wrappers[name].set_mask(kept)
    refits = _reconstruct.reconstruct(model, copy, graph, keep, x) if reconstruct else None
    return PruningReport(model=copy, layers=[_layer_report(layer) for layer in wrappers.values()],
                         groups=_channel.report(graph, keep), reconstruction=refits)


def _without_ignored(model, targets, ignored_layers):
    if ignored_layers is None:
        return targets
    names = {layer.name for layer in _keras_private.sublayers(model, include_self=False)} | set(targets)
    ignored = _groups._check_ignored(ignored_layers, names, model)
    kept = {name: layer for name, layer in targets.items() if name not in ignored}
    if not kept:
        raise ValueError(f"ignored_layers={sorted(ignored)} leaves no layer of {model.name!r} to prune.")
    return kept


def _masked_weights(layer, wrapped):
    """`wrapped`'s weights as NumPy, with `layer`'s masks applied when it is a `PruningMask`."""
    masked = {id(v): value for v, value in layer.masked_values()} if isinstance(layer, PruningMask) else {}
    return [keras.ops.convert_to_numpy(masked.get(id(v), v.value)) for v in wrapped.weights]


def _masked_copy(model, targets, granularity, keep_dropout):
    """A copy of `model` with fresh layers, each target in a `PruningMask` of all-ones masks."""

    def replace(layer):
        inner = _graph.unwrapped(layer)
        if isinstance(layer, PruningMask) and (keep_dropout or inner.name not in targets):
            return fresh_copy(layer), layer.get_weights()
        maskable = isinstance(inner, SUPPORTED_LAYERS) or (granularity == "channel" and masked_by_channel(inner))
        if inner.name in targets and maskable:
            wrapped = layer.layer if isinstance(layer, PruningMask) else layer
            if not keep_dropout:
                wrapped = inner
            values = _masked_weights(layer, wrapped)
            mask = PruningMask(fresh_copy(wrapped), granularity=granularity, name=f"{inner.name}_pruned")
            return mask, lambda built: built.layer.set_weights(values)
        return _graph.replacement(layer, {}, {})

    return clone_with(model, replace)


def _prunable(model, names, skip_outputs):
    """Prunable layers (nested models included) by name; with `skip_outputs`, not
    those computing a model output (removing units there would remove classes)."""
    outputs = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    at_output = {_graph.unwrapped(layer).name for layer in model.layers if _output_of(layer) in outputs}
    found = {}
    for layer in _keras_private.sublayers(model, include_self=False):
        inner = _graph.unwrapped(layer)
        if isinstance(inner, SUPPORTED_LAYERS) and inner.built and not (skip_outputs and inner.name in at_output):
            found.setdefault(inner.name, inner)
    if names is not None:
        if isinstance(names, str) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"layers must be a list of layer names. Received: layers={names!r}")
        unknown = sorted(set(names) - set(found))
        if unknown:
            by_channel = sorted(layer.name for layer in _keras_private.sublayers(model, include_self=False)
                                if layer.name in unknown and masked_by_channel(_graph.unwrapped(layer)))
            hint = (f" {by_channel} are pruned by channel only (heads, recurrent units, embedding dimensions, a "
                    "layer registered with keras_compact.register_layer): granularity='channel'.") if by_channel else ""
            raise ValueError(
                f"layers {unknown} are not prunable layers of {model.name!r}; prunable: {sorted(found)}.{hint}"
            )
        found = {name: found[name] for name in names}
    if not found:
        supported = ", ".join(cls.__name__ for cls in SUPPORTED_LAYERS)
        by_channel = sorted(layer.name for layer in _keras_private.sublayers(model, include_self=False)
                            if masked_by_channel(_graph.unwrapped(layer)))
        hint = (f" Its layers {by_channel} are pruned by channel only: granularity='channel'." if by_channel else "")
        raise ValueError(
            f"The model {model.name!r} has no prunable layer (built {supported}); nothing to prune.{hint}"
        )
    return found


def _output_of(layer):
    try:
        return id(layer.output)
    except (AttributeError, ValueError):  # called more than once, or never
        return None


def _layer_keep(kernel, sparsity, layer):
    columns = _graph.columns(kernel, layer)
    fan_in, units = columns.shape
    # floor(sparsity * fan_in) per unit, then the remainder of the layer's total
    # to the units whose next-smallest weight is smallest.
    per_column = int(np.floor(sparsity * fan_in))
    remainder = int(round(sparsity * fan_in * units)) - per_column * units
    keep = ~targeting.weight_candidates(columns, per_column)
    if remainder > 0:
        next_smallest = np.where(keep, np.abs(columns), np.inf).min(axis=0)
        extra = np.argsort(next_smallest, kind="stable")[:remainder]
        with_one_more = targeting.weight_candidates(columns, per_column + 1)
        keep[:, extra] = ~with_one_more[:, extra]
    return _graph.to_kernel(keep, layer)


def _prune_units(model, copy, wrappers, sparsity, criterion, *, data, merge):
    """Unit pruning: each mask of `copy` loses the `sparsity` of its units `criterion` ranks lowest
    (scored on `data`, `(x, y)`); with `merge`, their work is folded into the units kept."""
    x, y = data
    scores = {}
    if criterion != "similarity":
        scores = _criteria.unit_scores(criterion, model, copy, wrappers, x, y)
    chains = _criteria.chains_for(copy, wrappers, criterion, merge)
    originals = _graph.chains(model) if merge else {}
    for name, layer in wrappers.items():
        units = _graph.columns(masked_kernel(layer), layer.target).shape[1]
        count = int(round(sparsity * units))
        if criterion == "similarity":
            pruned = _criteria.similar_units(layer, chains[name], count)
        else:
            pruned = targeting.unit_candidates(scores[name], count)
        if merge:
            _criteria.merge(model, originals[name], copy, chains[name], pruned, x)
        layer.set_mask(unit_keep(layer, pruned))


def _layer_report(layer):
    if layer.builds_from_arguments():  # every weight masked; its units are its channel groups'
        masks = [keras.ops.convert_to_numpy(mask) for mask in layer.masks]
        size = sum(mask.size for mask in masks)
        return LayerPruning(name=layer.target.name, weights=size, zeros=size - sum(map(np.count_nonzero, masks)),
                            units=0, pruned_units=0)
    mask = keras.ops.convert_to_numpy(layer.mask)
    columns = _graph.columns(mask, layer.target)
    return LayerPruning(
        name=layer.target.name,
        weights=int(mask.size),
        zeros=int(mask.size - np.count_nonzero(mask)),
        units=columns.shape[1],
        pruned_units=int(np.sum(~columns.any(axis=0))),
    )


def _channel_targets(model, layers, targeted=False):
    """The members of every prunable channel group: the layers `prunable` and (`targeted`) `targeted` wrap
    by channel."""
    if layers is not None:
        raise ValueError(
            "With granularity='channel' every member of every prunable channel group is wrapped; leave "
            f"layers out (keep groups whole with prune's ignored_layers). Received: layers={layers!r}"
        )
    graph = _groups.analyse(model)
    members = _channel.members(graph, targeted)
    if not members:
        raise ValueError(f"The model {model.name!r} has no prunable channel group.\n{_groups.ChannelGroups(graph)}")
    return members


def targeted(model, target_rate=0.5, drop_rate=0.5, granularity="weight", layers=None, **kwargs):
    """A copy of `model` with its layers in `TargetedDropout`, ready to train.

    Wraps every `Dense` and convolution (`Conv1D`/`2D`/`3D`, depthwise,
    transposed, separable) of a functional, Sequential or nested model (a `keras.applications` backbone
    included) in a `keras_compact.layers.TargetedDropout` holding a copy of the
    layer and its weights, as `prunable` wraps them in masks; ramp the rates
    with `keras_compact.callbacks.TargetedDropoutRamp`, then `prune`. `model`
    is not changed.

    The `BatchNormalization` moving statistics of a network trained this way
    are gathered on dropped weights and used on whole ones: before evaluating
    or exporting, re-estimate them on training data with
    `recalibrate_batch_norm` (measured in `benchmarks/structured_pruning.py`).

    Args:
        model: a functional or Sequential model.
        target_rate, drop_rate: as `TargetedDropout`'s, in [0, 1].
        granularity: `"weight"`, `"unit"` (whole units, not those computing
            a model output unless named in `layers`) or `"channel"`: whole
            channel groups, dropped in every layer that carries them (the
            members of `channel_groups(model)`'s prunable groups); train with
            the `keras_compact.callbacks.TargetedChannels` callback, which
            sets up the draws each layer makes in the training step, and
            prune with `prune(..., granularity="channel")`.
        layers: names of the layers to wrap (default: all of them; not taken
            by channel, where every member of every prunable group is wrapped).
        **kwargs: other `TargetedDropout` arguments (`seed`; by channel the
            callback's).

    Returns:
        The new model; compile it before `fit`.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> ready = targeted(model, target_rate=0.5, drop_rate=0.5)
    >>> [type(layer).__name__ for layer in ready.layers]
    ['TargetedDropout', 'TargetedDropout']

    By channel, on a network with a residual add:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    >>> y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="inner")(x)
    >>> x = keras.layers.Add()([x, keras.layers.Conv2D(8, 1, name="back")(y)])
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> net = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    >>> ready = targeted(net, 0.5, 0.5, granularity="channel")
    >>> ready.compile("adam", "mse")
    >>> ready.fit(np.ones((4, 8, 8, 3)), np.zeros((4, 2)), verbose=0,
    ...           callbacks=[keras_compact.callbacks.TargetedChannels(seed=0)])  # doctest: +ELLIPSIS
    <keras.src.callbacks.history.History object at ...>
    """
    check_model(model, "targeted", graph=True)
    TargetedDropout(keras.layers.Dense(1), target_rate, drop_rate, granularity, **kwargs)  # checks the arguments
    if granularity == "channel":
        targets = _channel_targets(model, layers, targeted=True)
    else:
        targets = _prunable(model, layers, skip_outputs=granularity == "unit" and layers is None)
    wrapped = [layer.name for layer in _keras_private.sublayers(model, include_self=False)
               if isinstance(layer, (PruningMask, TargetedDropout)) and _graph.unwrapped(layer).name in targets]
    if wrapped:
        raise ValueError(
            f"targeted wraps plain layers; {wrapped} are already wrapped. strip(model) first, or leave them out "
            "with layers=[...]."
        )

    def replace(layer):
        if isinstance(layer, keras.layers.Layer) and layer.name in targets and isinstance(layer, SUPPORTED_LAYERS):
            values = layer.get_weights()
            wrapper = TargetedDropout(fresh_copy(layer), target_rate, drop_rate, granularity,
                                      name=f"{layer.name}_targeted", **kwargs)
            return wrapper, lambda built: built.layer.set_weights(values)
        return _graph.replacement(layer, {}, {})

    return clone_with(model, replace)
