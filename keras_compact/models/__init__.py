"""Keras models that compute their own loss (`compute_loss`); Keras runs the training loop."""

from keras_compact.models.hsic_bottleneck import HSICBottleneck
from keras_compact.models.projection_net import ProjectionNet
from keras_compact.models.text import bag_of_ngrams, lstm_trainer, projection_network, sequence_network
