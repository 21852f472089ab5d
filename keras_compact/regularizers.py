"""Group penalties that drive whole units to zero (Philipp & Carbonell 2017)."""

import keras
from keras import ops

from keras_compact._checks import is_number, raise_errors

# Keeps the gradient of a norm finite at a unit whose weights are all zero.
_EPSILON = 1e-12


def _group_norms(groups, p):
    """`(sum |w|^p + eps)^(1/p)` of each row of `groups`."""
    return ops.power(ops.sum(ops.power(ops.abs(groups), p), axis=1) + _EPSILON, 1.0 / p)


class _UnitPenalty(keras.regularizers.Regularizer):
    def __init__(self, l=0.001, p=2):
        errors = []
        if not is_number(l) or l < 0:
            errors.append(f"l must be a number >= 0. Received: l={l!r}")
        if not is_number(p) or p < 1:
            errors.append(f"p must be a number >= 1. Received: p={p!r}")
        raise_errors(errors)
        self.l, self.p = float(l), float(p)

    def __call__(self, kernel):
        return self.l * ops.sum(_group_norms(self._groups(kernel), self.p))

    def get_config(self):
        return {"l": self.l, "p": self.p}


@keras.saving.register_keras_serializable(package="keras_compact")
class FanIn(_UnitPenalty):
    """`l * sum over units of ||incoming weights of the unit||_p`, a kernel regularizer.

    The fan-in penalty of non-parametric networks (Philipp & Carbonell,
    "Nonparametric Neural Networks", ICLR 2017): a group norm per output unit
    (per filter for convolutions), so training pushes whole units to zero, which
    `keras_compact.pruning.prune` and `shrink` then remove. `p=2` is the group
    lasso; `p=1` the plain L1 penalty.

    Args:
        l: the strength, a number >= 0.
        p: the norm, a number >= 1.

    Example:

    >>> layer = keras.layers.Dense(64, activation="relu", kernel_regularizer=FanIn(l=1e-3))
    """

    def _groups(self, kernel):
        return ops.transpose(ops.reshape(kernel, (-1, kernel.shape[-1])))


@keras.saving.register_keras_serializable(package="keras_compact")
class FanOut(_UnitPenalty):
    """`l * sum over input units of ||outgoing weights of the unit||_p`, a kernel regularizer.

    The fan-out penalty of non-parametric networks (Philipp & Carbonell 2017):
    put on the layer that reads a layer's units, it pushes each input unit's
    (input channel's) outgoing weights to zero together. After a `Flatten`, each
    flattened input counts as its own unit.

    Args:
        l: the strength, a number >= 0.
        p: the norm, a number >= 1.

    Example:

    >>> layer = keras.layers.Dense(10, kernel_regularizer=FanOut(l=1e-3))
    """

    def _groups(self, kernel):
        rank = len(kernel.shape)
        order = [rank - 2] + [axis for axis in range(rank) if axis != rank - 2]
        return ops.reshape(ops.transpose(kernel, order), (kernel.shape[-2], -1))
