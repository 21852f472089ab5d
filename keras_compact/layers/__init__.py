"""Layers a user puts in a Keras model."""

from keras_compact.layers.feature_buckets import FeatureBuckets
from keras_compact.layers.hadamard_classifier import HadamardClassifier
from keras_compact.layers.projection_layer import ProjectionLayer
from keras_compact.layers.qrnn import QRNN
from keras_compact.layers.quantize_aware import QuantizeAware
from keras_compact.layers.targeted_dropout import TargetedDropout
from keras_compact.layers.text_featurizer import TextFeaturizer
from keras_compact.layers.text_views import TextViews
from keras_compact.layers.token_buckets import TokenBuckets
