"""Group penalties that drive whole units to zero (Philipp & Carbonell 2017)."""

import warnings

import keras
from keras import ops

from keras_compact._checks import is_number, raise_errors, renamed_arguments

# Keeps the gradient of a norm finite at a unit whose weights are all zero.
_EPSILON = 1e-12


def _group_norms(groups, p):
    """`(sum |w|^p + eps)^(1/p)` of each row of `groups`."""
    return ops.power(ops.sum(ops.power(ops.abs(groups), p), axis=1) + _EPSILON, 1.0 / p)


class _UnitPenalty(keras.regularizers.Regularizer):
    def __init__(self, factor=0.001, p=2, **kwargs):
        values, names = renamed_arguments(type(self).__name__, _UnitPenalty.__init__, kwargs, {"l": "factor"},
                                          {"factor": factor})
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s) {sorted(kwargs)}")
        factor, name = values["factor"], names["factor"]
        errors = []
        if not is_number(factor) or factor < 0:
            errors.append(f"{name} must be a number >= 0. Received: {name}={factor!r}")
        if not is_number(p) or p < 1:
            errors.append(f"p must be a number >= 1. Received: p={p!r}")
        raise_errors(errors)
        self.factor, self.p = float(factor), float(p)

    def __call__(self, kernel):
        return self.factor * ops.sum(_group_norms(self._groups(kernel), self.p))

    @property
    def l(self):
        """Deprecated: `factor`."""
        warnings.warn(f"{type(self).__name__}.l is deprecated: read .factor.", DeprecationWarning, stacklevel=2)
        return self.factor

    def get_config(self):
        return {"factor": self.factor, "p": self.p}

    @classmethod
    def from_config(cls, config):
        return cls(**config, _from_config=True)  # a file saved with l= loads without a warning


@keras.saving.register_keras_serializable(package="keras_compact")
class FanIn(_UnitPenalty):
    """`factor * sum over units of ||incoming weights of the unit||_p`, a kernel regularizer.

    The fan-in penalty of non-parametric networks (Philipp & Carbonell,
    "Nonparametric Neural Networks", ICLR 2017): a group norm per output unit
    (per filter for convolutions), so training pushes whole units to zero, which
    `keras_compact.pruning.prune` and `shrink` then remove. `p=2` is the group
    lasso; `p=1` the plain L1 penalty.

    Args:
        factor: the strength, a number >= 0 (Keras's word, as in
            `OrthogonalRegularizer`; `l=` still works, deprecated).
        p: the norm, a number >= 1.

    Example:

    >>> layer = keras.layers.Dense(64, activation="relu", kernel_regularizer=FanIn(factor=1e-3))
    """

    def _groups(self, kernel):
        return ops.transpose(ops.reshape(kernel, (-1, kernel.shape[-1])))


@keras.saving.register_keras_serializable(package="keras_compact")
class FanOut(_UnitPenalty):
    """`factor * sum over input units of ||outgoing weights of the unit||_p`, a kernel regularizer.

    The fan-out penalty of non-parametric networks (Philipp & Carbonell 2017):
    put on the layer that reads a layer's units, it pushes each input unit's
    (input channel's) outgoing weights to zero together. After a `Flatten`, each
    flattened input counts as its own unit.

    Args:
        factor: the strength, a number >= 0 (Keras's word, as in
            `OrthogonalRegularizer`; `l=` still works, deprecated).
        p: the norm, a number >= 1.

    Example:

    >>> layer = keras.layers.Dense(10, kernel_regularizer=FanOut(factor=1e-3))
    """

    def _groups(self, kernel):
        rank = len(kernel.shape)
        order = [rank - 2] + [axis for axis in range(rank) if axis != rank - 2]
        return ops.reshape(ops.transpose(kernel, order), (kernel.shape[-2], -1))
