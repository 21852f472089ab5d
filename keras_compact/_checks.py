"""The argument checks every layer, model and callback shares.

Predicates (`is_int`, `is_number`, `is_bool`) answer a question; message checks
(`one_of`, `positive_int_errors`, `bool_errors`) return what is wrong, for a constructor to
collect and `raise_errors` to raise at once; checks (`check_rate`,
`check_seed`) raise the package's one kind of error: a `ValueError` naming the
argument, the value received and what is accepted. NumPy scalars count as the
numbers they hold (`np.float32(0.5)` is a rate); NaN and infinities are never
numbers here, bools are never integers, and 0 and 1 are never bools.

Deprecation paths: `renamed_arguments` (an old argument name) and `keyword_only`
(a setting that used to be positional).
"""

import functools
import inspect
import math
import numbers
import warnings

import keras
import numpy as np


def is_int(value):
    """An integer (Python or NumPy) that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_number(value):
    """A finite real number (Python or NumPy) that is not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
    )


def positive_int_errors(**values):
    """The message of each value that is not an integer >= 1, for a constructor's list of errors."""
    return [
        f"{name} must be an integer >= 1. Received: {name}={value!r}"
        for name, value in values.items()
        if not is_int(value) or value < 1
    ]


def is_bool(value):
    """`True`/`False`, NumPy's bools included (as NumPy's numbers count as numbers); never 0 or 1."""
    return isinstance(value, (bool, np.bool_))


def bool_errors(**values):
    """The message of each value that is not True or False, for a constructor's list of errors."""
    return [f"{name} must be True or False. Received: {name}={value!r}" for name, value in values.items()
            if not is_bool(value)]


def one_of(name, value, accepted):
    """The message when `value` is not one of `accepted`, else None (for `raise_errors`)."""
    if value not in accepted:
        return f"{name} must be one of {accepted}. Received: {name}={value!r}"
    return None


def raise_errors(errors):
    """Raises the messages of `errors` (Nones skipped) as one ValueError, joined by "; "."""
    errors = [error for error in errors if error]
    if errors:
        raise ValueError("; ".join(errors))


def check_rate(name, value):
    """Raises unless `value` is a number in [0, 1]; returns it as a float."""
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected a float value between 0 and 1. Received: {name}={value!r}")
    return float(value)


def check_seed(name, value, allow_none=True, bits=32):
    """Raises unless `value` is an integer in [0, 2**bits) (or None when allowed); returns it."""
    if value is None and allow_none:
        return None
    if not is_int(value) or not 0 <= value < 2**bits:
        accepted = "None or an integer" if allow_none else "an integer"
        raise ValueError(f"{name} must be {accepted} in [0, 2**{bits}). Received: {name}={value!r}")
    return int(value)


def draw_seed():
    """A seed from Keras's global generator: repeatable after `keras.utils.set_random_seed`.

    Unlike `np.random.randint`, it leaves NumPy's global stream, which the user's
    own code may depend on, untouched.
    """
    return int(keras.ops.convert_to_numpy(keras.random.randint((), 0, 2**31 - 1)))


def renamed_arguments(owner, function, kwargs, renames, given):
    """Takes the old names of renamed arguments out of `kwargs`.

    `renames` maps each old name to its new one, `given` each new name to the
    value `function` (whose signature holds the defaults) received. Returns
    `(values, names)`: `given` with the values passed under old names in place,
    and for each new name the name the caller used, for error messages. An old
    name used warns (`DeprecationWarning`), except in a call from `from_config`
    (a saved file's config), which marks itself with `_from_config=True` in
    `kwargs`; an old name given beside its new one set to another value than the
    default is a `ValueError`.
    """
    warn = not kwargs.pop("_from_config", False)
    defaults = inspect.signature(function).parameters
    values, names = dict(given), {new: new for new in renames.values()}
    for old, new in renames.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if given[new] is not defaults[new].default and given[new] != defaults[new].default:
            raise ValueError(f"{owner} takes {new} (new) or {old} (deprecated), not both. "
                             f"Received: {new}={given[new]!r}, {old}={value!r}")
        if warn:
            warnings.warn(f"{owner}({old}=...) is deprecated: the argument is now called {new} (the same meaning). "
                          f"Pass {new}={value!r}.", DeprecationWarning, stacklevel=3)
        values[new], names[new] = value, old
    return values, names


def keyword_only(function):
    """Makes `function`'s keyword-only arguments still accept their old positions, with a warning.

    For signatures narrowed to a few positional parameters (`def f(a, b, *, c=1,
    d=2)`): a caller that passed `c` and `d` by position, as the old `f(a, b, c=1,
    d=2)` allowed, gets the same call and a `DeprecationWarning` naming the
    keywords to write. The keyword-only arguments keep their old order.

    >>> @keyword_only
    ... def scaled(x, *, factor=2, offset=0):
    ...     return x * factor + offset
    >>> scaled(1, factor=3)
    3
    """
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
    owner = function.__qualname__.removesuffix(".__init__")
    shown = len(positional) - (positional[:1] == ["self"])

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if len(args) <= len(positional):
            return function(*args, **kwargs)
        extra = args[len(positional):]
        if len(extra) > len(keywords):
            raise TypeError(f"{owner}() takes at most {shown + len(keywords)} arguments by position (the last "
                            f"{len(keywords)} deprecated), but {shown + len(extra)} were given")
        names = keywords[:len(extra)]
        for name in names:
            if name in kwargs:
                raise TypeError(f"{owner}() got multiple values for argument '{name}'")
        warnings.warn(f"{owner}: passing {', '.join(names)} by position is deprecated (keyword-only now, with "
                      "the same meaning). Pass them by name: "
                      f"{', '.join(f'{name}={_short_repr(value)}' for name, value in zip(names, extra))}.",
                      DeprecationWarning, stacklevel=2)
        return function(*args[:len(positional)], **dict(zip(names, extra)), **kwargs)

    # Keras reads a layer's `__init__` both ways (`inspect.signature` and `getfullargspec`): the function's own.
    wrapper.__signature__ = inspect.signature(function)
    return wrapper


def _short_repr(value, most=40):
    """`repr(value)`, or `...` where it is longer than `most` characters (an array, a dataset)."""
    text = repr(value)
    return text if len(text) <= most else "..."


def bind_arguments(method, args, kwargs):
    """`method`'s arguments by name as a caller passed them, positional ones included.

    For models that check what `fit`/`evaluate` receive before Keras does:
    `bind_arguments(keras.Model.fit, args, kwargs)["batch_size"]`.
    """
    return inspect.signature(method).bind_partial(None, *args, **kwargs).arguments


def non_finite_weights(model):
    """The paths of `model`'s weights that hold a NaN or an infinity (a diverged training)."""
    return [
        weight.path
        for weight in model.weights
        if np.dtype(weight.dtype).kind == "f" and not np.isfinite(np.asarray(weight.numpy())).all()
    ]


def describe_non_finite_weights(model, most=4):
    """A clause naming `model`'s non-finite weights, or "" when every weight is finite."""
    paths = non_finite_weights(model)
    if not paths:
        return ""
    shown = ", ".join(paths[:most]) + (f" and {len(paths) - most} more" if len(paths) > most else "")
    return f" The weights {shown} hold NaN or infinite values (a diverged training?)."


def check_class_labels(labels, classes, argument="y"):
    """Raises a ValueError naming `argument` unless `labels` are what a classifier
    over `classes` classes learns from (as Keras's cross-entropies expect): class
    ids `[examples]` or `[examples, 1]`, whole numbers in `[0, classes)`, or rows
    of `classes` non-negative numbers summing to 1 (one-hot or soft labels).
    `classes=None` checks all but the range.
    """
    values = _label_values(labels, argument)
    if values.ndim == 2 and values.shape[1] > 1:
        _check_label_rows(values, classes, argument)
        return
    if values.ndim > 2 or (values.ndim == 2 and values.shape[1] != 1):
        raise ValueError(
            f"{argument} must be class ids of shape (examples,) or (examples, 1), or one-hot rows. "
            f"Received shape: {values.shape}"
        )
    wrong = values != np.round(values)
    if wrong.any():
        raise ValueError(
            f"{argument} must be whole class ids; {values[wrong].flat[0]:g} is not "
            + ("(for one output unit the labels are 0 or 1)." if classes == 2
               else "(soft labels need one column per class).")
        )
    if values.min() < 0 or (classes is not None and values.max() >= classes):
        accepted = f"[0, {classes})" if classes is not None else "[0, classes)"
        raise ValueError(
            f"{argument} must be class ids in {accepted}. Received ids from {values.min():g} to {values.max():g}"
        )


def _label_values(labels, argument):
    """`labels` as a float64 NumPy array, after the checks of what it holds (dense, numeric, some, finite)."""
    if hasattr(labels, "flat_values"):
        raise ValueError(f"{argument} must be dense class labels, not a ragged tensor.")
    try:
        values = np.asarray(keras.ops.convert_to_numpy(labels) if keras.ops.is_tensor(labels) else labels)
    except Exception:  # tf string tensors and other objects NumPy cannot hold
        values = np.asarray(labels.numpy()) if hasattr(labels, "numpy") else np.asarray(labels, dtype=object)
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"{argument} must hold numeric class labels (integer ids or one-hot rows). Received dtype "
            f"{values.dtype}; map class names to ids first, e.g. with keras.layers.StringLookup."
        )
    if values.size == 0:
        raise ValueError(f"{argument} holds no labels. Received shape: {values.shape}")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{argument} holds NaN or infinite labels.")
    return values


def _check_label_rows(values, classes, argument):
    """One-hot or soft label rows: one column per class, non-negative, each summing to 1."""
    if classes is not None and values.shape[1] != classes:
        raise ValueError(
            f"{argument} as one-hot rows must have one column per class ({classes}). "
            f"Received shape: {values.shape}"
        )
    if values.min() < 0 or not np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            f"{argument} rows must be one-hot (or soft) labels: non-negative, each summing to 1. "
            f"Received rows summing to {values.sum(axis=1).min():.3g}..{values.sum(axis=1).max():.3g}"
        )


def _python_values(inputs):
    """Whether `inputs` is, or holds, Python strings, numbers or lists of them rather than tensors."""
    if isinstance(inputs, (str, bytes, numbers.Number)):
        return True
    if isinstance(inputs, (list, tuple)):
        return any(_python_values(entry) for entry in inputs)
    return False


class ChecksCallInputs:
    """Mixin for a layer: Python strings, numbers or lists as inputs raise a ValueError that says
    what the layer takes (`expected_inputs`), instead of Keras's "Only input tensors may be passed
    as positional arguments". Lists of tensors (`[ids, weights]`) pass."""

    expected_inputs = "a tensor or a NumPy array"
    convert_hint = "np.asarray(values, 'float32')"

    def __call__(self, inputs, *args, **kwargs):
        if _python_values(inputs):
            shown = repr(inputs)
            raise ValueError(
                f"{type(self).__name__} {self.name!r} takes {self.expected_inputs}. Received a Python "
                f"{type(inputs).__name__}: {shown[:60]}{'...' if len(shown) > 60 else ''}. Convert it first: "
                f"{self.convert_hint}."
            )
        return super().__call__(inputs, *args, **kwargs)
