"""What a tensor's channel axis, and a weight's axes, are made of: the vocabulary of channel groups.

A `Layout` lists the spaces of channel indices a channel axis holds, in order
(`_groups` explains spaces and groups). A `Matrix` says which axes of one weight
read a layout (its rows) and which write one (its columns): the weights of an
attention layer, a recurrent layer or an embedding, whose axes are not a
kernel's `[..., in, out]`. Every question pruning asks of such a weight (the
norm of each channel's weights, which channels it reads, its mask, its cut
copy) is answered here by viewing it as `[other, rows, columns]`.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Segment:
    """Channels `start:stop` of a space, each repeated `repeat` times in a row."""

    space: int
    start: int
    stop: int
    repeat: int = 1


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tensor's channel axis: segments in order, tiled over `positions` (after a
    `Flatten`, index `p * width + c`; the gates of a recurrent kernel, `g * units + c`)."""

    segments: tuple
    positions: int = 1

    @property
    def width(self):
        return sum((s.stop - s.start) * s.repeat for s in self.segments)


@dataclasses.dataclass(frozen=True)
class Matrix:
    """One weight of a layer (`index` into `layer.weights`) as rows by columns.

    `row_axes` (flattened in order) index `rows`, the channels the weight reads;
    `column_axes` index `columns`, the channels it writes; either may be empty
    (a bias writes, an attention score reads nothing a group owns). The other
    axes (a GRU bias's two halves) are kept whole.

    Example: a `MultiHeadAttention`'s query kernel `[in, heads, key_dim]` reads
    the query's channels on axis 0 and writes `heads` segments of `key_dim` on
    axes 1 and 2: `Matrix(0, query_layout, heads_layout, (0,), (1, 2))`.
    """

    index: int
    rows: Layout = None
    columns: Layout = None
    row_axes: tuple = ()
    column_axes: tuple = ()

    def as_3d(self, value):
        """`value` (NumPy, this weight's shape) as `[other, rows, columns]`."""
        other = [axis for axis in range(value.ndim) if axis not in self.row_axes + self.column_axes]
        moved = np.transpose(value, other + list(self.row_axes) + list(self.column_axes))
        sizes = [math.prod(value.shape[a] for a in axes) for axes in (other, self.row_axes, self.column_axes)]
        return moved.reshape(sizes)

    def from_3d(self, array, shape):
        """Inverse of `as_3d` for a weight that was `shape` before its rows or columns changed in number:
        the first axis of each side takes the new size."""
        other = [axis for axis in range(len(shape)) if axis not in self.row_axes + self.column_axes]
        sides = []
        for axes, size in ((self.row_axes, array.shape[1]), (self.column_axes, array.shape[2])):
            inner = math.prod(shape[a] for a in axes[1:])
            sides.append([size // inner] + [shape[a] for a in axes[1:]] if axes else [])
        moved = array.reshape([shape[a] for a in other] + sides[0] + sides[1])
        order = other + list(self.row_axes) + list(self.column_axes)
        return np.transpose(moved, np.argsort(order))

    def squares(self, value):
        """`[(layout, squared norm of each index's weights)]` for the sides this weight has."""
        cube = self.as_3d(value.astype(np.float64)) ** 2
        found = []
        if self.rows is not None:
            found.append((self.rows, cube.sum(axis=(0, 2))))
        if self.columns is not None:
            found.append((self.columns, cube.sum(axis=(0, 1))))
        return found

    def read_rows(self, value):
        """Bool over `rows`: the indices this weight reads with any non-zero weight."""
        return self.as_3d(value).any(axis=(0, 2))

    def mask(self, shape, kept_rows, kept_columns):
        """A bool array of `shape`: true where both the row and the column are kept (None: all kept)."""
        other = math.prod(shape[a] for a in range(len(shape)) if a not in self.row_axes + self.column_axes)
        rows = math.prod(shape[a] for a in self.row_axes)
        columns = math.prod(shape[a] for a in self.column_axes)
        kept_rows = np.ones(rows, bool) if kept_rows is None else kept_rows
        kept_columns = np.ones(columns, bool) if kept_columns is None else kept_columns
        cube = np.broadcast_to(kept_rows[None, :, None] & kept_columns[None, None, :], (other, rows, columns))
        return self.from_3d(np.array(cube), shape)

    def cut(self, value, source_rows, source_columns):
        """`value` with its rows and columns indexed by the sources (`-1`: a new index, read as zeros)."""
        cube = self.as_3d(value)
        for axis, source in ((1, source_rows), (2, source_columns)):
            if source is not None:
                taken = np.take(cube, np.maximum(source, 0), axis=axis)
                where = [slice(None)] * 3
                where[axis] = source < 0
                taken[tuple(where)] = 0
                cube = taken
        return self.from_3d(cube, value.shape)
