"""How each output of a file is compared with the Keras model's: classes or values.

An output that holds classes along its last axis (a classifier's `[batch, classes]`, a
segmentation map's `[batch, height, width, classes]`, a tagger's `[batch, tokens, tags]`)
is compared by class: the fraction of positions (examples x pixels or tokens) where the
file's arg-max holds the Keras output's largest value. Any other output (a regression, an
image, a single score) is compared by its signal-to-noise ratio in dB,
`10 log10(sum(keras**2) / sum((keras - file)**2))`, as LiteRT's quantizer validation
reports it: scale-free, so one threshold fits outputs of any size. 20 dB is an error of
10% of the output's RMS; a float32 file is near 100 dB or more.
"""

import dataclasses

import numpy as np

from keras_compact._checks import is_number

KINDS = ("classes", "values")


@dataclasses.dataclass(frozen=True)
class OutputReport:
    """How one output of the file compares with the Keras model's.

    Attributes:
        name: the output's name (the file's tensor and the Keras output).
        kind: `"classes"` (compared by arg-max over the last axis, at every position) or
            `"values"` (compared by SNR).
        agreement: for `"classes"`, the fraction of positions whose arg-max agrees
            (None for `"values"`).
        snr_db: signal-to-noise ratio of the file's output against the Keras output, in
            dB (`inf` when they are equal), for either kind.
        max_abs_diff: the largest absolute difference of any value.
    """

    name: str
    kind: str
    agreement: float
    snr_db: float
    max_abs_diff: float

    def __str__(self):
        figure = (f"agreement {self.agreement:.2%}" if self.agreement is not None
                  else f"SNR {self.snr_db:.1f} dB")
        return f"{self.name} ({self.kind}): {figure}, max abs diff {self.max_abs_diff:.3g}"


def default_kind(shape):
    """`"classes"` for an output with more than one entry along its last axis (after the batch), else `"values"`."""
    return "classes" if len(shape) >= 2 and shape[-1] is not None and shape[-1] > 1 else "values"


def output_kinds(names, shapes, given):
    """Each output's kind: `given[name]` where given, else `default_kind` of its Keras shape."""
    given = check_kinds(given, names)
    return [given.get(name, default_kind(shape)) for name, shape in zip(names, shapes)]


def check_kinds(given, names=None):
    """`given` (None or a dict output name -> kind) checked: a ValueError names the argument, the value and
    what is accepted."""
    if given is None:
        return {}
    if not isinstance(given, dict) or not all(kind in KINDS for kind in given.values()):
        raise ValueError(
            f"output_kinds must be a dict from output name to one of {KINDS}. Received: output_kinds={given!r}"
        )
    unknown = sorted(set(given) - set(names)) if names is not None else []
    if unknown:
        raise ValueError(f"output_kinds names outputs the model does not have: {unknown}. Its outputs: {names}")
    return dict(given)


def check_min_snr(min_snr):
    if min_snr is not None and not (is_number(min_snr) and not np.isnan(min_snr)):
        raise ValueError(f"min_snr must be None or a number of dB (20 is 10% error). Received: min_snr={min_snr!r}")


def compare(expected, got, names, kinds, skip=None):
    """One `OutputReport` per output (`expected`: the Keras outputs, `got`: the file's, both in the Keras
    model's order and stacked over examples); `skip`, a bool mask over the examples, leaves some out."""
    reports = []
    for name, kind, keras_output, file_output in zip(names, kinds, expected, got):
        keras_output, file_output = _aligned(name, keras_output, file_output)
        if skip is not None:
            keras_output, file_output = keras_output[~skip], file_output[~skip]
        error = keras_output - file_output
        max_diff = float(np.max(np.abs(error))) if error.size else 0.0
        agreement = None
        if kind == "classes":
            leads = _leads(keras_output, file_output)
            agreement = float(np.mean(leads == 0)) if leads.size else None
        reports.append(OutputReport(name, kind, agreement, snr_db(keras_output, error), max_diff))
    return reports


def _aligned(name, keras_output, file_output):
    """Both as float64 arrays of the Keras output's shape (the file drops or keeps batch axes of 1)."""
    keras_output = np.asarray(keras_output, np.float64)
    file_output = np.asarray(file_output, np.float64)
    if keras_output.size != file_output.size:
        raise ValueError(
            f"The file's output {name!r} holds {file_output.shape} values where the Keras output has "
            f"{keras_output.shape}: they do not pair."
        )
    return keras_output, file_output.reshape(keras_output.shape)


def snr_db(signal, error):
    """`10 log10(sum(signal**2) / sum(error**2))`; `inf` with no error."""
    noise = float(np.sum(np.square(error)))
    if noise == 0:
        return float("inf")
    power = float(np.sum(np.square(signal)))
    return float(10 * np.log10(power / noise)) if power > 0 else float("-inf")


def disagreement_margin(expected, got, kinds, skip=None):
    """Where the first class output's arg-max differs (as `compare` counts it): the median of how far the
    Keras output's top class leads, in the Keras output itself, the class the file chose; None when
    they never differ. A small margin says the two sides split near-ties."""
    for kind, keras_output, file_output in zip(kinds, expected, got):
        if kind != "classes":
            continue
        keras_output, file_output = _aligned("", keras_output, file_output)
        if skip is not None:
            keras_output, file_output = keras_output[~skip], file_output[~skip]
        leads = _leads(keras_output, file_output)
        return float(np.median(leads[leads > 0])) if (leads > 0).any() else None
    return None


def _leads(expected, got):
    """At every position, how far the Keras output's largest value (last axis) leads its value at the
    file's arg-max class (0 where the file chose a top class, ties included)."""
    expected = expected.reshape(-1, expected.shape[-1]) if expected.ndim > 1 else expected.reshape(-1, 1)
    got = got.reshape(expected.shape)
    return expected.max(-1) - np.take_along_axis(expected, got.argmax(-1)[:, None], axis=-1)[:, 0]
