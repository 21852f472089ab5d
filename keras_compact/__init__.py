"""keras-compact: small, fast on-device networks for Keras 3."""

from keras_compact import callbacks, datasets, layer_types, layers, models, ops, pruning, quantization, regularizers
from keras_compact.layer_types import register_layer, unregister_layer
from keras_compact.layers import HadamardClassifier, ProjectionLayer, TargetedDropout, TextFeaturizer
from keras_compact.models import HSICBottleneck, ProjectionNet

__version__ = "0.1.0"
