"""The locality-sensitive hash of ProjectionNet, defined once.

Everything here computes exactly what TFLite's builtin ``LSH_PROJECTION`` kernel
computes (``tensorflow/lite/kernels/lsh_projection.cc``), so that a model trained
with `keras_compact.layers.ProjectionLayer` gives the same bits on a phone:

- every hash function bit has a float32 *seed* ``s``;
- a feature is a key of raw bytes (the 4 bytes of an int32 position for dense
  inputs, the 8 bytes of an int64 id for sparse ones);
- ``h(s, key) = int64(Fingerprint64(bytes(s) ++ key))`` (farmhash, as
  ``tf.fingerprint`` computes it), converted to double;
- ``bit = sum_i weight_i * h(s, key_i) > 0``, accumulated in float64.

A dense vector ``x[n]`` is the features ``0..n-1`` weighted by ``x``, so its bits
are the signs of ``x @ P`` with ``P[k, b] = h(seed_b, int32 k)``: a random
projection that is never stored, only recomputed from the seeds.
"""

import numpy as np
import tensorflow as tf

_MASK64 = (1 << 64) - 1


def _splitmix64(state):
    """One step of SplitMix64 (Steele et al. 2014); returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def lsh_seeds(num_hashes, num_bits, seed=0):
    """The float32 ``[num_hashes, num_bits]`` seeds of the hash functions.

    The seeds are distinct values ``k / 2**23 - 1`` in ``[-1, 1)`` (``k`` a 24-bit
    integer, so every seed is exact in float32), drawn from a SplitMix64 stream
    started at ``seed``. The derivation is fixed here rather than taken from a
    NumPy generator so that a saved model gives the same bits with any NumPy
    release, and an app can re-derive the seeds in a few lines of any language.

    Example:

    >>> lsh_seeds(2, 3, seed=0).shape
    (2, 3)
    """
    state = seed & _MASK64
    values = []
    seen = set()
    while len(values) < num_hashes * num_bits:
        state, z = _splitmix64(state)
        k = z >> 40
        if k not in seen:
            seen.add(k)
            values.append(k)
    seeds = np.asarray(values, dtype=np.float64) / 2.0**23 - 1.0
    return seeds.astype(np.float32).reshape(num_hashes, num_bits)


def _key_bytes(values):
    """``[N]`` numbers -> ``[N, itemsize]`` uint8 of their raw little-endian bytes."""
    return tf.reshape(tf.bitcast(values, tf.uint8), [tf.shape(values)[0], values.dtype.size])


def feature_hashes(seeds, features):
    """``h(seed, feature)`` for every feature and every seed, as float64.

    Args:
        seeds: float32 tensor of any shape; flattened in row-major order.
        features: 1-D int32 or int64 tensor of feature keys.

    Returns:
        float64 tensor ``[len(features), seeds.size]``.

    Example:

    >>> h = feature_hashes(lsh_seeds(2, 3), tf.range(5))
    >>> h.shape
    TensorShape([5, 6])
    """
    features = tf.convert_to_tensor(features)
    seed_bytes = _key_bytes(tf.reshape(tf.convert_to_tensor(seeds, tf.float32), [-1]))
    feature_bytes = _key_bytes(features)
    num_features = tf.shape(feature_bytes)[0]
    num_seeds = tf.shape(seed_bytes)[0]
    keys = tf.concat(
        [
            tf.broadcast_to(seed_bytes[None, :, :], [num_features, num_seeds, 4]),
            tf.broadcast_to(
                feature_bytes[:, None, :],
                [num_features, num_seeds, features.dtype.size],
            ),
        ],
        axis=-1,
    )
    fingerprints = tf.fingerprint(
        tf.reshape(keys, [num_features * num_seeds, 4 + features.dtype.size])
    )
    hashes = tf.bitcast(fingerprints, tf.int64)
    return tf.cast(tf.reshape(hashes, [num_features, num_seeds]), tf.float64)


def projection_matrix(seeds, num_features):
    """The float64 ``[num_features, seeds.size]`` matrix ``P`` of a dense input.

    ``x @ P > 0`` are the kernel's DENSE bits for the float32 vector ``x``.
    """
    return feature_hashes(seeds, tf.range(num_features, dtype=tf.int32))


def dense_bits(x, matrix):
    """Bits of dense float inputs ``x [batch, n]`` as bool ``[batch, seeds.size]``.

    ``x`` is rounded to float32 first, as the builtin kernel reads float32 weights.
    """
    x = tf.cast(tf.cast(x, tf.float32), tf.float64)
    return tf.matmul(x, matrix) > 0


def sparse_bits(seeds, ids, weights=None):
    """Bits of ragged int64 feature ids ``[batch, None]`` as bool ``[batch, seeds.size]``.

    ``weights``, when given, is a ragged float tensor with the same row lengths;
    each feature's hash is multiplied by its weight (rounded to float32). A row
    with no features has a score of 0 and so all bits 0.
    """
    # A batch repeats many ids (common words and n-grams): hash each distinct id once.
    distinct, index = tf.unique(ids.flat_values)
    hashes = tf.gather(feature_hashes(seeds, distinct), index)
    if weights is not None:
        flat_weights = tf.cast(tf.cast(weights.flat_values, tf.float32), tf.float64)
        hashes = hashes * flat_weights[:, None]
    scores = tf.math.unsorted_segment_sum(
        hashes, ids.value_rowids(), num_segments=ids.nrows()
    )
    return scores > 0


def pack_signatures(bits, num_hashes, num_bits):
    """Bits ``[batch, T*d]`` -> the kernel's SPARSE int32 signatures ``[batch, T]``.

    The bits of function ``t`` are packed with the bit of seed ``(t, 0)`` the most
    significant, and ``t * 2**d`` is added, in int32 two's-complement arithmetic
    exactly as the kernel does, so that the ``T`` outputs index one embedding
    table of ``T * 2**d`` rows. At ``d = 32`` the kernel's ``1 << 32`` is
    undefined in C; x86-64 and ARM64 builds shift by ``32 mod 32`` and add ``t``,
    which is what LiteRT was measured to return and what this function returns.
    """
    bits = tf.reshape(tf.cast(bits, tf.int64), [-1, num_hashes, num_bits])
    weights = tf.constant([1 << (num_bits - 1 - j) for j in range(num_bits)], tf.int64)
    packed = tf.reduce_sum(bits * weights, axis=-1)
    offsets = tf.constant([t << (num_bits % 32) for t in range(num_hashes)], tf.int64)
    wrapped = tf.math.floormod(packed + offsets + 2**31, 2**32) - 2**31
    return tf.cast(wrapped, tf.int32)
