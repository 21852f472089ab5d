import keras
import tensorflow as tf

from keras_compact._backend import backend, call_in_tf_data, float64_scope, in_tf_data, require_tensorflow
from keras_compact._checks import (
    ChecksCallInputs, check_seed, is_int, one_of, positive_int_errors, raise_errors, renamed_arguments,
)
from keras_compact.ops import hashing

_OUTPUTS = ("bits", "signatures")
# `SizeOfDimension(hash, 1) <= 32` in the builtin kernel (lsh_projection.cc).
MAX_BITS = 32


@keras.saving.register_keras_serializable(package="keras_compact")
class ProjectionLayer(ChecksCallInputs, keras.layers.Layer):
    """The ProjectionNet projection: `num_hashes` LSH functions of `num_bits` bits.

    Maps each example to the signs of `num_hashes * num_bits` random projections
    (Ravi, "ProjectionNet: Learning Efficient On-Device Deep Networks Using Neural
    Projections", 2017). The projection is never stored: every bit is recomputed
    from a float32 seed (`hash_seeds`) with the same farmhash fingerprint as
    TFLite's builtin `LSH_PROJECTION` kernel, so the bits in training equal the
    bits of the exported model on a phone, and the layer has no weights at all.

    A dense float input `x [batch, n]` is the features `0..n-1` weighted by `x`
    (feature `k` keyed by the 4 bytes of the int32 `k`): its bit `b` is
    `sum_k x[k] * h(seed_b, k) > 0`. Sparse features are int64 ids in a
    `tf.RaggedTensor [batch, None]` (each keyed by its 8 bytes), with weight 1 or
    with a ragged float32 weight tensor of the same row lengths passed as a
    second input: `layer([ids, weights])`. A row without features has all bits 0.

    Non-finite values are never hashed into ordinary bits: an example whose dense
    features (or sparse weights) hold a NaN or an infinity gets NaN for every bit
    with `output_mode="bits"`, so the model's output for it is NaN, as with any
    Keras layer; with `output_mode="signatures"` (int32, which has no NaN) the call raises
    `InvalidArgumentError`. On the phone `LSH_PROJECTION` would turn such an
    example into ordinary bits, so `tflite_export` reports those examples
    (`ExportReport.non_finite_examples`).

    `tflite_export.export` writes the layer as that builtin operator, or as its
    hash matrix (`projection_lowering="matrix"`): `tflite_export/_projection.py`
    holds both lowerings.

    For dense inputs the layer keeps the `n x T*d` float64 hash matrix in memory
    (computed once in `build`, never saved), so a training step costs one matmul;
    sparse ids are hashed on each call.

    Args:
        num_hashes: T, the number of hash functions; a positive integer.
        num_bits: d, bits per hash function, 1 to 32: the builtin `LSH_PROJECTION`
            kernel's limit (`SizeOfDimension(hash, 1) <= 32`), so that every layer
            this constructor accepts exports and runs on the phone.
        output_mode: `"bits"` for float32 `[batch, T * d]` of 0/1, or
            `"signatures"` for int32 `[batch, T]`: the d bits of function t
            packed into an integer, plus `t * 2**d`, ready for
            `keras.layers.Embedding(T * 2**d, ...)`. (`output=` still works,
            deprecated.)
        seed: non-negative integer from which the seeds are derived.

    Call arguments:
        inputs: a float tensor `[batch, n]` with known `n`, an int64
            `tf.RaggedTensor [batch, None]` of feature ids, or a list
            `[ids, weights]` of two ragged tensors (int64 and float).

    Example:

    >>> model = keras.Sequential([keras.Input(shape=(64,))])
    >>> model.add(ProjectionLayer(num_hashes=60, num_bits=12))
    >>> model.add(keras.layers.Dense(10, activation="softmax"))
    >>> model.output_shape
    (None, 10)
    """

    expected_inputs = "a float tensor (batch, features), int64 feature ids as a tf.RaggedTensor (batch, None), or [ids, weights] ragged tensors"
    convert_hint = "np.asarray(features, 'float32'), or tf.ragged.constant(ids, dtype='int64') for ids"

    def __init__(self, num_hashes, num_bits, output_mode="bits", seed=0, **kwargs):
        values, names = renamed_arguments("ProjectionLayer", ProjectionLayer.__init__, kwargs,
                                          {"output": "output_mode"}, {"output_mode": output_mode})
        output_mode = values["output_mode"]
        errors = []
        errors += positive_int_errors(num_hashes=num_hashes)
        errors.append(one_of(names["output_mode"], output_mode, _OUTPUTS))
        if not is_int(num_bits) or not 1 <= num_bits <= MAX_BITS:
            errors.append(
                f"num_bits must be an integer from 1 to {MAX_BITS}, the limit of TFLite's builtin "
                f"LSH_PROJECTION operator that runs the layer on the phone. Received: num_bits={num_bits!r}"
            )
        try:
            # The seed starts a 64-bit SplitMix64 stream (ops.hashing.lsh_seeds).
            check_seed("seed", seed, allow_none=False, bits=64)
        except ValueError as error:
            errors.append(str(error))
        raise_errors(errors)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_hashes = int(num_hashes)
        self.num_bits = int(num_bits)
        self.output_mode = output_mode
        self.seed = int(seed)
        self._seeds = hashing.lsh_seeds(self.num_hashes, self.num_bits, self.seed)
        self._matrix = None
        # XLA has no kernel for tf.fingerprint, which sparse inputs hash with per call;
        # dense inputs only multiply by the cached matrix and re-enable it in build().
        self.supports_jit = False

    @property
    def hash_seeds(self):
        """The float32 `[num_hashes, num_bits]` seeds; the export writes exactly these."""
        return self._seeds.copy()

    @property
    def num_features(self):
        """`n` of the dense `(batch, n)` input it was built for; None for ragged feature ids or before build."""
        return None if self._matrix is None else int(self._matrix.shape[0])

    @property
    def num_outputs(self):
        """Width of the output: `T * d` for bits, `T` for signatures."""
        return self.num_hashes * (self.num_bits if self.output_mode == "bits" else 1)

    def build(self, input_shape):
        if _is_sparse_shape(input_shape):
            return
        num_features = input_shape[-1]
        if len(input_shape) != 2 or num_features is None:
            raise ValueError(
                "ProjectionLayer expects dense inputs of shape (batch, n) with a known n. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        # The matrix is a cache of what the seeds define, not a weight: it is not
        # saved, so the .keras file does not grow with n.
        self._dense_matrix(num_features)
        # XLA drops the assertion that guards signatures against non-finite inputs (made on TensorFlow only).
        self.supports_jit = self.output_mode == "bits" or backend() != "tensorflow"

    def __call__(self, inputs, *args, **kwargs):
        if in_tf_data(inputs):
            return call_in_tf_data(self, inputs)
        if backend() != "tensorflow" and any(isinstance(v, tf.RaggedTensor) for v in _as_list(inputs)):
            require_tensorflow(
                "ProjectionLayer with ragged feature ids",
                "On another backend, project in the input pipeline instead: "
                "dataset.map(lambda ids, y: (layer(ids), y)) gives dense bits to the rest of the model; or "
                "feed dense float features.",
            )
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        ids, weights = _check_inputs(inputs)
        if _is_ragged(ids) or in_tf_data(ids):
            return self._call_tensorflow(ids, weights)
        ops = keras.ops
        matrix = self._dense_matrix(ids.shape[-1])
        with float64_scope():
            # float64, as the builtin kernel accumulates; JAX computes it only inside the scope.
            x = ops.cast(ops.cast(ids, "float32"), "float64")
            bits = ops.matmul(x, ops.convert_to_tensor(matrix, "float64")) > 0
            finite = ops.all(ops.isfinite(ids), axis=1)
            if self.output_mode == "bits":
                return ops.where(finite[:, None], ops.cast(bits, "float32"), float("nan"))
            # Other backends' compiled steps cannot raise: a non-finite example is hashed as it is.
            if backend() == "tensorflow":
                _assert_finite(finite, self.name)
            return _pack_signatures(bits, self.num_hashes, self.num_bits)

    def _call_tensorflow(self, ids, weights):
        """The projection in TensorFlow: ragged ids (TensorFlow backend) or a tf.data pipeline."""
        if isinstance(ids, tf.RaggedTensor):
            bits = hashing.sparse_bits(self._seeds, ids, weights)
            values = weights
        else:
            bits = hashing.dense_bits(ids, self._dense_matrix(ids.shape[-1]))
            values = ids
        finite = None if values is None else tf.reduce_all(tf.math.is_finite(values), axis=1)
        if self.output_mode == "bits":
            bits = tf.cast(bits, "float32")
            if finite is None:
                return bits
            return tf.where(finite[:, None], bits, tf.constant(float("nan"), "float32"))
        if finite is not None:
            _assert_finite(finite, self.name)
        return hashing.pack_signatures(bits, self.num_hashes, self.num_bits)

    def _dense_matrix(self, num_features):
        """The float64 `[num_features, T*d]` hash matrix, made once (eagerly, with TensorFlow) and cached."""
        if self._matrix is None or self._matrix.shape[0] != num_features:
            with tf.init_scope():
                self._matrix = hashing.projection_matrix(self._seeds, num_features).numpy()
        return self._matrix

    def compute_output_shape(self, input_shape):
        ids_shape = input_shape[0] if _is_list(input_shape[0]) else input_shape
        return (ids_shape[0], self.num_outputs)

    def compute_output_spec(self, inputs):
        ids, _ = _check_inputs(inputs)
        dtype = "float32" if self.output_mode == "bits" else "int32"
        return keras.KerasTensor((ids.shape[0], self.num_outputs), dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_hashes=self.num_hashes,
            num_bits=self.num_bits,
            output_mode=self.output_mode,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config, _from_config=True)  # a file saved with output= loads without a warning


def _assert_finite(finite, name):
    tf.debugging.assert_equal(
        finite,
        True,
        message=f"ProjectionLayer {name!r} (output_mode='signatures') received an example with "
        "NaN or infinite features; signatures are int32 and cannot carry NaN. Clean the inputs.",
    )


def _pack_signatures(bits, num_hashes, num_bits):
    """`hashing.pack_signatures` in `keras.ops` (int64 arithmetic: call inside `float64_scope`)."""
    ops = keras.ops
    bits = ops.reshape(ops.cast(bits, "int64"), (-1, num_hashes, num_bits))
    weights = ops.convert_to_tensor([1 << (num_bits - 1 - j) for j in range(num_bits)], "int64")
    packed = ops.sum(bits * weights, axis=-1)
    offsets = ops.convert_to_tensor([t << (num_bits % 32) for t in range(num_hashes)], "int64")
    wrapped = ops.mod(packed + offsets + 2**31, 2**32) - 2**31
    return ops.cast(wrapped, "int32")


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_list(value):
    return isinstance(value, (list, tuple))


def _is_sparse_shape(input_shape):
    """A list of two shapes ([ids, weights]) or a ragged (batch, None) shape."""
    if _is_list(input_shape) and input_shape and _is_list(input_shape[0]):
        return True
    return len(input_shape) == 2 and input_shape[-1] is None


def _is_ragged(tensor):
    return isinstance(tensor, tf.RaggedTensor) or getattr(tensor, "ragged", False)


def _check_inputs(inputs):
    """Validates the three accepted input forms; returns (ids_or_dense, weights)."""
    if _is_list(inputs):
        if len(inputs) != 2 or not all(_is_ragged(t) for t in inputs):
            raise ValueError(
                "ProjectionLayer takes a list only as [ids, weights], two ragged tensors "
                f"of shape (batch, None). Received: inputs={inputs!r}"
            )
        ids, weights = inputs
        if not tf.as_dtype(weights.dtype).is_floating:
            raise ValueError(
                "ProjectionLayer expects the weights of [ids, weights] to be a float ragged "
                f"tensor. Received: dtype={tf.as_dtype(weights.dtype).name}"
            )
    else:
        ids, weights = inputs, None
    dtype = tf.as_dtype(ids.dtype)
    if _is_ragged(ids):
        if dtype != tf.int64 or len(ids.shape) != 2:
            raise ValueError(
                "ProjectionLayer expects sparse feature ids as an int64 ragged tensor of "
                f"shape (batch, None). Received: dtype={dtype.name}, shape={tuple(ids.shape)}"
            )
    elif not dtype.is_floating or len(ids.shape) != 2 or ids.shape[-1] is None:
        raise ValueError(
            "ProjectionLayer expects a dense float tensor of shape (batch, n) with a known n, "
            "or int64 ragged feature ids of shape (batch, None). Received: "
            f"dtype={dtype.name}, shape={tuple(ids.shape)}"
        )
    return ids, weights
