"""`compress`: from a trained Keras model and its data to a smaller, verified `.tflite` file, in one call.

The stages are the package's own, in the order that keeps accuracy: the channel
groups pruned to a MACs budget and every reader refit by least squares
(`prune(..., granularity="channel", reconstruct=True)`, then `shrink`); a
fine-tune distilled from the unpruned model (`keras.distillation.Distiller`);
the `BatchNormalization` statistics re-estimated; optionally a
quantization-aware fine-tune; then `export`, verified in LiteRT. Each stage's
model is a plain Keras model the user can keep.
"""

import dataclasses
import os
import time

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import check_class_labels, is_int, is_number, keyword_only, one_of, raise_errors
from keras_compact._cloning import check_model
from keras_compact.pruning import macs, prune, recalibrate_batch_norm, shrink
from keras_compact.pruning._channel import CRITERIA
from keras_compact.pruning._criteria import _checked_examples
from keras_compact.quantization import quantize_aware
from tflite_export._export import export

QUANTIZATIONS = (None, "int8", "qat")
CALIBRATION = 2048  # training examples that reconstruction and the statistics read
HIGHEST_RATIO = 0.9  # the largest fraction of every group's channels a budget may remove


@dataclasses.dataclass
class Stage:
    """One stage of `compress`: its model, and what it costs and keeps.

    `accuracy` is the top-1 accuracy on `validation_data` (None without it, or
    for outputs that are not classes); `bytes` and `latency_ms` are the exported
    file's (LiteRT, median single invoke), for the last stage only."""

    name: str
    model: keras.Model
    accuracy: float
    macs: int
    parameters: int
    seconds: float
    bytes: int = None
    latency_ms: float = None


@dataclasses.dataclass
class CompressionReport:
    """What `compress` did: its `stages` in order, the channel `ratio` the budget chose, the `export` report.

    `model` is the last stage's Keras model (what the file computes); `print(report)` is a table;
    `report.plot()` draws accuracy against MACs, stage by stage."""

    stages: list
    ratio: float
    export: object

    @property
    def model(self):
        return self.stages[-1].model

    @property
    def path(self):
        return self.export.path

    def __str__(self):
        first = self.stages[0]
        rows = ["| stage | accuracy | MACs | ratio | parameters | seconds |", "|---|---|---|---|---|---|"]
        for stage in self.stages:
            accuracy = "" if stage.accuracy is None else f"{stage.accuracy:.2%}"
            rows.append(f"| {stage.name} | {accuracy} | {stage.macs:,} | {stage.macs / max(first.macs, 1):.2f}x | "
                        f"{stage.parameters:,} | {stage.seconds:.1f} |")
        rows += ["", f"{self.ratio:.0%} of every prunable group's channels removed; file {self.export.path}: "
                     f"{self.export.bytes:,} bytes, {self.export.latency_ms:.3f} ms per invoke in LiteRT, "
                     f"top-1 agreement with the Keras model {self.export.top1_agreement:.2%}."]
        return "\n".join(rows)

    def plot(self, axis=None):
        """Accuracy against MACs, one point per stage (matplotlib); returns the axis."""
        import matplotlib.pyplot as plt

        if axis is None:
            axis = plt.figure(figsize=(6, 4)).gca()
        points = [(stage.macs / 1e6, stage.accuracy * 100, stage.name) for stage in self.stages
                  if stage.accuracy is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], "o-")
        for x, y, name in points:
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set_xlabel("MACs (millions)")
        axis.set_ylabel("accuracy (%)")
        axis.set_title("compress: stage by stage")
        return axis


@keyword_only
def compress(model, data, path, *, macs_ratio=0.5, criterion="obs", validation_data=None, epochs=2,
             batch_size=64, optimizer="adam", loss=None, temperature=3.0, quantization=None, verbose="auto"):
    """Prunes, reconstructs, fine-tunes by distillation and exports `model`: a smaller verified `.tflite` file.

    1. **Budget**: the fraction of every prunable channel group's channels
       (`channel_groups`) whose removal brings the shrunk network to at most
       `macs_ratio` of `model`'s multiply-accumulates (bisection: uniform
       ratios; the ratio is reported).
    2. **Pruned and reconstructed**: `prune(model, ratio, granularity="channel",
       criterion=criterion, data=..., reconstruct=True)`, then `shrink`: the
       channels chosen by layer-wise Optimal Brain Surgeon (by default), every
       layer reading a pruned tensor refit by least squares on up to 2,048
       training examples.
    3. **Fine-tuned, distilled**: `epochs` of training on `data`, the loss half
       `loss` on the labels and half the KL divergence to `model`'s outputs at
       `temperature` (`keras.distillation.Distiller`; outputs that are
       probabilities are distilled through their logarithm, which softmax at a
       temperature turns back into the tempered distribution); Keras's progress
       bars.
    4. **Statistics re-estimated** (`recalibrate_batch_norm`), where the
       network has `BatchNormalization`.
    5. With `quantization="qat"`, one epoch of quantization-aware training
       (`quantize_aware`), exported int8; `"int8"` exports int8 after
       calibration without it; `None` writes float32.
    6. **Exported** with `tflite_export.export`, verified in LiteRT on the
       validation examples (else on training examples).

    `model` is never changed: the teacher is a copy.

    Args:
        model: a trained functional or Sequential Keras classifier with one input
            and one output.
        data: `(x, y)` NumPy training arrays (integer class labels, or one-hot).
        path: the `.tflite` file to write.
        macs_ratio: the MACs budget, a fraction of `model`'s in (0, 1].
        criterion: how channels are ranked (see `prune`): `"obs"` (the channels
            the refit rebuilds best), `"magnitude"`, `"bn_scale"`, `"onorm"`,
            `"taylor"` or `"dpp"`.
        validation_data: `(x, y)` arrays each stage's accuracy is measured on.
        epochs: fine-tuning epochs (0: none), an integer >= 0.
        batch_size: examples per training step.
        optimizer: for the fine-tunes: a name or a `keras.optimizers.Optimizer`
            (each fine-tune gets a fresh copy of it).
        loss: the training loss on the labels (default: `model`'s compiled loss).
        temperature: the distillation temperature, > 0.
        quantization: `None`, `"int8"` or `"qat"`.
        verbose: Keras's `fit` verbosity; 0 also silences the stage lines.

    Returns:
        A `CompressionReport`: its stages, the ratio chosen, the export report.

    Example:

    >>> (x, y), (x_test, y_test) = keras_compact.datasets.load("digits")
    >>> x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
    ...                         keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
    ...                         keras.layers.Dense(10, activation="softmax")])
    >>> net.compile("adam", "sparse_categorical_crossentropy")
    >>> _ = net.fit(x, y, epochs=5, verbose=0)
    >>> report = compress(net, (x, y), "digits.tflite", macs_ratio=0.5, validation_data=(x_test, y_test),
    ...                   epochs=1, verbose=0)
    >>> report.stages[-1].macs <= 0.5 * report.stages[0].macs
    True
    """
    check_model(model, "compress", graph=True)
    x, y = _arrays(model, data, "data")
    validation = None if validation_data is None else _arrays(model, validation_data, "validation_data")
    _check_arguments(macs_ratio, criterion, epochs, batch_size, temperature, quantization)
    _check_path(path)
    loss = _loss(model, loss)
    say = (lambda text: None) if verbose == 0 else print
    calibration = (x[:CALIBRATION], y[:CALIBRATION])

    stages = [_stage("unpruned", model, validation, 0.0)]
    start = time.perf_counter()
    ratio = _budget(model, macs_ratio, stages[0].macs)
    say(f"compress: {ratio:.0%} of every group's channels for at most {macs_ratio:.2f}x the MACs")
    reconstructed = shrink(prune(model, ratio, granularity="channel", criterion=criterion,
                                 data=calibration, reconstruct=True).model)
    stages.append(_stage("pruned and reconstructed", reconstructed, validation, time.perf_counter() - start))
    say(_line(stages[-1]))
    current = reconstructed
    if epochs:
        start = time.perf_counter()
        current = _distilled(model, current, (x, y), validation, loss, optimizer, temperature, epochs, batch_size,
                             verbose)
        stages.append(_stage("fine-tuned, distilled", current, validation, time.perf_counter() - start))
        say(_line(stages[-1]))
    if any(isinstance(layer, keras.layers.BatchNormalization)
           for layer in _keras_private.sublayers(current, include_self=False)):
        start = time.perf_counter()
        current = recalibrate_batch_norm(current, calibration[0])
        stages.append(_stage("statistics re-estimated", current, validation, time.perf_counter() - start))
        say(_line(stages[-1]))
    if quantization == "qat":
        start = time.perf_counter()
        current = quantize_aware(current)
        current.compile(_fresh(optimizer), loss)
        current.fit(x, y, epochs=1, batch_size=batch_size, verbose=verbose)
        stages.append(_stage("quantization-aware", current, validation, time.perf_counter() - start))
        say(_line(stages[-1]))
    start = time.perf_counter()
    checked = (validation or (x, y))[0][:512]
    report = export(current, path, verify_with=checked,
                    quantization=None if quantization is None else "int8",
                    representative_data=None if quantization is None else calibration[0][:512])
    stages[-1] = dataclasses.replace(stages[-1], bytes=report.bytes, latency_ms=report.latency_ms)
    say(f"compress: wrote {report.path} ({report.bytes:,} bytes) in {time.perf_counter() - start:.1f} s")
    return CompressionReport(stages=stages, ratio=ratio, export=report)


def _arrays(model, data, argument):
    if not (isinstance(data, tuple) and len(data) == 2):
        raise ValueError(f"{argument} must be a pair (x, y) of NumPy arrays. Received: {argument} of type "
                         f"{type(data).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"compress takes a model with one input and one output; {model.name!r} has "
                         f"{len(model.inputs)} and {len(model.outputs)}.")
    x = _checked_examples(np.asarray(data[0]), tuple(model.inputs[0].shape[1:]), "compress")
    y = np.asarray(data[1])
    if len(y) != len(x):
        raise ValueError(f"{argument}'s x and y differ in length: {len(x)} and {len(y)}.")
    classes = model.outputs[0].shape[-1]
    check_class_labels(y if y.ndim == 1 or y.shape[-1] != classes else np.argmax(y, axis=-1), classes, argument)
    return x, y


def _check_arguments(macs_ratio, criterion, epochs, batch_size, temperature, quantization):
    errors = [one_of("criterion", criterion, CRITERIA),
              one_of("quantization", quantization, QUANTIZATIONS)]
    if not is_number(macs_ratio) or not 0 < macs_ratio <= 1:
        errors.append(f"macs_ratio must be a fraction of the model's MACs in (0, 1]. Received: macs_ratio={macs_ratio!r}")
    if not is_int(epochs) or epochs < 0:
        errors.append(f"epochs must be an integer >= 0. Received: epochs={epochs!r}")
    if not is_int(batch_size) or batch_size < 1:
        errors.append(f"batch_size must be an integer >= 1. Received: batch_size={batch_size!r}")
    if not is_number(temperature) or not temperature > 0:
        errors.append(f"temperature must be a number > 0. Received: temperature={temperature!r}")
    raise_errors(errors)


def _check_path(path):
    """Refuses, before minutes of work, a `path` the export could not write."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file name (a str or a path). Received: path={path!r}")
    folder = os.path.dirname(os.fspath(path))
    if folder and not os.path.isdir(folder):
        raise ValueError(f"path's folder does not exist: {folder}. Received: path={os.fspath(path)!r}")


def _loss(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(f"compress fine-tunes on the labels: pass loss=... (for example "
                         f"'sparse_categorical_crossentropy'), or compile {model.name!r} with its loss first.")
    return loss


def _budget(model, macs_ratio, unpruned):
    """The smallest uniform channel ratio (six halvings of [0, 0.9]) whose shrunk network has at most
    `macs_ratio` of the MACs."""
    def ratio_of(fraction):
        return macs(shrink(prune(model, fraction, granularity="channel").model)) / unpruned

    if macs_ratio >= 1:
        return 0.0
    reached = ratio_of(HIGHEST_RATIO)
    if reached > macs_ratio:
        raise ValueError(
            f"macs_ratio={macs_ratio!r} cannot be met: removing {HIGHEST_RATIO:.0%} of every prunable channel "
            f"group's channels leaves {reached:.3f}x {model.name!r}'s MACs (its outputs, inputs and blocked "
            "groups keep theirs). Ask for at least that."
        )
    low, high = 0.0, HIGHEST_RATIO
    for _ in range(6):
        middle = (low + high) / 2
        low, high = (low, middle) if ratio_of(middle) <= macs_ratio else (middle, high)
    return high


class _Distillation(keras.distillation.LogitsDistillation):
    """Logits distillation that also takes softmax outputs: their logarithm is logits up to a constant."""

    def __init__(self, temperature, probabilities):
        super().__init__(temperature=temperature, loss=keras.losses.KLDivergence())
        self.probabilities = probabilities

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        if self.probabilities:
            teacher_outputs, student_outputs = (keras.ops.log(keras.ops.maximum(t, 1e-7))
                                                for t in (teacher_outputs, student_outputs))
        return super().compute_loss(teacher_outputs, student_outputs, **kwargs)


def _fresh(optimizer):
    """A new optimizer for each fine-tune: one that has trained a model's variables cannot train another's."""
    optimizer = keras.optimizers.get(optimizer)
    return optimizer.__class__.from_config(optimizer.get_config())


def _distilled(model, student, train, validation, loss, optimizer, temperature, epochs, batch_size, verbose):
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student, student_loss_weight=0.5,
        distillation_losses=_Distillation(temperature, _probabilities(model, train[0][:64])))
    distiller.compile(_fresh(optimizer), loss=loss)
    distiller.fit(*train, epochs=epochs, batch_size=batch_size, verbose=verbose,
                  validation_data=validation)
    return distiller.student


def _probabilities(model, x):
    """Whether `model`'s outputs on `x` are probabilities (non-negative, summing to 1), not logits."""
    outputs = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64)
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))


def _stage(name, model, validation, seconds):
    return Stage(name=name, model=model, accuracy=None if validation is None else _accuracy(model, *validation),
                 macs=macs(model), parameters=model.count_params(), seconds=seconds)


def _accuracy(model, x, y):
    predicted = np.argmax(np.asarray(model.predict(x, batch_size=256, verbose=0)), axis=-1)
    labels = np.argmax(y, axis=-1) if y.ndim == predicted.ndim + 1 else y
    return float(np.mean(predicted == labels))


def _line(stage):
    accuracy = "" if stage.accuracy is None else f", accuracy {stage.accuracy:.2%}"
    return f"compress: {stage.name}: {stage.macs:,} MACs{accuracy} ({stage.seconds:.1f} s)"
