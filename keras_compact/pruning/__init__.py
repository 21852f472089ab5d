"""Pruning of weights, units and channel groups: one shot or during training, merging, shrinking and growing."""

from keras_compact.pruning._groups import ChannelGroup, ChannelGroups, channel_groups
from keras_compact.pruning.batch_norm import recalibrate_batch_norm
from keras_compact.pruning.cost import macs
from keras_compact.pruning.grow import grow
from keras_compact.pruning.prune import LayerPruning, PruningMask, PruningReport, prunable, prune, strip, targeted
from keras_compact.pruning.shrink import shrink
