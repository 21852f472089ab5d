"""keras-compact: small, fast on-device networks for Keras 3."""

from keras_compact import datasets, layers, models, ops
from keras_compact.layers import ProjectionLayer
from keras_compact.models import ProjectionNet

__version__ = "0.1.0"
