"""HSIC estimators of the HSIC bottleneck, defined once.

Ma, Lewis and Kleijn, "The HSIC Bottleneck: Deep Learning without
Back-Propagation" (AAAI 2020), train each hidden block on
`nHSIC(Z, X) - beta * nHSIC(Z, Y)` over a batch of m samples. Here, as in the
authors' code (choasma/HSIC-bottleneck, `source/hsicbt/math/hsic.py`):

- `gaussian_kernel(a, sigma)`: `K[i, j] = exp(-||a_i - a_j||^2 / (2 sigma^2 d))`,
  `d` the feature dimension (so one sigma suits layers of any width);
- `hsic(a, b)`: the biased estimator `tr(K_a H K_b H) / m^2`, `H = I - 11^T/m`;
- `normalized_hsic(a, b)`: `hsic(a, b) / sqrt(hsic(a, a) hsic(b, b))`, in [0, 1],
  1 for identical inputs;
- `normalized_cca_hsic(a, b)`: the estimator the authors train with,
  `tr(R_a R_b)` with `R = K_c (K_c + epsilon m I)^-1`. The centred kernel here is
  `H K H` (symmetric, so the regularised system is solved by Cholesky) where
  the authors' code right-multiplies only (`K H`).

Labels enter as one-hot vectors through the same kernel. Everything is computed
in float32 whatever the inputs' dtype; a batch of 1, or constant inputs, gives 0
(the centred kernel vanishes) rather than NaN.
"""

from keras import ops


# Floor of a denominator; HSIC of real inputs is many orders of magnitude above it.
_TINY = 1e-12


def flatten(a):
    """`[m, ...]` -> float32 `[m, d]`."""
    a = ops.cast(a, "float32")
    return ops.reshape(a, (ops.shape(a)[0], -1))


def gaussian_kernel(a, sigma):
    """The `[m, m]` Gaussian kernel matrix of the rows of `a` (flattened to `[m, d]`)."""
    a = flatten(a)
    squares = ops.sum(ops.square(a), axis=1, keepdims=True)
    distances = ops.abs(squares - 2.0 * ops.matmul(a, ops.transpose(a)) + ops.transpose(squares))
    dimension = ops.cast(ops.shape(a)[1], "float32")
    return ops.exp(-distances / (2.0 * float(sigma) ** 2 * dimension))


def center(kernel):
    """`H K H`: the kernel matrix with row and column means removed."""
    kernel = kernel - ops.mean(kernel, axis=0, keepdims=True)
    return kernel - ops.mean(kernel, axis=1, keepdims=True)


def hsic_from_kernels(k_a, k_b):
    """`tr(K_a H K_b H) / m^2` from two kernel matrices."""
    m = ops.cast(ops.shape(k_a)[0], "float32")
    return ops.sum(center(k_a) * k_b) / (m * m)


def normalized_hsic_from_kernels(k_a, k_b):
    """nHSIC from two kernel matrices; 0 when either is constant."""
    self_a = hsic_from_kernels(k_a, k_a)
    self_b = hsic_from_kernels(k_b, k_b)
    return hsic_from_kernels(k_a, k_b) / ops.sqrt(ops.maximum(self_a * self_b, _TINY))


def cca_operator(kernel, epsilon=1e-5):
    """`R = K_c (K_c + epsilon m I)^-1` with `K_c = H K H` (so `R = I - epsilon m (K_c + epsilon m I)^-1`)."""
    m = ops.shape(kernel)[0]
    ridge = epsilon * ops.cast(m, "float32")
    identity = ops.eye(m, dtype="float32")
    return identity - ridge * ops.cholesky_inverse(ops.cholesky(center(kernel) + ridge * identity))


def normalized_cca_from_operators(r_a, r_b):
    """`tr(R_a R_b)` for two symmetric `cca_operator`s."""
    return ops.sum(r_a * r_b)


def hsic(a, b, sigma):
    """The biased HSIC estimate of the rows of `a` and `b` (same m) with Gaussian kernels.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> float(hsic(x, x, sigma=1.0)) > float(hsic(x, x[::-1], sigma=1.0))
    True
    """
    return hsic_from_kernels(gaussian_kernel(a, sigma), gaussian_kernel(b, sigma))


def normalized_hsic(a, b, sigma):
    """nHSIC in [0, 1]: 1 for identical inputs, near 0 for independent ones.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> round(float(normalized_hsic(x, x, sigma=1.0)), 4)
    1.0
    """
    return normalized_hsic_from_kernels(gaussian_kernel(a, sigma), gaussian_kernel(b, sigma))


def normalized_cca_hsic(a, b, sigma, epsilon=1e-5):
    """The authors' training estimator `tr(R_a R_b)`, in [0, m].

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> same, shuffled = normalized_cca_hsic(x, x, 1.0), normalized_cca_hsic(x, x[::-1], 1.0)
    >>> bool(same > shuffled)
    True
    """
    return normalized_cca_from_operators(
        cca_operator(gaussian_kernel(a, sigma), epsilon), cca_operator(gaussian_kernel(b, sigma), epsilon)
    )
