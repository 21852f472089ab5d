"""Channel pruning of whole groups: how channels are ranked, chosen and masked.

Importance is summed over a group's members (DepGraph's group importance): a
channel of a residual stage is as important as all the filters, rows and scales
that carry it together. Every function here reads the user's model or `prune`'s
copy; none changes the user's.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_compact._checks import is_int
from keras_compact._cloning import inlined
from keras_compact.layers.targeted_dropout import TRANSPOSED_LAYERS, kernel_of
from keras_compact.pruning import _criteria, _dpp, _groups, _obs

CRITERIA = ("magnitude", "bn_scale", "onorm", "taylor", "obs", "dpp")
KINDS = ("channels", "heads")  # what one index of a group is (`ChannelGroup.of`)


@dataclasses.dataclass
class GroupPruning:
    """What channel pruning did to one group: `pruned` of its `size` channels."""

    producers: tuple
    size: int
    pruned: int


def check_round_to(round_to):
    if round_to is not None and (not is_int(round_to) or round_to < 1):
        raise ValueError(f"round_to must be None or an integer >= 1. Received: round_to={round_to!r}")


def scores(graph, criterion, model, x, y):
    """`{root: float [size]}` for every prunable group; the smallest are pruned."""
    squares = _accumulate(graph, _member_squares)
    result = {root: np.sqrt(value) for root, value in squares.items()}
    if criterion in ("onorm", "taylor"):
        # Heads, and units only their own recurrent layer reads, have no tensor a probe can read: by magnitude.
        return {**result, **_activation_scores(graph, criterion, model, x, y)}
    if criterion == "obs":  # layer-wise Optimal Brain Surgeon; groups it cannot read keep magnitude
        return {**result, **_obs.scores(graph, model, x)}
    if criterion == "dpp":  # the most diverse channels (Mariet & Sra); groups it cannot read keep magnitude
        return {**result, **_dpp.scores(graph, model, x)}
    if criterion == "bn_scale":
        # Network Slimming (Liu et al. 2017): |gamma|; groups without a BatchNormalization keep magnitude.
        result.update(_accumulate(graph, _member_scales))
    return result


def _prunable_roots(graph):
    return {group.root: group.size for group in graph.groups() if group.prunable}


def _accumulate(graph, per_member):
    roots = _prunable_roots(graph)
    totals = {}
    for member in graph.members:
        for layout, values in per_member(member):
            _add(graph, totals, roots, layout, values)
    return totals


def _add(graph, totals, roots, layout, values):
    at_roots, channels = graph.addresses(layout)
    for root in np.unique(at_roots):
        if root in roots:
            at = at_roots == root
            np.add.at(totals.setdefault(root, np.zeros(roots[root])), channels[at], values[at])


def _member_squares(member):
    """`(layout, squared norm of each index's weights)` for the member's sides."""
    if member.matrices:
        values = _values(member)
        return [found for matrix in member.matrices for found in matrix.squares(values[matrix.index])]
    if member.kind not in _groups.KERNELS + ("depthwise", "batchnorm"):
        return []
    values = _values(member)
    if member.kind == "batchnorm":
        return [(member.inputs, values[0] ** 2)] if member.layer.scale else []
    if member.kind == "depthwise":
        return [(member.output, _depthwise_squares(values[0]))]
    kernel = _groups.standard(values[1 if member.kind == "separable" else 0], member.layer).astype(np.float64)
    columns = np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0)
    rows = np.sum(_groups.consumer_rows(kernel) ** 2, axis=1)
    found = [(member.output, columns), (member.rows, rows)]
    if member.kind == "separable":  # the depthwise filters a removed input channel takes with it
        found.append((member.rows, _depthwise_squares(values[0])))
    return found


def _depthwise_squares(kernel):
    """The squared norm of each output channel's filter of a depthwise kernel `[..., in, multiplier]`."""
    kernel = kernel.astype(np.float64)
    return np.sum(kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]) ** 2, axis=0)


def _values(member):
    """The member's weights as NumPy, with a `PruningMask`'s masks applied (what the forward pass uses)."""
    masked = {}
    if hasattr(member.wrapper, "masked_values"):
        masked = {id(v): value for v, value in member.wrapper.masked_values()}
    return [keras.ops.convert_to_numpy(masked.get(id(v), v.value)) for v in member.layer.weights]


def _member_scales(member):
    if member.kind == "batchnorm" and member.layer.scale:
        return [(member.inputs, np.abs(keras.ops.convert_to_numpy(member.layer.gamma)).astype(np.float64))]
    return []


def _activation_scores(graph, criterion, model, x, y):
    """Mean |value| (onorm) or |value x gradient| (taylor) of every tensor a consumer reads, per channel."""
    roots = _prunable_roots(graph)
    read = {}
    for member in graph.members:
        if member.kind in _groups.KERNELS and any(r in roots for r in graph.addresses(member.inputs)[0]):
            read.setdefault(id(member.input_tensor), (member.input_tensor, member.inputs))
    if not read:
        return {}
    tensors, layouts = zip(*read.values())
    flat, inside, _ = inlined(graph.model)  # the tensors of a nested backbone, in one graph a probe reads
    probe = keras.Model(flat.inputs[0], [inside[id(tensor)] for tensor in tensors] + [flat.outputs[0]])
    if criterion == "onorm":
        totals = [0.0] * len(tensors)
        for start in range(0, len(x), _criteria._BATCH):
            values = probe(x[start : start + _criteria._BATCH], training=False)[:-1]
            for index, value in enumerate(values):
                totals[index] = totals[index] + _criteria._per_unit_sum(np.abs(keras.ops.convert_to_numpy(value)))
    else:
        totals = _criteria._taylor_totals(model, probe, x, y, len(tensors))
    result = {}
    for layout, total in zip(layouts, totals):
        _add(graph, result, roots, layout, np.asarray(total, np.float64) / len(x))
    return result


def choose(graph, importance, sparsity, scope, round_to, only=None):
    """`{root: bool [size]}`: the channels kept, `round(sparsity * size)` pruned per
    group (`scope="layer"`) or over all groups ranked together (`"global"`, each
    score divided by its group's mean), at least one kept; with `round_to`, the
    kept count rounded up to a multiple of it."""
    roots = {root: size for root, size in _prunable_roots(graph).items() if only is None or root in only}
    keep = {root: np.ones(size, bool) for root, size in roots.items()}
    if isinstance(sparsity, dict):  # by kind: each kind's groups on their own
        for kind, value in sparsity.items():
            chosen = {root for root in roots if graph.kinds[root] == kind}
            if chosen:
                keep.update(choose(graph, importance, value, scope, round_to, chosen))
        return keep
    if scope == "global":
        normalised = {root: importance[root] / _finite_mean(importance[root]) for root in roots}
        order = sorted(((value, root, channel) for root, values in normalised.items()
                        for channel, value in enumerate(values)), key=lambda item: item[0])
        budget = int(round(sparsity * sum(roots.values())))
        for _, root, channel in order:
            if budget == 0:
                break
            if keep[root].sum() > 1:
                keep[root][channel] = False
                budget -= 1
    else:
        for root, size in roots.items():
            count = min(int(round(sparsity * size)), size - 1)
            if count:
                keep[root][np.argsort(importance[root], kind="stable")[:count]] = False
    if round_to:
        for root, size in roots.items():
            wanted = min(size, max(round_to, math.ceil(keep[root].sum() / round_to) * round_to))
            back = np.argsort(-importance[root], kind="stable")
            keep[root][:] = False
            keep[root][back[:wanted]] = True
    return keep


def _finite_mean(values):
    finite = values[np.isfinite(values)]
    return max(float(np.mean(finite)), 1e-30) if finite.size else 1.0


def kernel_keeps(graph, keep, every=False):
    """`{layer name: kernel-shaped bool}` for every Dense/convolution member that loses
    weights (`every`: for every member, also those that lose none)."""
    result = {}
    for member in graph.members:
        if member.matrices:
            masks = _matrix_masks(graph, member, keep)
            if every or not all(mask.all() for mask in masks):
                result[member.layer.name] = masks
            continue
        if member.kind not in _groups.KERNELS + ("depthwise",):
            continue
        rows = graph.kept(member.rows, keep)
        shape = tuple(kernel_of(member.layer).shape)
        if member.kind == "depthwise":
            mask = np.broadcast_to(rows[:, None], shape)
        else:  # built as [..., in, out], then in the kernel's own order
            mask = rows[:, None] & graph.kept(member.output, keep)[None, :]
            transposed = isinstance(member.layer, TRANSPOSED_LAYERS)
            mask = _groups.standard(np.broadcast_to(mask, shape[:-2] + shape[-2:][::-1] if transposed else shape),
                                    member.layer)
        if every or not mask.all():
            result[member.layer.name] = np.array(mask)
    return result


def _matrix_masks(graph, member, keep):
    """A bool mask for each of the member's `layer.weights`: the kept rows and columns of each `Matrix`."""
    masks = [np.ones(tuple(variable.shape), bool) for variable in member.layer.weights]
    for matrix in member.matrices:
        kept = [None if layout is None else graph.kept(layout, keep) for layout in (matrix.rows, matrix.columns)]
        masks[matrix.index] = masks[matrix.index] & matrix.mask(masks[matrix.index].shape, *kept)
    return masks


def members(graph, targeted=False):
    """Names of the members of every prunable group whose weights channel masks wrap: Dense, convolutions
    and (not for `targeted`, whose `TargetedDropout` drops kernels only) attention, recurrent and embedding
    layers."""
    roots = _prunable_roots(graph)
    return {member.layer.name for member in graph.members
            if (member.kind in _groups.KERNELS + ("depthwise",) or (member.matrices and not targeted))
            and any(root in roots for layout in member.layouts() for root in graph.addresses(layout)[0])}


def report(graph, keep):
    """A `GroupPruning` per prunable group."""
    return [GroupPruning(group.producers, group.size, int(np.sum(~keep[group.root])))
            for group in graph.groups() if group.root in keep]
