"""Pruning of weights and units, with the criterion Targeted Dropout trains for."""

from keras_compact.pruning.prune import LayerPruning, PruningMask, PruningReport, prune, strip
from keras_compact.pruning.shrink import shrink
