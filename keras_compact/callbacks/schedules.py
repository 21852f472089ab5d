"""Callbacks that schedule dropout rates during training."""

import math
import numbers
import warnings

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import check_rate, is_int, is_number, one_of, raise_errors
from keras_compact.layers.targeted_dropout import TargetedDropout

_SHAPES = ("linear", "polynomial")
_UNITS = ("epoch", "step")


def _ramp(start_value, end_value, shape):
    def schedule(progress):
        if shape == "linear":
            return start_value + (end_value - start_value) * progress
        # Zhu & Gupta (2017), the cubic ramp of tfmot's PolynomialDecay.
        return end_value + (start_value - end_value) * (1.0 - progress) ** 3

    return schedule


def _as_rate_schedule(name, value, shape):
    """`value` -> (callable of progress or position, takes_position) or None."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        rate = check_rate(name, value)
        return (lambda _: rate), False
    if isinstance(value, (tuple, list)) and len(value) == 2:
        for end in value:
            check_rate(name, end)
        return _ramp(float(value[0]), float(value[1]), shape), False
    if callable(value):
        return value, True
    raise ValueError(
        f"{name} must be a rate in [0, 1], a (start, end) pair of rates, or a callable "
        f"position -> rate (tfmot PruningSchedule objects included). Received: {name}={value!r}"
    )


def _rate_from(value):
    """A schedule's output as a float; tfmot schedules return (should_prune, sparsity)."""
    if isinstance(value, (tuple, list)):
        value = value[1]
    return float(np.asarray(value))


class _RampCallback(keras.callbacks.Callback):
    """Position bookkeeping shared by the schedules; a subclass defines `_apply(position)`."""

    def __init__(self, start, end, unit):
        super().__init__()
        raise_errors([one_of("unit", unit, _UNITS)])
        if not is_int(start) or start < 0:
            raise ValueError(f"start must be an integer >= 0. Received: start={start!r}")
        if end is not None and (not is_int(end) or end <= start):
            raise ValueError(f"end must be an integer > start ({start}) or None. Received: end={end!r}")
        self.start, self.end, self.unit = int(start), None if end is None else int(end), unit
        self._step = 0

    def get_config(self):
        """The constructor arguments; `type(self)(**config)` rebuilds the callback.

        A callable schedule is returned as the object itself (not JSON-serialisable)."""
        return dict(self._config)

    def _last(self):
        if self.end is not None:
            return self.end
        epochs = self.params.get("epochs", 1)
        if self.unit == "epoch":
            return max(epochs - 1, self.start + 1)
        return max(epochs * (self.params.get("steps") or 1) - 1, self.start + 1)

    def _progress(self, position):
        return min(max((position - self.start) / (self._last() - self.start), 0.0), 1.0)

    def on_train_begin(self, logs=None):
        # Each fit counts its steps from its first epoch, as it numbers its epochs: a fit resumed with
        # initial_epoch=e starts at step e * steps (learnt at its first epoch, which Keras does not tell before).
        self._step = 0
        self._first_epoch = None
        self._length_due = False

    def _ramps(self):
        """Whether a rate moves with the progress from `start` to `end` (which needs the fit's length)."""
        raise NotImplementedError

    def _check_length(self):
        """Refuses a step ramp whose end `fit` cannot know; at the fit's first epoch, warns when this fit
        cannot finish the ramp. Each subclass's `on_train_begin` calls it once its layers are found."""
        if not self._ramps():
            return
        if self.unit == "step" and self.end is None and not self.params.get("steps"):
            raise ValueError(
                f"{type(self).__name__} with unit='step' needs end here: fit does not know how many steps an "
                "epoch has (a dataset of unknown length), so it cannot end the ramp at the last step. Pass "
                "end=<step>, steps_per_epoch to fit, or unit='epoch'. Received: end=None"
            )
        self._length_due = True

    def _begin_at(self, epoch):
        """This fit's first epoch: where its step count starts, and whether it reaches the ramp's end."""
        self._first_epoch = epoch
        steps, epochs = self.params.get("steps"), self.params.get("epochs", 1)
        if self.unit == "step" and epoch:
            if steps:
                self._step = epoch * steps
            elif self._ramps():
                warnings.warn(
                    f"{type(self).__name__} counts steps from 0 in this fit, which starts at epoch {epoch} of a "
                    "dataset of unknown length: the steps before it are unknown. Pass steps_per_epoch to fit.",
                    stacklevel=3,
                )
        if not self._length_due:
            return
        first = epoch if self.unit == "epoch" else self._step
        last = epochs - 1 if self.unit == "epoch" else (epochs * steps - 1 if steps else None)
        if last is None or last + (self.unit == "step") >= self._last():  # one step short is no matter
            return
        advice = " Use unit='step'." if self.unit == "epoch" and self.end is None else ""
        warnings.warn(
            f"{type(self).__name__} ramps from {self.unit} {self.start} to {self.unit} {self._last()}, but this "
            f"fit runs {self.unit}s {first} to {last}: the ramp gets {self._progress(last):.0%} of the way, and "
            "its rates stop there." + advice,
            stacklevel=3,
        )

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._begin_at(epoch)
        if self.unit == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            self._apply(self._step)
        self._step += 1


class TargetedDropoutRamp(_RampCallback):
    """Ramps the rates of every `TargetedDropout` layer in the model.

    "Ramping targeted dropout" (Gomez et al. 2018) raises the targeted fraction
    from 0 towards the final sparsity during training, so the network drifts
    towards the pruned architecture gradually. Each rate is a constant, a
    `(start, end)` pair ramped from position `start` to `end` (epochs or steps)
    with a `"linear"` or cubic `"polynomial"` shape, or any callable
    `position -> rate`; tfmot's `PolynomialDecay` / `ConstantSparsity` objects
    work as they are (their sparsity becomes the target rate). The current rates
    are added to the logs as `target_rate` and `drop_rate`, so they appear in the
    progress bar and in `History`.

    Args:
        target_rate: the targeted fraction gamma; default ramps 0 -> 0.99.
        drop_rate: the drop probability alpha; None leaves the layers' own.
        schedule: `"linear"` or `"polynomial"` for `(start, end)` pairs.
        start: position at which the ramp starts.
        end: position at which it reaches the end value (default: the last
            epoch or step of `fit`).
        unit: `"epoch"` or `"step"`: what a position counts.

    Example:

    >>> ramp = TargetedDropoutRamp(target_rate=(0.0, 0.9), drop_rate=0.5)
    >>> model.fit(x, y, epochs=10, callbacks=[ramp])  # doctest: +SKIP
    """

    def __init__(self, target_rate=(0.0, 0.99), drop_rate=None, schedule="linear", start=0, end=None, unit="epoch"):
        raise_errors([one_of("schedule", schedule, _SHAPES)])
        super().__init__(start, end, unit)
        self._config = dict(
            target_rate=target_rate, drop_rate=drop_rate, schedule=schedule, start=start, end=end, unit=unit
        )
        self.schedules = {
            name: _as_rate_schedule(name, value, schedule)
            for name, value in (("target_rate", target_rate), ("drop_rate", drop_rate))
        }
        self.rates = {}

    def _ramps(self):
        return any(isinstance(value, (tuple, list)) for value in (self._config["target_rate"], self._config["drop_rate"]))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._applied = None
        self.layers = [layer for layer in _keras_private.sublayers(self.model) if isinstance(layer, TargetedDropout)]
        if not self.layers:
            raise ValueError(
                "TargetedDropoutRamp found no TargetedDropout layer in the model "
                f"{self.model.name!r}; wrap the layers to target with TargetedDropout(...)."
            )
        self._check_length()

    def _apply(self, position):
        for name, entry in self.schedules.items():
            if entry is None:
                continue
            schedule, takes_position = entry
            rate = _rate_from(schedule(position if takes_position else self._progress(position)))
            check_rate(f"{name} (from the schedule at {self.unit} {position})", rate)
            self.rates[name] = rate
        if self.rates != self._applied:
            # On JAX, reading `model` writes the training state back into the variables, and the
            # next step reads them again, with these rates.
            self.model  # noqa: B018
            for layer in self.layers:
                layer.set_rates(**self.rates)
            self._applied = dict(self.rates)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            layer = self.layers[0]
            logs["target_rate"] = float(layer.target_rate.numpy())
            logs["drop_rate"] = float(layer.drop_rate.numpy())


class DropoutSchedule(_RampCallback):
    """Schedules the rate of every ordinary `keras.layers.Dropout` in the model.

    `schedule="curriculum"` is curriculum dropout (Morerio et al., "Curriculum
    Dropout", 2017): the keep probability decays from 1 towards `1 - final_rate`
    as `(1 - keep_final) * exp(-gamma * t) + keep_final`, i.e. the rate rises as
    `final_rate * (1 - exp(-gamma * t))` with `t` counted from `start`;
    `gamma` defaults to `10 / (end - start)`, so that the rate is within
    `exp(-10)` (relative) of `final_rate` at `end`. `"linear"` ramps from 0 to
    `final_rate`; a callable `position -> rate` is used as given. Create the
    Dropout layers with a rate > 0 (Keras gives a rate-0 layer no random state).
    Keras bakes a Dropout rate into the traced training function, so the function
    is retraced when a rate changes: use `unit="epoch"` (the default) unless the
    model is cheap to trace.

    Args:
        final_rate: the rate the schedule rises to (or a callable).
        schedule: `"curriculum"` or `"linear"`.
        gamma: the curriculum's decay constant (default `10 / (end - start)`).
        start, end, unit: as in `TargetedDropoutRamp`.
    """

    def __init__(self, final_rate=0.5, schedule="curriculum", gamma=None, start=0, end=None, unit="epoch"):
        if schedule not in ("curriculum", "linear"):
            raise ValueError(
                f"schedule must be 'curriculum' or 'linear'. Received: schedule={schedule!r}"
            )
        if gamma is not None and (not is_number(gamma) or gamma <= 0):
            raise ValueError(f"gamma must be a number > 0 or None. Received: gamma={gamma!r}")
        super().__init__(start, end, unit)
        if callable(final_rate):
            self._schedule = final_rate
        else:
            final_rate = check_rate("final_rate", final_rate)
            self._schedule = None
        self.final_rate, self.schedule, self.gamma = final_rate, schedule, gamma
        self._config = dict(final_rate=final_rate, schedule=schedule, gamma=gamma, start=start, end=end, unit=unit)
        self.rate = None

    def _ramps(self):
        return self._schedule is None and (self.schedule == "linear" or self.gamma is None)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.layers = [layer for layer in _keras_private.sublayers(self.model)
                       if isinstance(layer, keras.layers.Dropout)]
        if not self.layers:
            raise ValueError(f"DropoutSchedule found no keras.layers.Dropout in the model {self.model.name!r}.")
        without_state = [layer.name for layer in self.layers if not hasattr(layer, "seed_generator")]
        if without_state:
            raise ValueError(
                f"Dropout layers {without_state} were created with rate=0, so Keras gave them no "
                "random state; create them with their final rate (the schedule takes over)."
            )
        self._check_length()

    def rate_at(self, position):
        """The dropout rate at `position` (an epoch or a step)."""
        if self._schedule is not None:
            return _rate_from(self._schedule(position))
        if self.schedule == "linear":
            return self.final_rate * self._progress(position)
        gamma = self.gamma if self.gamma is not None else 10.0 / (self._last() - self.start)
        return self.final_rate * (1.0 - math.exp(-gamma * max(position - self.start, 0)))

    def _apply(self, position):
        rate = self.rate_at(position)
        check_rate(f"rate (from the schedule at {self.unit} {position})", rate)
        if rate == self.rate:
            return
        self.rate = rate
        for layer in self.layers:
            layer.rate = rate
        self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.rate is not None:
            logs["dropout_rate"] = self.rate
