"""Pure tensor functions shared by the layers, models and the export."""

from keras_compact.ops.hashing import (
    dense_bits,
    feature_hashes,
    lsh_seeds,
    pack_signatures,
    projection_matrix,
    sparse_bits,
)
