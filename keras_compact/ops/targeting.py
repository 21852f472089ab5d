"""Which weights or units a magnitude pruner would remove, defined once.

Targeted Dropout (Gomez et al., "Learning Sparse Networks Using Targeted Dropout",
2018) drops these candidates during training, and `keras_compact.pruning` removes
them afterwards, so both use the functions here.

A kernel is viewed as *columns*: one column per output unit (Dense) or filter
(convolutions), holding that unit's incoming weights:

- Dense `[in, units]`: the kernel itself;
- Conv1D/Conv2D/Conv3D `[..., in, filters]`: `[-1, filters]`;
- Conv1DTranspose/Conv2DTranspose/Conv3DTranspose `[..., filters, in]`
  (`transposed`): the last two axes swapped first;
- DepthwiseConv2D `[kh, kw, channels, multiplier]`: each of the
  `channels * multiplier` output channels has `kh * kw` weights;
- SeparableConv1D/SeparableConv2D: their pointwise kernel `[1, (1,) in *
  multiplier, filters]`, as a convolution's (the depthwise kernel is left whole).

Two kinds of selection live here. Pruning needs exact counts, ties broken by
position (`weight_candidates`, `unit_candidates`, NumPy, run once). Training needs
speed: `thresholds` sorts once and a candidate is a score strictly below its
column's threshold, so a tie at the threshold leaves a column with fewer
candidates (the paper's own rule, `norm < sort(norm)[k]`). Everything for training
is `keras.ops`, so it runs on every Keras backend.
"""

import keras
import numpy as np
from keras import ops

GRANULARITIES = ("weight", "unit")


def kernel_columns(kernel, depthwise=False, transposed=False):
    """The kernel as `[fan_in, units]` columns (see the module docstring)."""
    shape = tuple(kernel.shape)
    if depthwise:
        return ops.reshape(kernel, (shape[0] * shape[1], shape[2] * shape[3]))
    if transposed:
        return ops.reshape(ops.transpose(kernel, _swapped_last(len(shape))), (-1, shape[-2]))
    return ops.reshape(kernel, (-1, shape[-1]))


def columns_to_kernel(columns, kernel_shape, transposed=False):
    """Inverse of `kernel_columns` for a kernel of shape `kernel_shape`."""
    shape = tuple(kernel_shape)
    if transposed:
        return ops.transpose(ops.reshape(columns, shape[:-2] + (shape[-1], shape[-2])), _swapped_last(len(shape)))
    return ops.reshape(columns, shape)


def _swapped_last(rank):
    return tuple(range(rank - 2)) + (rank - 1, rank - 2)


def candidate_count(rate, size):
    """`floor(rate * size)`: how many of `size` items a rate targets (an int32 tensor)."""
    return ops.cast(ops.floor(ops.cast(rate, "float32") * float(size)), "int32")


def scores(columns, granularity):
    """What the pruner ranks: |w| `[fan_in, units]` per weight, or the L2 norm `[units]` per unit."""
    if granularity == "weight":
        return ops.abs(columns)
    return ops.sqrt(ops.sum(ops.square(ops.cast(columns, "float32")), axis=0))


def thresholds(values, count):
    """Per column of `values` (along axis 0), its `count + 1`-th smallest value.

    The values strictly below it are the `count` smallest of the column (fewer if
    some tie with it); `inf` when `count` covers the whole column. One sort.
    """
    size = values.shape[0]
    ordered = ops.sort(values, axis=0)
    picked = ops.take(ordered, ops.minimum(count, size - 1), axis=0)
    return ops.where(count >= size, ops.cast(np.inf, picked.dtype), picked)


def dropped(targeted, drop_rate, seed):
    """Bool, shape of `targeted`: each targeted entry dropped with probability `drop_rate`.

    `seed` is a `keras.random.SeedGenerator` or an int.
    """
    uniform = keras.random.uniform(ops.shape(targeted), seed=seed)
    return ops.logical_and(targeted, uniform < ops.cast(drop_rate, uniform.dtype))


def weight_candidates(columns, count):
    """Bool `[fan_in, units]` (NumPy): in each column, its `count` smallest |w|.

    Ties are broken by position, so every column has exactly `count` candidates.
    """
    order = np.argsort(np.abs(np.asarray(columns)), axis=0, kind="stable")
    ranks = np.argsort(order, axis=0, kind="stable")
    return ranks < count


def unit_candidates(unit_scores, count):
    """Bool `[units]` (NumPy): the `count` units of smallest score, ties broken by position."""
    ranks = np.argsort(np.argsort(np.asarray(unit_scores), kind="stable"), kind="stable")
    return ranks < count
