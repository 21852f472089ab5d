"""Families of Keras layers by what they do to a tensor, for the modules that sort layers.

`quantization.KEEP_SCALE` (layers whose output keeps its input's int8 scale) and
the channel groups' channel-wise layers (`pruning._groups`) are built from these.
"""

import keras

MAX_POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
AVERAGE_POOLING = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
GLOBAL_MAX_POOLING = (keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
                      keras.layers.GlobalMaxPooling3D)
GLOBAL_AVERAGE_POOLING = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                          keras.layers.GlobalAveragePooling3D)
PADDING_AND_CROPPING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
                        keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D)
SPATIAL_DROPOUT = (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D)
# Identity at inference: noise, dropout and regularizers that only act in training.
IDENTITY_AT_INFERENCE = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                         keras.layers.AlphaDropout, keras.layers.ActivityRegularization, keras.layers.Identity)
