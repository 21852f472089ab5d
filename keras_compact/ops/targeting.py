"""Which weights or units a magnitude pruner would remove, defined once.

Targeted Dropout (Gomez et al., "Learning Sparse Networks Using Targeted Dropout",
2018) drops exactly these candidates during training, and `keras_compact.pruning`
removes them afterwards, so both use the functions here.

A kernel is viewed as *columns*: one column per output unit (Dense) or filter
(convolutions), holding that unit's incoming weights:

- Dense `[in, units]`: the kernel itself;
- Conv1D/Conv2D `[..., in, filters]`: `[-1, filters]`;
- DepthwiseConv2D `[kh, kw, channels, multiplier]`: each of the
  `channels * multiplier` output channels has `kh * kw` weights.
"""

import keras
import tensorflow as tf

GRANULARITIES = ("weight", "unit")


def kernel_columns(kernel, depthwise=False):
    """The kernel as `[fan_in, units]` columns (see the module docstring)."""
    kernel = tf.convert_to_tensor(kernel)
    if depthwise:
        shape = tf.shape(kernel)
        return tf.reshape(kernel, [shape[0] * shape[1], shape[2] * shape[3]])
    return tf.reshape(kernel, [-1, tf.shape(kernel)[-1]])


def columns_to_kernel(columns, kernel_shape):
    """Inverse of `kernel_columns` for a kernel of shape `kernel_shape`."""
    return tf.reshape(columns, kernel_shape)


def candidate_count(rate, size):
    """`floor(rate * size)`: how many of `size` items a rate targets."""
    return tf.cast(tf.floor(tf.cast(rate, tf.float32) * tf.cast(size, tf.float32)), tf.int32)


def weight_candidates(columns, count):
    """Bool `[fan_in, units]`: in each column, its `count` smallest |w|.

    Ties are broken by position, so every column has exactly `count` candidates.
    """
    order = tf.argsort(tf.abs(columns), axis=0, stable=True)
    ranks = tf.argsort(order, axis=0, stable=True)
    return ranks < count


def unit_candidates(columns, count):
    """Bool `[units]`: the `count` columns of smallest L2 norm."""
    norms = tf.norm(tf.cast(columns, tf.float32), axis=0)
    ranks = tf.argsort(tf.argsort(norms, stable=True), stable=True)
    return ranks < count


def candidates(columns, rate, granularity):
    """Bool `[fan_in, units]` candidates for a targeted fraction `rate`."""
    fan_in, units = tf.shape(columns)[0], tf.shape(columns)[1]
    if granularity == "weight":
        return weight_candidates(columns, candidate_count(rate, fan_in))
    targeted_units = unit_candidates(columns, candidate_count(rate, units))
    return tf.broadcast_to(targeted_units[None, :], tf.shape(columns))


def targeted_dropout_mask(columns, target_rate, drop_rate, granularity, seed):
    """Float mask `[fan_in, units]`: 0 where a candidate is dropped, else 1.

    Each candidate weight (or each candidate unit, whole) is dropped independently
    with probability `drop_rate`; `seed` is a `keras.random.SeedGenerator` or int.
    """
    targeted = candidates(columns, target_rate, granularity)
    if granularity == "weight":
        uniform = keras.random.uniform(tf.shape(columns), seed=seed)
    else:
        uniform = tf.broadcast_to(
            keras.random.uniform(tf.shape(columns)[1:], seed=seed)[None, :], tf.shape(columns)
        )
    dropped = tf.logical_and(targeted, uniform < tf.cast(drop_rate, uniform.dtype))
    return 1.0 - tf.cast(dropped, columns.dtype)
