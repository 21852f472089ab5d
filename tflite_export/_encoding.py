"""The file's weight encodings: dense, and sparse (block-encoded) where it pays and LiteRT runs it."""

import dataclasses

import numpy as np

from keras_compact import _keras_private
from tflite_export import _verify


def kernels(model):
    """The weight matrices whose zeros a sparse encoding skips (a separable convolution's: its pointwise one)."""
    found = []
    for layer in _keras_private.sublayers(model):
        kernel = getattr(layer, "kernel", None)
        kernel = getattr(layer, "pointwise_kernel", None) if kernel is None else kernel
        if kernel is not None:
            found.append(np.asarray(kernel.value))
    return found


@dataclasses.dataclass
class Encodings:
    """The dense and (when made) sparse files, and the one chosen."""

    dense: bytes
    sparse: bytes
    chosen: bytes
    weight_sparsity: float


def encodings(convert, kernels, sparse):
    """Converts once dense and, when asked or worthwhile, once sparse; picks one."""
    zeros = sum(int(np.sum(kernel == 0)) for kernel in kernels)
    weight_sparsity = zeros / max(sum(kernel.size for kernel in kernels), 1)
    dense_bytes = convert(sparse=False)
    sparse_bytes = None
    if sparse is True or (sparse == "auto" and any(np.mean(k == 0) >= 0.5 for k in kernels)):
        sparse_bytes = convert(sparse=True)
    chosen = _choose_encoding(dense_bytes, sparse_bytes, sparse)
    return Encodings(dense_bytes, sparse_bytes, chosen, weight_sparsity)


def _choose_encoding(dense_bytes, sparse_bytes, sparse):
    """The sparse encoding when asked for, or (auto) when smaller and LiteRT runs it."""
    if sparse_bytes is None:
        return dense_bytes
    try:
        _verify.LiteRTRunner(sparse_bytes)
    except RuntimeError as error:
        if sparse is True:
            raise ValueError(
                "LiteRT (with its default delegates, as on Android) cannot run the sparse "
                f"encoding of this model: {error}. Export with sparse=False or 'auto'."
            ) from error
        return dense_bytes
    if sparse is True or len(sparse_bytes) < len(dense_bytes):
        return sparse_bytes
    return dense_bytes
