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
position (`weight_candidates`, `unit_candidates`, NumPy, run once). Training
selects at every step: a candidate is a score strictly below its column's
threshold, the `count + 1`-th smallest score, so a tie at the threshold leaves a
column with fewer candidates (the paper's own rule, `norm < sort(norm)[k]`).
`thresholds` finds it with a sort; `search_thresholds` finds the same selection
from last step's thresholds by counting, a few passes over the kernel instead of
a sort. Everything for training is `keras.ops`, so it runs on every Keras
backend.
"""

import keras
import numpy as np
from keras import ops

from keras_compact import _backend

GRANULARITIES = ("weight", "unit")
# `search_thresholds`: counting passes after the first, then the columns and values a band may hold.
SEARCH_PASSES = 4
BAND_COLUMNS = 16
BAND_WIDTH = 16


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


def count_below(values, thresholds):
    """Per column of `values`, how many entries lie strictly below its threshold (int32)."""
    return ops.sum(ops.cast(ops.less(values, thresholds[None, :]), "int32"), axis=0)


def search_thresholds(values, count, start, spacing, passes=SEARCH_PASSES):
    """Per column, the threshold `thresholds` finds, found by counting instead of sorting.

    `values` are nonnegative `[fan_in, units]` scores, `count` an int32 scalar,
    `start` `[units]` thresholds to start from (last step's, which the weights
    have barely moved from) and `spacing` `[units]` positive gaps to step by
    (the typical distance between neighbouring values at the threshold).

    1. Each pass counts, per column, the values strictly below its threshold
       (one vectorized comparison and sum) and moves the columns whose count is
       neither `count` nor `count + 1`: by `spacing` per missing value while
       the target lies on one side, by interpolation between the counts on
       either side once it is bracketed. Up to `passes` passes after the first.
    2. A column with `count + 1` values below takes the largest of them, the
       `count + 1`-th smallest value, as its threshold: the sort's.
    3. Up to `BAND_COLUMNS` columns still unsettled whose bracket holds at most
       `BAND_WIDTH` values take the `count + 1`-th smallest value from a `top_k`
       of the values in the bracket.
    4. Any column left takes its threshold from `thresholds`'s sort (a jump of
       the rate does this).

    So the candidates (values strictly below the threshold) are always those
    of `thresholds`: exactly the `count` smallest, or fewer where the
    `count`-th and `count + 1`-th tie. A column with `count` values below keeps
    a threshold between the two, which selects the same values.

    Returns:
        `(thresholds, spacing)`: the thresholds, and each column's gap measured
        on the way (`spacing` where none was), to start from next time.
    """
    found, settled, spacing = counted_thresholds(values, count, start, spacing, passes)
    return sort_unsettled(values, count, found, settled), spacing


def counted_thresholds(values, count, start, spacing, passes=SEARCH_PASSES):
    """Steps 1-3 of `search_thresholds`, without its sort.

    Returns:
        `(thresholds, settled, spacing)`: `settled` is False for the columns
        step 4 must sort (`sort_unsettled`).
    """
    dtype = values.dtype
    target = ops.cast(count, dtype)
    tiny = ops.cast(np.finfo("float32").tiny, dtype)
    # Nothing lies below 0, so the search starts above it; a column with more than `count`
    # zeros has the sort's threshold 0 (no candidates), known from this first count.
    start = ops.maximum(start, tiny)
    below = ops.cast(count_below(values, start), dtype)
    zeros_tie = ops.logical_and(ops.equal(start, tiny), below > target)
    start = ops.where(zeros_tie, ops.zeros_like(start), start)
    below = ops.where(zeros_tie, target, below)
    found, below, lo, below_lo, hi, below_hi, measured = _count_passes(
        values, target, start, below, spacing, passes
    )
    one_over = ops.equal(below, target + 1.0)
    largest_below = ops.max(ops.where(values < found[None, :], values, -1.0), axis=0)
    found = ops.where(one_over, largest_below, found)
    settled = ops.logical_not(_unsettled(below, target))
    found, settled = ops.cond(
        ops.all(settled),
        lambda: (found, settled),
        lambda: _finish_in_bands(values, count, found, settled, (lo, below_lo, hi, below_hi)),
    )
    return found, settled, ops.maximum(measured, tiny)


def sort_unsettled(values, count, found, settled):
    """Step 4 of `search_thresholds`: `thresholds`'s sort for the columns not `settled`, if any."""
    return _backend.cond(
        ops.all(settled), lambda: found, lambda: ops.where(settled, found, thresholds(values, count))
    )



def _unsettled(below, target):
    return ops.logical_or(below < target, below > target + 1.0)


def _count_passes(values, target, start, below, spacing, passes):
    """Step 1 of `search_thresholds`: returns the thresholds, their counts, the brackets and the gaps."""
    size = values.shape[0]
    low_side, high_side = below < target, below > target + 1.0
    zero = ops.zeros_like(start)
    # lo has fewer than `count` values below, hi more than `count + 1`; 0 and inf always do.
    state = (
        ops.zeros((), "int32"),
        start,
        below,
        ops.where(low_side, start, zero),
        ops.where(low_side, below, zero),
        low_side,
        ops.where(high_side, start, zero + np.inf),
        ops.where(high_side, below, zero + size),
        high_side,
    )

    def searching(i, t, below, *_):
        return ops.logical_and(i < passes, ops.any(_unsettled(below, target)))

    _, t, below, lo, below_lo, has_lo, hi, below_hi, has_hi = ops.while_loop(
        searching, _counting_pass(values, target, spacing), state
    )
    bracketed = ops.logical_and(has_lo, has_hi)
    measured = ops.where(bracketed, (hi - lo) / ops.maximum(below_hi - below_lo, 1.0), spacing)
    # A narrow bracket can sit in a cluster of values; a column's gap stays within 4x of the layer's.
    measured = ops.maximum(measured, 0.25 * ops.mean(measured))
    return t, below, lo, below_lo, hi, below_hi, measured


def _counting_pass(values, target, spacing):
    """The body of `_count_passes`' loop: one counting pass over the unsettled columns, whose
    loop state (`ops.while_loop`'s) is the pass, the thresholds, their counts and the brackets."""
    dtype = values.dtype
    aim = target + 0.5  # between the count-th and the count+1-th value

    def step(i, t, below, *brackets):
        lo, below_lo, has_lo, hi, below_hi, has_hi = brackets
        moving = _unsettled(below, target)
        reach = spacing * ops.cast(ops.power(2.0, ops.cast(i, "float32")), dtype)  # widens while one-sided
        interpolated = lo + (hi - lo) * (aim - below_lo) / ops.maximum(below_hi - below_lo, 1.0)
        proposal = ops.where(
            ops.logical_and(has_lo, has_hi),
            interpolated,
            ops.where(has_lo, lo + (aim - below_lo) * reach, hi - (below_hi - aim) * reach),
        )
        inside = ops.logical_and(proposal > lo, proposal < hi)
        proposal = ops.where(inside, proposal, ops.where(has_hi, 0.5 * (lo + hi), lo + 2.0 * reach))
        t = ops.where(moving, proposal, t)
        below = ops.where(moving, ops.cast(count_below(values, t), dtype), below)  # settled columns stay
        went_low = ops.logical_and(moving, below < target)
        went_high = ops.logical_and(moving, below > target + 1.0)
        return (
            i + 1,
            t,
            below,
            ops.where(went_low, t, lo),
            ops.where(went_low, below, below_lo),
            ops.logical_or(has_lo, went_low),
            ops.where(went_high, t, hi),
            ops.where(went_high, below, below_hi),
            ops.logical_or(has_hi, went_high),
        )

    return step


def _finish_in_bands(values, count, found, settled, brackets):
    """Step 3 of `search_thresholds`: returns the thresholds and which columns are settled.

    `brackets` is `(lo, below_lo, hi, below_hi)`: per column, the thresholds the
    search ended between and their counts.

    The `count + 1`-th smallest value of a column is the `count - below_lo + 1`-th
    smallest at or above `lo`, and the `below_hi - count`-th largest below `hi`;
    a `top_k` of `BAND_WIDTH` values from whichever side is near enough finds it.
    """
    lo, below_lo, hi, below_hi = brackets
    size, units = values.shape
    columns, width = min(BAND_COLUMNS, units), min(BAND_WIDTH, size)
    _, picked = ops.top_k(ops.cast(ops.logical_not(settled), "int32"), columns)  # unsettled first
    target = ops.cast(count, "int32")
    above_lo = target - ops.cast(ops.take(below_lo, picked), "int32")  # 0-based, ascending from lo
    under_hi = ops.cast(ops.take(below_hi, picked), "int32") - target - 1  # 0-based, descending from hi
    from_lo = above_lo < width
    gathered = ops.take(values, picked, axis=1)
    keys = ops.where(
        from_lo[None, :],
        ops.where(gathered >= ops.take(lo, picked)[None, :], -gathered, -np.inf),
        ops.where(gathered < ops.take(hi, picked)[None, :], gathered, -np.inf),
    )
    nearest = ops.top_k(ops.transpose(keys), width)[0]
    position = ops.clip(ops.where(from_lo, above_lo, under_hi), 0, width - 1)
    value = ops.take_along_axis(nearest, position[:, None], axis=1)[:, 0]
    value = ops.where(from_lo, -value, value)
    was_settled = ops.take(settled, picked)
    fits = ops.logical_and(ops.logical_not(was_settled), ops.logical_or(from_lo, under_hi < width))
    found = ops.scatter_update(found, picked[:, None], ops.where(fits, value, ops.take(found, picked)))
    settled = ops.scatter_update(
        ops.cast(settled, "int32"), picked[:, None], ops.cast(ops.logical_or(was_settled, fits), "int32")
    )
    return found, ops.cast(settled, "bool")


def spacing_at(values, count, reach=8):
    """Per column, the mean gap between the sorted values around the `count`-th (one sort)."""
    size = values.shape[0]
    ordered = ops.sort(values, axis=0)
    first = ops.clip(count - reach, 0, size - 1)
    last = ops.clip(count + reach, 0, size - 1)
    gap = (ops.take(ordered, last, axis=0) - ops.take(ordered, first, axis=0)) / ops.cast(
        ops.maximum(last - first, 1), values.dtype
    )
    return ops.maximum(gap, ops.cast(np.finfo("float32").tiny, values.dtype))


def dropped(targeted, drop_rate, seed):
    """Bool, shape of `targeted`: each targeted entry dropped with probability `drop_rate`.

    One draw of random words: 8 bits per entry (a quarter of a float32
    uniform's cost) and one word more. An entry is dropped when its byte is
    below `m`, where `m` is `256 * drop_rate` rounded down, or up with
    probability its fractional part (decided by the extra word), so each entry
    is dropped with probability `drop_rate` (to 2^-24). `seed` is a
    `keras.random.SeedGenerator` or an int.
    """
    shape = tuple(targeted.shape)
    size = int(np.prod(shape))
    words = keras.random.randint(((size + 3) // 4 + 1,), -(2**31), 2**31 - 1, seed=seed)
    draws = ops.reshape(ops.view(words[:-1], "uint8")[:size], shape)
    dither = (ops.cast(words[-1], "float32") + 2.0**31) / 2.0**32  # uniform in [0, 1)
    scaled = ops.cast(drop_rate, "float32") * 256.0
    cut = ops.floor(scaled) + ops.cast(dither < scaled - ops.floor(scaled), "float32")
    below_cut = ops.less_equal(draws, ops.cast(ops.clip(cut - 1.0, 0.0, 255.0), "uint8"))
    return ops.logical_and(targeted, ops.logical_and(below_cut, cut > 0.0))


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
