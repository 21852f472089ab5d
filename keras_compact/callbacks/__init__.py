"""Training callbacks that schedule dropout and targeting rates."""

from keras_compact.callbacks.schedules import DropoutSchedule, TargetedDropoutRamp
