"""Targeted Dropout by channel, drawn inside the training step.

A channel group's drops must be the same in every layer that carries it (the
producers, the readers, the scales of a residual stage), and no layer sees the
whole group. `ChannelDraw` holds what each `TargetedDropout(granularity=
"channel")` layer needs to draw its groups itself, in its own call, as every
other member of the group does: the weights that make each channel's
importance (the magnitude criterion of `prune(..., granularity="channel")`),
and where each channel sits in the layer's kernel. The draws agree because
every member computes them from the same weights with the same seed, the
`TargetedChannels` callback's seed and the step; nothing goes back to the host
between steps.
"""

import dataclasses

import numpy as np
from keras import ops, random

from keras_compact.layers.targeted_dropout import TRANSPOSED_LAYERS, kernel_columns, kernel_of
from keras_compact.pruning import _groups


@dataclasses.dataclass
class _Side:
    """The squared weights of `variable`, summed over every axis but `axes`
    (flattened in that order): one value per index of a layout, which `at`
    places in the draw's vector of channels."""

    variable: object
    axes: tuple
    at: np.ndarray

    def squares(self):
        value = ops.stop_gradient(ops.cast(self.variable.value, "float32"))
        other = [axis for axis in range(value.ndim) if axis not in self.axes]
        moved = ops.transpose(value, other + list(self.axes))
        return ops.sum(ops.reshape(moved, (-1, int(self.at.size))) ** 2, axis=0)


@dataclasses.dataclass
class _Masks:
    """Where one layer's kernel rows and columns sit in the draw's vector of channels."""

    kind: str
    transposed: bool
    rows: np.ndarray
    columns: np.ndarray
    roots: tuple


class ChannelDraw:
    """What the `TargetedDropout(granularity="channel")` layers of one model need to draw their
    groups in their own calls. Built by `TargetedChannels` when training begins.

    The channels of every prunable group have a place in one vector, group after
    group (`offsets`; the noise is drawn for all of them, so every caller draws
    the same); a layer computes only the groups it touches.
    """

    def __init__(self, graph, layers, seed):
        self.seed = int(seed)
        groups = {group.root: group.size for group in graph.groups() if group.prunable}
        self.producers = {group.root: group.producers for group in graph.groups() if group.prunable}
        self.roots = sorted(groups)
        self.offsets, start = {}, 0
        for root in self.roots:
            self.offsets[root] = (start, groups[root])
            start += groups[root]
        self.size = start
        self._graph = graph
        self.sides = {root: [] for root in self.roots}  # `(side, each index's channel of the group or size)`
        self.masks = {}
        for member in graph.members:
            for side in self._sides(member):
                for root in self.roots:
                    start, size = self.offsets[root]
                    inside = (side.at >= start) & (side.at < start + size)
                    if inside.any():
                        self.sides[root].append((side, np.where(inside, side.at - start, size).astype(np.int32)))
            if member.layer.name in layers:
                self.masks[member.layer.name] = self._masks(member)

    def _at(self, layout):
        """`layout`'s indices as positions in the vector of channels (`self.size`: in no prunable group)."""
        roots, channels = self._graph.addresses(layout)
        at = np.full(len(roots), self.size, np.int32)
        for root, (start, _) in self.offsets.items():
            at[roots == root] = start + channels[roots == root]
        return at

    def _sides(self, member):
        """A `_Side` for each sum of squares `_channel._member_squares` adds to the member's groups."""
        weights = member.layer.weights
        if member.matrices:
            found = []
            for matrix in member.matrices:
                for layout, axes in ((matrix.rows, matrix.row_axes), (matrix.columns, matrix.column_axes)):
                    if layout is not None:
                        found.append(_Side(weights[matrix.index], tuple(axes), self._at(layout)))
            return found
        if member.kind == "batchnorm":
            return [_Side(weights[0], (0,), self._at(member.inputs))] if member.layer.scale else []
        if member.kind == "depthwise":  # `[..., in, multiplier]`: each output channel's filter
            rank = len(weights[0].shape)
            return [_Side(weights[0], (rank - 2, rank - 1), self._at(member.output))]
        if member.kind not in _groups.KERNELS:
            return []
        kernel = kernel_of(member.layer)
        rank = len(kernel.shape)
        rows, columns = (rank - 1, rank - 2) if isinstance(member.layer, TRANSPOSED_LAYERS) else (rank - 2, rank - 1)
        found = [_Side(kernel, (columns,), self._at(member.output)), _Side(kernel, (rows,), self._at(member.rows))]
        if member.kind == "separable":  # the depthwise filters a removed input channel takes with it
            found.append(_Side(weights[0], (rank - 2, rank - 1), self._at(member.rows)))
        return found

    def _masks(self, member):
        """The member's rows and columns as indices into `kept(roots)` of the groups it touches."""
        rows, columns = self._at(member.rows), self._at(member.output)
        local = np.full(self.size + 1, -1, np.int32)
        roots, end = [], 0
        for root in self.roots:
            start, size = self.offsets[root]
            if np.any((rows >= start) & (rows < start + size)) or np.any((columns >= start) & (columns < start + size)):
                roots.append(root)
                local[start : start + size] = end + np.arange(size)
                end += size
        local[local < 0] = end  # in none of them: the last index, always kept
        return _Masks(member.kind, isinstance(member.layer, TRANSPOSED_LAYERS), local[rows], local[columns],
                      tuple(roots))

    def kept(self, roots, target_rate, drop_rate, step, generator):
        """The channels of `roots` (in order, then one always true): false where this step drops one.
        The same for every caller at the same step."""
        noise = self.noise(step, generator)
        pieces = []
        for root in roots:
            start, size = self.offsets[root]
            importance = sum(ops.segment_sum(side.squares(), ids, num_segments=size + 1)[:size]
                             for side, ids in self.sides[root])
            rank = ops.argsort(ops.argsort(importance))
            count = ops.cast(ops.floor(ops.cast(target_rate, "float32") * size), "int32")
            candidate = ops.less(rank, count)
            dropped = ops.logical_and(candidate, ops.less(noise[start : start + size], drop_rate))
            pieces.append(ops.logical_not(dropped))
        return ops.concatenate(pieces + [ops.ones((1,), "bool")])

    def noise(self, step, generator):
        """Uniform in [0, 1) for every channel, drawn from the seed and `step` alone: `generator` (the
        calling layer's `keras.random.SeedGenerator`, whose state its call may write) is set to them."""
        state = generator.state
        generator.state.assign(ops.cast(ops.stack([ops.convert_to_tensor(self.seed, "int32"),
                                                   ops.cast(step, "int32")]), state.dtype))
        return random.uniform((self.size,), seed=generator)

    def kernel_masks(self, layer, target_rate, drop_rate, step, generator):
        """`(kernel mask, bias mask)` of `layer` (the `TargetedDropout`'s wrapped layer) at `step`, as floats."""
        masks = self.masks[layer.name]
        kept = self.kept(masks.roots, target_rate, drop_rate, step, generator)
        rows = ops.take(kept, masks.rows)
        shape = tuple(kernel_of(layer).shape)
        if masks.kind == "depthwise":
            mask = ops.broadcast_to(rows[:, None], shape)
        else:
            mask = ops.logical_and(rows[:, None], ops.take(kept, masks.columns)[None, :])
            if masks.transposed:  # built as [..., in, out], then in the kernel's own order
                mask = ops.swapaxes(ops.broadcast_to(mask, shape[:-2] + shape[-2:][::-1]), -1, -2)
            else:
                mask = ops.broadcast_to(mask, shape)
        bias = ops.any(kernel_columns(mask, layer), axis=0)
        return ops.cast(mask, "float32"), ops.cast(bias, "float32")
