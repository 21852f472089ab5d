import math

import keras
import numpy as np

from keras_compact._checks import (
    ChecksCallInputs, bool_errors, check_seed, draw_seed, is_int, is_number, keyword_only, one_of,
    raise_errors,
)
from keras_compact.ops import walsh_hadamard

_MATRICES = ("hadamard", "orthogonal")
_IMPLEMENTATIONS = ("auto", "matmul", "fwht")
# Added to the squared norm: keeps x / ||x|| and its gradient finite for an
# all-zero feature vector (a ReLU backbone can emit one), negligible otherwise.
_NORM_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="keras_compact")
class HadamardClassifier(ChecksCallInputs, keras.layers.Layer):
    """A classifier whose `N x C` kernel is a fixed matrix: one trainable number.

    Computes `logits = scale * W pad(x / ||x||) (+ bias)` where the class vectors
    `W` are fixed: rows `1..C` of the Sylvester Hadamard matrix of size
    `2**ceil(log2(max(N, C + 1)))`, the input zero-padded to that size (Hoffer,
    Hubara, Soudry, "Fix your classifier: the marginal value of training the last
    weight layer", ICLR 2018). Only the scalar scale (the paper's alpha, the
    weight `alpha`) is learned, so the layer
    has one trainable weight however many classes there are. Row 0 (all ones) is
    not used: on non-negative features its logit is never below any other class's,
    and a ReLU backbone then predicts class 0 for everything (the "rows 0..C-1"
    row of `benchmarks/results/fixed_classifier.md`, against rows `1..C`).

    As in the authors' code (`HadamardProj` in eladhoffer/convNet.pytorch,
    `models/modules/fixed_proj.py`) the scale starts at `1 / sqrt(C)` and the
    optional bias is drawn from `U(-1/sqrt(C), 1/sqrt(C))`; their logits carry a
    minus sign, which only mirrors the class vectors and is left out here.

    The matrix is not a weight: it is recomputed from the config, so the saved
    model holds the scale (and bias) only. With `matrix="orthogonal"` the class
    vectors are a fixed random orthogonal matrix from `seed`, scaled so that a
    class vector has the squared norm `N` of a Hadamard row.

    The Hadamard logits are computed either as a matmul with the `[N, C]` +/-1
    matrix or by a fast Walsh-Hadamard transform
    (`keras_compact.ops.walsh_hadamard_transform`, `O(size log size)`, no matrix
    in memory); `implementation="auto"` picks the transform when it is cheaper
    for the shape (`transform_is_cheaper`). Both give the same logits.

    The layer computes in float32 unless given another `dtype` (under a
    mixed-precision policy the classifier, like Keras's own advice for a model's
    last layer, stays in float32).

    Args:
        num_classes: C, an integer >= 2.
        scale: `"learned"` (the default, as the paper recommends) or a positive
            number that fixes it.
        normalize: divide the features by their L2 norm first (the paper's setting).
        matrix: `"hadamard"` or `"orthogonal"`.
        use_bias: add a trainable bias per class.
        seed: seed of the `"orthogonal"` matrix; `None` draws one from Keras's
            global generator (repeatable after `keras.utils.set_random_seed`;
            NumPy's global stream is left alone) and keeps it in the config.
            Not used by `"hadamard"`.
        implementation: `"auto"`, `"matmul"` or `"fwht"` (Hadamard only).

    Call arguments:
        inputs: a float tensor `[batch, N]` with known `N`.

    Example:

    >>> model = keras.Sequential([keras.Input(shape=(64,)),
    ...                           keras.layers.Dense(32, activation="relu"),
    ...                           HadamardClassifier(10)])
    >>> model.output_shape, len(model.layers[-1].trainable_weights)
    ((None, 10), 1)
    """

    expected_inputs = "a float tensor (batch, features)"

    @keyword_only
    def __init__(
        self,
        num_classes,
        scale="learned",
        *,
        normalize=True,
        matrix="hadamard",
        use_bias=False,
        seed=None,
        implementation="auto",
        **kwargs,
    ):
        errors = []
        if not is_int(num_classes) or num_classes < 2:
            errors.append(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
        if not (scale == "learned" or (is_number(scale) and scale > 0)):
            errors.append(f"scale must be 'learned' or a positive finite number. Received: scale={scale!r}")
        errors += bool_errors(normalize=normalize)
        errors.append(one_of("matrix", matrix, _MATRICES))
        errors += bool_errors(use_bias=use_bias)
        try:
            check_seed("seed", seed)
        except ValueError as error:
            errors.append(str(error))
        errors.append(one_of("implementation", implementation, _IMPLEMENTATIONS))
        if implementation == "fwht" and matrix == "orthogonal":
            errors.append(
                "implementation='fwht' needs matrix='hadamard' (a random orthogonal matrix has no fast "
                "transform). Received: implementation='fwht', matrix='orthogonal'"
            )
        raise_errors(errors)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.scale = scale if scale == "learned" else float(scale)
        self.normalize = bool(normalize)
        self.matrix = matrix
        self.use_bias = bool(use_bias)
        if seed is None and matrix == "orthogonal":
            seed = draw_seed()
        self.seed = None if seed is None else int(seed)
        self.implementation = implementation
        self.num_features = None
        # Largest block of the fast transform; the export sets its own for LiteRT.
        self.transform_radix = walsh_hadamard.DEFAULT_RADIX
        self._kernel = None

    @property
    def fixed_matrix(self):
        """The `[C, N]` class vectors as a NumPy array (after `build`)."""
        if not self.built:
            raise ValueError(f"Layer {self.name!r} is not built yet: call it on an input first.")
        return self._class_matrix(self.num_features)

    @property
    def uses_transform(self):
        """True when `call` computes the logits by the fast Walsh-Hadamard transform."""
        if self.matrix != "hadamard" or self.implementation == "matmul":
            return False
        if self.implementation == "fwht":
            return True
        return walsh_hadamard.transform_is_cheaper(self.num_features, self.num_classes)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "HadamardClassifier expects inputs of shape (batch, N) with a known N (flatten or pool "
                f"the features first). Received: input_shape={tuple(input_shape)}"
            )
        self.num_features = int(input_shape[-1])
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: self.num_features})
        bound = 1.0 / math.sqrt(self.num_classes)
        if self.scale == "learned":
            self.alpha = self.add_weight(
                name="scale", shape=(), initializer=keras.initializers.Constant(bound)
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_classes,),
                initializer=keras.initializers.RandomUniform(-bound, bound),
            )
        if not self.uses_transform:
            self._matmul_kernel()

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.normalize:
            # In float32 at least: in float16 the epsilon underflows to 0 (NaN for a zero row) and
            # squares above 65504 overflow.
            wide = "float32" if self.compute_dtype in ("float16", "bfloat16") else self.compute_dtype
            x = keras.ops.cast(x, wide)
            square_norm = keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True)
            x = keras.ops.cast(x * keras.ops.rsqrt(square_norm + _NORM_EPSILON), self.compute_dtype)
        if self.uses_transform:
            size = walsh_hadamard.hadamard_size(self.num_features, self.num_classes)
            x = keras.ops.pad(x, [(0, 0), (0, size - self.num_features)])
            rows = walsh_hadamard.hadamard_rows(self.num_classes)
            logits = walsh_hadamard.walsh_hadamard_transform(x, self.transform_radix)[:, rows]
        else:
            logits = keras.ops.matmul(x, keras.ops.convert_to_tensor(self._matmul_kernel(), x.dtype))
        scale = self.alpha if self.scale == "learned" else self.scale
        logits = logits * keras.ops.cast(scale, logits.dtype)
        if self.use_bias:
            logits = logits + keras.ops.cast(self.bias, logits.dtype)
        return logits

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            scale=self.scale,
            normalize=self.normalize,
            matrix=self.matrix,
            use_bias=self.use_bias,
            seed=self.seed,
            implementation=self.implementation,
        )
        return config

    def _matmul_kernel(self):
        # A cache of what the config defines, not a weight: it is not saved.
        if self._kernel is None:
            self._kernel = np.ascontiguousarray(self._class_matrix(self.num_features).T)
        return self._kernel

    def _class_matrix(self, num_features):
        if self.matrix == "hadamard":
            return walsh_hadamard.hadamard_class_matrix(num_features, self.num_classes)
        return walsh_hadamard.orthogonal_class_matrix(num_features, self.num_classes, self.seed)

