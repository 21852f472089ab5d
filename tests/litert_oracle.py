"""The builtin LSH_PROJECTION kernel, run alone in LiteRT: the tests' oracle."""

import numpy as np

from tflite_export import _projection, _verify


class BuiltinLSH:
    """Runs one example at a time through a model holding only the builtin op."""

    def __init__(self, seeds, sparse, feature_dtype, with_weights):
        model = _projection.lsh_projection_model(seeds, sparse, feature_dtype, with_weights)
        self.runner = _verify.LiteRTRunner(model)

    def __call__(self, features, weights=None):
        example = [features] if weights is None else [features, weights]
        outputs, _ = self.runner(example)
        return outputs[0]

    def dense(self, x):
        """Kernel output for each row of a dense float matrix (features 0..n-1)."""
        ids = np.arange(x.shape[1], dtype=np.int32)
        return np.stack([self(ids, row.astype(np.float32)) for row in x])
