"""Least-squares reconstruction: the layers that read pruned channels or units, refit on data.

After pruning, a layer that reads a tensor sees only its kept channels, and
those carry the errors of the layers pruned before it. Reconstruction fits, on
calibration examples, the linear map (plus a constant) from the kept channels of
the pruned network's tensor to every channel of the unpruned network's same
tensor, and folds it into the reading layer's kernel and bias. For a `Dense`
layer this is exactly the least-squares fit of its unpruned pre-activations
(He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep Neural Networks",
2017; Luo, Wu, Lin, "ThiNet", 2017; the reweighting of Mariet & Sra,
"Diversity Networks", 2016); a convolution's channel map is folded into every
tap of its kernel. Layers are refit in the order the network computes them,
each on the already refit layers before it.

The fit is regularized towards the map that changes nothing (each kept channel
to itself), so a tensor seen on few examples stays close to plain pruning.
Memory stays bounded: only the Gram matrices `[kept + 1, kept + 1]` and
`[kept + 1, channels]` are kept, accumulated batch by batch, at most
`POSITIONS` positions of each example (chosen at random, the same for both
networks).
"""

import dataclasses
import warnings

import keras
import numpy as np

from keras_compact._cloning import inlined
from keras_compact.pruning import _graph, _groups

BATCH = 256
POSITIONS = 64  # sampled positions per example of a convolution's input
WIDEST = 4096  # readers of more input channels (a Dense after a large Flatten) are not refit: a Gram matrix
# of 4,096 float64 channels takes 128 MB
RIDGE = 1e-2  # times the mean diagonal of the Gram matrix: the pull towards changing nothing (measured: 1e-2
# kept a MobileNetV2 on MNIST at 79% one shot with 30% of channels removed, 1e-4 at 75%, 1e-6 at 61%)


class Fit:
    """Accumulates `[samples, channels]` pairs of one tensor, pruned and unpruned, and solves the map.

    `kept` (bool over the channels) says which channels of the pruned tensor the
    reading layer still reads; `bias` whether the map has a constant term.
    """

    def __init__(self, kept, bias):
        self.kept = np.asarray(kept, bool)
        self.bias = bool(bias)
        width = int(self.kept.sum()) + self.bias
        self.gram = np.zeros((width, width))
        self.cross = np.zeros((width, len(self.kept)))
        self.samples = 0

    def add(self, pruned, unpruned):
        """Adds `[samples, channels]` values of the pruned and unpruned tensor (same examples, same positions)."""
        design = pruned[:, self.kept]
        if self.bias:
            design = np.hstack([design, np.ones((len(design), 1))])
        self.gram += design.T @ design
        self.cross += design.T @ unpruned
        self.samples += len(design)

    def residual(self, linear, constant, squares):
        """The summed squared error of the map on the data added, given the unpruned values' `squares`."""
        solution = linear if constant is None else np.vstack([linear, constant[None, :]])
        return max(float(np.sum(solution * (self.gram @ solution)) - 2 * np.sum(solution * self.cross) + squares),
                   0.0)

    @property
    def unknowns(self):
        return int(self.kept.sum()) + self.bias

    def solved(self, what, stacklevel):
        """`solve()`, warning when there are fewer samples than unknowns and naming `what` refits (`"merge=True
        refits 'dense'"`) in both the warning and the error."""
        if self.samples < self.unknowns:
            warnings.warn(f"{what} from {self.unknowns} values on only {self.samples} samples of data: the fit is "
                          "underdetermined and held close to plain pruning. Pass more examples.",
                          stacklevel=stacklevel + 1)
        try:
            return self.solve()
        except ValueError as error:
            raise ValueError(f"{what} cannot be fit: {error}.") from None

    def solve(self):
        """`(map [kept, channels], constant [channels] or None)`: the regularized least-squares solution."""
        if not (np.all(np.isfinite(self.gram)) and np.all(np.isfinite(self.cross))):
            raise ValueError("the model's values on data are NaN or infinite")
        identity = np.zeros_like(self.cross)  # each kept channel to itself: what pruning alone does
        identity[np.arange(int(self.kept.sum())), np.flatnonzero(self.kept)] = 1.0
        strength = RIDGE * max(float(np.mean(np.diag(self.gram))), 1e-12)
        system = self.gram + strength * np.eye(len(self.gram))
        solution = np.linalg.lstsq(system, self.cross + strength * identity, rcond=None)[0]
        count = int(self.kept.sum())
        return solution[:count], (solution[count] if self.bias else None)


def fold(rows, kept, linear, constant):
    """New `[channels, ...]` rows of a reading layer's kernel, and what its bias gains.

    `rows` reads the unpruned tensor; the result reads the pruned one through the
    fitted map (`linear [kept, channels]`, `constant [channels]`): zero rows for
    the channels not kept. The constant adds `constant @ rows`, summed over a
    convolution's taps, to each output.
    """
    flat = rows.reshape(len(rows), -1).astype(np.float64)
    new = np.zeros_like(flat)
    new[kept] = linear @ flat
    outputs = rows.shape[-1]
    gained = np.zeros(outputs) if constant is None else (constant @ flat).reshape(-1, outputs).sum(axis=0)
    return new.reshape(rows.shape), gained


def values(tensor_values, channels, rng=None):
    """`[samples, channels]` float64 of a batch's values: positions are samples, at most `POSITIONS` of each
    example when `rng` is given (the same draw must then be used for the pruned and unpruned values)."""
    array = np.asarray(keras.ops.convert_to_numpy(tensor_values), np.float64)
    array = array.reshape(len(array), -1, channels)
    if rng is not None and array.shape[1] > POSITIONS:
        array = array[:, rng.choice(array.shape[1], POSITIONS, replace=False)]
    return array.reshape(-1, channels)


@dataclasses.dataclass
class Refit:
    """What reconstruction did to the layers reading one tensor."""

    readers: tuple
    channels: int
    kept: int
    samples: int
    error_before: float  # squared error of what the readers read, over the unpruned tensor's squares: pruned
    error_after: float  # the same, through the fitted map


def reconstruct(model, copy, graph, keep, x):
    """Refits, in `copy` (the masked model `prune` made of `model`), every Dense and convolution that reads
    a channel of `graph` (`model`'s `_groups` graph), in the order the network computes them; `keep`
    `{root: bool}` says which channels were kept. Returns a `Refit` per tensor read.

    Separable and grouped convolutions, and attention, recurrent and embedding layers, are not refit
    (a map that mixes channels cannot pass their depthwise step or their groups); what reads after
    them is.
    """
    readers = _readers(graph)
    wide = [member.layer.name for members in readers for member in members
            if len(graph.kept(members[0].rows, keep)) > WIDEST]
    if wide:
        warnings.warn(f"reconstruct=True leaves {wide} as pruned: they read more than {WIDEST:,} channels (a "
                      "Dense after a large Flatten), too many for a least-squares refit.", stacklevel=4)
        readers = [members for members in readers if members[0].layer.name not in wide]
    unpruned, _, _ = inlined(model)
    pruned, _, copies = inlined(copy)
    by_name = {_graph.unwrapped(layer).name: layer for layer in pruned.layers}
    original = {_graph.unwrapped(layer).name: layer for layer in unpruned.layers}
    refits = []
    for members in readers:
        layers = [by_name[member.layer.name] for member in members]
        first = members[0].layer.name
        probes = (keras.Model(pruned.inputs[0], by_name[first].input),
                  keras.Model(unpruned.inputs[0], original[first].input))
        sources = [_graph.unwrapped(original[member.layer.name]) for member in members]
        refit = _refit(members, graph.kept(members[0].rows, keep), probes, list(zip(layers, sources)), x)
        if refit is not None:
            refits.append(refit)
            for layer in layers:
                copies[id(layer)].set_weights(layer.get_weights())
    return refits


def _readers(graph):
    """Lists of the members that read one tensor by their kernel's rows, in the order the network computes."""
    found = {}
    for member in graph.members:
        layer = member.layer
        if member.kind not in ("dense", "conv") or getattr(layer, "groups", 1) != 1 or member.input_tensor is None:
            continue
        found.setdefault(id(member.input_tensor), []).append(member)
    return list(found.values())


def _refit(members, kept, probes, layers, x):
    """Fits the map of one tensor on `x` (`probes`: the pruned and unpruned networks up to it) and writes
    it into the layers that read it (`layers`: `(pruned layer, its unpruned source)` pairs)."""
    names = [member.layer.name for member in members]
    fit = Fit(kept, all(source.use_bias for _, source in layers))
    rng = np.random.default_rng(0)
    pruned_only = total = 0.0
    for start in range(0, len(x), BATCH):
        batch = x[start : start + BATCH]
        state = rng.bit_generator.state
        now = values(probes[0](batch, training=False), len(kept), rng)
        rng.bit_generator.state = state  # the same positions of the unpruned tensor
        target = values(probes[1](batch, training=False), len(kept), rng)
        fit.add(now, target)
        pruned_only += float(np.sum((np.where(kept, now, 0.0) - target) ** 2))
        total += float(np.sum(target**2))
    if kept.all() and pruned_only == 0.0:
        return None  # nothing before it was pruned: it reads what it read
    linear, constant = fit.solved(f"reconstruct=True refits {names}", stacklevel=5)
    for layer, source in layers:
        _write(layer, source, kept, linear, constant)
    return Refit(readers=tuple(names), channels=len(kept), kept=int(kept.sum()), samples=fit.samples,
                 error_before=pruned_only / max(total, 1e-30),
                 error_after=fit.residual(linear, constant, total) / max(total, 1e-30))


def _write(layer, source, kept, linear, constant):
    """`layer` (maybe in a `PruningMask`) reads through the map what `source`, unpruned, read."""
    target = _graph.unwrapped(layer)
    kernel = keras.ops.convert_to_numpy(source.kernel)
    rows = np.moveaxis(_groups.standard(kernel, source), -2, 0)  # [channels, ..., outputs]
    new_rows, gained = fold(rows, kept, linear, constant)
    target.kernel.assign(_groups.standard(np.moveaxis(new_rows, 0, -2), source).astype(kernel.dtype))
    if target.use_bias:
        target.bias.assign((keras.ops.convert_to_numpy(source.bias) + gained).astype(kernel.dtype))
    if hasattr(layer, "masked_values"):  # a PruningMask: its pruned weights stay zero in the layer too
        for variable, value in layer.masked_values():
            variable.assign(value)
