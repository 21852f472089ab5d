"""Fake quantization: rounding to the int8 grid the TFLite converter will use, in float.

One definition, the TensorFlow op's (`tf.quantization.fake_quant_with_min_max_vars`):
the range `[minimum, maximum]` is nudged so that 0.0 is exactly representable,
values are clipped to it and rounded to one of `2**num_bits` levels
(`2**num_bits - 1` with `narrow_range`, as the converter's symmetric int8 weights).
The gradient is the straight-through estimator: 1 inside the range, 0 outside.

On the TensorFlow backend the TensorFlow op itself runs, because the TFLite
converter reads its ranges; on the others the same arithmetic in `keras.ops`.
"""

import keras
from keras import ops


def fake_quant(x, minimum, maximum, num_bits=8, narrow_range=False):
    """`x` rounded to the quantization grid of `[minimum, maximum]`, as float.

    Args:
        x: a float tensor.
        minimum, maximum: the range, scalars (per tensor) or vectors as long as
            `x`'s last axis (per channel). `maximum > minimum`; the range is
            nudged to hold 0.0 on the grid, as the converter does.
        num_bits: bits of the integer type (8 for int8).
        narrow_range: leave out the lowest level (symmetric int8 weights use
            `[-127, 127]`).

    Returns:
        A tensor like `x`, with gradient 1 where `x` lies inside the range.

    Example:

    >>> values = fake_quant(np.array([-2.0, 0.0, 0.3, 1.0], "float32"), -1.0, 1.0, narrow_range=True)
    >>> [round(v, 4) for v in keras.ops.convert_to_numpy(values).tolist()]  # multiples of 1/127
    [-1.0, 0.0, 0.2992, 1.0]
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    x = ops.cast(x, "float32")  # the op takes float32 only: a mixed-precision layer's float16 too
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        minimum = tf.cast(minimum, "float32")
        maximum = tf.cast(maximum, "float32")
        if minimum.shape.rank == 0:
            quantized = tf.quantization.fake_quant_with_min_max_vars(
                x, minimum, maximum, num_bits=num_bits, narrow_range=narrow_range
            )
        else:
            quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                x, minimum, maximum, num_bits=num_bits, narrow_range=narrow_range
            )
    else:
        quantized = fake_quant_in_keras_ops(x, minimum, maximum, num_bits, narrow_range)
    return ops.cast(quantized, dtype)


def fake_quant_in_keras_ops(x, minimum, maximum, num_bits=8, narrow_range=False):
    """`fake_quant` in `keras.ops`: what runs on JAX and PyTorch, the TensorFlow op's arithmetic."""
    low, high, scale = nudged_range(minimum, maximum, num_bits, narrow_range)
    clipped = ops.clip(x, low, high)
    rounded = ops.floor((clipped - low) * (1.0 / scale) + 0.5) * scale + low
    return clipped + ops.stop_gradient(rounded - clipped)


def nudged_range(minimum, maximum, num_bits=8, narrow_range=False):
    """`(low, high, scale)`: the range `fake_quant` rounds to, with 0.0 on its grid."""
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = 2.0**num_bits - 1.0
    minimum = ops.cast(minimum, "float32")
    maximum = ops.cast(maximum, "float32")
    scale = (maximum - minimum) / (quant_max - quant_min)
    zero_point = ops.clip(ops.floor(quant_min - minimum / scale + 0.5), quant_min, quant_max)
    return (quant_min - zero_point) * scale, (quant_max - zero_point) * scale, scale
