"""Training callbacks that schedule dropout, targeting and pruning rates."""

from keras_compact.callbacks.pruning import GradualPruning
from keras_compact.callbacks.schedules import DropoutSchedule, TargetedDropoutRamp
from keras_compact.callbacks.targeted_channels import TargetedChannels
