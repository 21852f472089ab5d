"""Training callbacks that schedule dropout, targeting and pruning rates."""

from keras_compact.callbacks.pruning import GradualPruning, TargetedChannels
from keras_compact.callbacks.schedules import DropoutSchedule, TargetedDropoutRamp
