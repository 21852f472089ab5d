"""Keras models with their own `train_step`."""

from keras_compact.models.hsic_bottleneck import HSICBottleneck
from keras_compact.models.projection_net import ProjectionNet
from keras_compact.models.text import lstm_trainer, projection_network
