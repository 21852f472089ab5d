"""The fixed class matrices of "Fix your classifier", defined once.

Hoffer, Hubara and Soudry ("Fix your classifier: the marginal value of training
the last weight layer", ICLR 2018) replace a classifier's learned `N x C` kernel
by a fixed matrix whose class vectors are orthogonal. Here:

- `hadamard_matrix(size)`: the Sylvester Hadamard matrix (`H[i, j] =
  (-1)**popcount(i & j)`, the order of `scipy.linalg.hadamard`);
- `hadamard_size(N, C)`: the padded width `2**ceil(log2(max(N, C + 1)))`;
- `hadamard_rows(C)`: the class rows `1..C`. Row 0 is all ones and is skipped:
  on non-negative features (after a ReLU) its logit is never below any other
  class's, so a classifier that used it would predict class 0 for everything;
- `walsh_hadamard_transform(x)`: `x @ H` along the last axis in
  `O(size log size)`, as a product of small Hadamard factors.

The classifier's logits are `(pad(x) @ H)[..., 1:C+1]`, `pad` adding zeros up to
`hadamard_size`; the rows of the padded matrix are orthogonal for every `N` and
`C`. Restricted to the first `N` columns they stay exactly orthogonal when `N` is
a multiple of `2**ceil(log2(C + 1))` (for example `N` a power of two larger than
`C`); `C > N` class vectors cannot all be orthogonal in `N` dimensions.
"""

import math

import keras
import numpy as np

# Largest factor of the fast transform: each factor is one matmul with a
# `radix x radix` Hadamard block, so log_radix(size) matmuls replace log2(size)
# elementwise butterfly stages (benchmarks/fixed_classifier.py measures both).
DEFAULT_RADIX = 64


def hadamard_size(num_features, num_classes):
    """The width `2**ceil(log2(max(N, C + 1)))` inputs are zero-padded to.

    Example:

    >>> hadamard_size(512, 10), hadamard_size(10, 16), hadamard_size(4096, 21841)
    (512, 32, 32768)
    """
    width = max(int(num_features), int(num_classes) + 1)
    return 1 << (width - 1).bit_length()


def hadamard_rows(num_classes):
    """The rows of the Hadamard matrix used as class vectors: `1..C` (row 0 skipped)."""
    return slice(1, int(num_classes) + 1)


def hadamard_matrix(size, dtype="float32"):
    """The Sylvester Hadamard matrix of `size` (a power of two), entries +1/-1.

    Example:

    >>> hadamard_matrix(4).astype(int).tolist()
    [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]
    """
    size = _check_power_of_two(size, "size")
    index = np.arange(size)
    return _signs(index[:, None] & index[None, :], dtype)


def hadamard_class_matrix(num_features, num_classes, dtype="float32"):
    """The `[C, N]` class vectors: rows `1..C` of the padded Hadamard matrix, first N columns."""
    size = hadamard_size(num_features, num_classes)
    index = np.arange(size)
    rows = index[hadamard_rows(num_classes)]
    return _signs(rows[:, None] & index[None, :num_features], dtype)


def orthogonal_class_matrix(num_features, num_classes, seed, dtype="float32"):
    """`[C, N]` fixed random class vectors: orthonormal rows (C <= N) or columns (C > N).

    Drawn from NumPy's legacy `RandomState(seed)` (its stream is frozen across NumPy
    releases) and made unique by the sign convention of the QR factorisation, then
    scaled by `sqrt(max(N, C))` so that a class vector has the squared norm of a
    Hadamard row on average (`N`) and the classifier's scale means the same for
    both matrices.

    Example:

    >>> w = orthogonal_class_matrix(64, 10, seed=0)
    >>> bool(np.allclose(w @ w.T, 64 * np.eye(10), atol=1e-3))
    True
    """
    rows, columns = max(num_features, num_classes), min(num_features, num_classes)
    gaussian = np.random.RandomState(seed).standard_normal((rows, columns))
    q, r = np.linalg.qr(gaussian)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    matrix = q.T if num_classes <= num_features else q
    return (matrix * math.sqrt(rows)).astype(dtype)


def transform_factors(size, radix=DEFAULT_RADIX):
    """The factor sizes (powers of two, each <= radix) whose Kronecker product is `H_size`.

    Example:

    >>> transform_factors(32768), transform_factors(2048), transform_factors(512, radix=2)[:3]
    ([32, 32, 32], [64, 32], [2, 2, 2])
    """
    size = _check_power_of_two(size, "size")
    radix = _check_power_of_two(radix, "radix")
    if radix < 2:
        raise ValueError(f"radix must be a power of two >= 2. Received: radix={radix}")
    bits, step = size.bit_length() - 1, radix.bit_length() - 1
    count = max(1, math.ceil(bits / step))
    # Spread the bits evenly: 2**15 at radix 64 is 32*32*32 rather than 64*64*8.
    sizes = [bits // count + (1 if i < bits % count else 0) for i in range(count)]
    return [1 << s for s in sizes]


def transform_is_cheaper(num_features, num_classes, radix=DEFAULT_RADIX, ratio=4.0):
    """Whether the fast transform should replace the dense `[N, C]` matmul.

    The matmul costs `N * C` multiply-adds per example, the transform
    `size * sum(factors)` plus a few reshapes; it pays once the matmul costs
    `ratio` times more. `ratio=4` is the crossover of a training step (forward and
    backward) on CPU, from the shapes and the sweep of
    `benchmarks/results/fixed_classifier.md`.

    Example:

    >>> transform_is_cheaper(512, 10), transform_is_cheaper(4096, 21841)
    (False, True)
    """
    size = hadamard_size(num_features, num_classes)
    return num_features * num_classes >= ratio * size * sum(transform_factors(size, radix))


def walsh_hadamard_transform(x, radix=DEFAULT_RADIX):
    """`x @ H` along the last axis (a power of two) without forming `H`.

    `H_size` is the Kronecker product of small Hadamard blocks `H_m`; each step
    views `x` as `[batch, m, size/m]`, moves the `m` axis last and multiplies it
    by `H_m`, so after all factors the axes are back in their original order.
    The cost is `size * sum(m)` multiply-adds instead of `size**2`; with
    `radix=2` it is the classic radix-2 butterfly. `H` is symmetric, so this is
    also `H @ x` per row.

    Args:
        x: a float tensor `[..., size]`.
        radix: largest block size, a power of two >= 2.

    Example:

    >>> x = np.arange(8, dtype="float32")[None]
    >>> bool(np.allclose(walsh_hadamard_transform(x, radix=2), x @ hadamard_matrix(8)))
    True
    """
    size = x.shape[-1]
    if size is None:
        raise ValueError("walsh_hadamard_transform needs a known last dimension.")
    y = keras.ops.reshape(x, (-1, size))
    for m in transform_factors(size, radix):
        block = keras.ops.convert_to_tensor(hadamard_matrix(m), dtype=y.dtype)
        y = keras.ops.reshape(y, (-1, m, size // m))
        y = keras.ops.matmul(keras.ops.transpose(y, (0, 2, 1)), block)
        y = keras.ops.reshape(y, (-1, size))
    return keras.ops.reshape(y, keras.ops.shape(x))


def _signs(masks, dtype):
    """(-1)**popcount(masks) for non-negative integer masks."""
    parity = np.zeros(masks.shape, dtype=np.int64)
    for bit in range(int(masks.max(initial=0)).bit_length()):
        parity ^= (masks >> bit) & 1
    return (1 - 2 * parity).astype(dtype)


def _check_power_of_two(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two. Received: {name}={value!r}")
    return int(value)
