"""Pure tensor functions shared by the layers, models and the export."""

from keras_compact.ops.fake_quant import fake_quant
from keras_compact.ops.hashing import (
    dense_bits,
    feature_hashes,
    lsh_seeds,
    pack_signatures,
    projection_matrix,
    sparse_bits,
)
from keras_compact.ops.hsic_kernels import (
    gaussian_kernel,
    hsic,
    normalized_cca_hsic,
    normalized_hsic,
)
from keras_compact.ops.walsh_hadamard import (
    hadamard_class_matrix,
    hadamard_matrix,
    hadamard_rows,
    hadamard_size,
    orthogonal_class_matrix,
    transform_factors,
    transform_is_cheaper,
    walsh_hadamard_transform,
)
