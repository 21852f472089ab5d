"""The built-in entries of `layer_types`: every layer type keras-compact knows, and what it knows, in one table.

Each row names a family of Keras layer classes and its facets (`layer_types.LayerType`):
`channels` the channel-group handler and `resize` (pruning and `shrink`), `in_chain` and
`elementwise` (unit merging), `macs`, and the quantization-aware plan (`kernel_mode`,
`quantized`, `simulation`, `fuses`, `splits_activation`, `keeps_scale`). Export adds its lowerings to the
same table (`tflite_export._lowering`). Read by `layer_types.lookup` on its first call, once
every module named here is imported.
"""

import keras

from keras_compact.layer_types import define, define_by_name
from keras_compact.layers import QRNN, HadamardClassifier, ProjectionLayer
from keras_compact.layers import _keras_hub_simulation as hub_qat, quantize_aware as qat
from keras_compact.pruning import _groups, _keras_hub, _sequence, cost

layers = keras.layers


def _family(*names, dims=(1, 2, 3)):
    """`keras.layers` classes `Name1D`, `Name2D`, `Name3D` for each name."""
    return tuple(getattr(layers, f"{name}{dim}D") for name in names for dim in dims)


# Layers that make new channels: one kernel operator each in the int8 file.
_KERNEL = dict(channels=_groups._producer, macs=cost.kernel, splits_activation=True,
               fuses=("own_activation", "activation", "batch_norm"))
define(layers.Dense, kernel_mode="per_tensor", **_KERNEL)  # FULLY_CONNECTED takes a per-tensor kernel
define(layers.Conv1D, kernel_mode="per_tensor", **_KERNEL)  # a CONV_2D whose kernel gains an axis
define((layers.Conv2D, layers.Conv3D), kernel_mode="per_channel", **_KERNEL)
# TRANSPOSE_CONV fuses nothing: its activation is an operator of its own, a batch norm after it MUL and ADD.
define((layers.Conv1DTranspose, layers.Conv2DTranspose),
       channels=_groups._producer, macs=cost.transposed, kernel_mode="per_tensor", splits_activation=True)
define(layers.Conv3DTranspose, channels=_groups._producer, macs=cost.transposed)  # float in LiteRT
define(layers.DepthwiseConv2D, channels=_groups._depthwise, macs=cost.depthwise, kernel_mode="depthwise",
       splits_activation=True, fuses=("own_activation", "activation", "batch_norm"))
define(layers.DepthwiseConv1D, macs=cost.depthwise, kernel_mode="per_tensor", splits_activation=True,
       fuses=("own_activation", "activation", "batch_norm"))
define((layers.SeparableConv1D, layers.SeparableConv2D), channels=_groups._separable, macs=cost.separable,
       quantized=qat.separable_kernels, simulation=qat.SEPARABLE, splits_activation=True, fuses=("own_activation",))
define(layers.EinsumDense, macs=cost.einsum)

# Sequence layers: weights as `Matrix` views, masked weight by weight.
define((layers.MultiHeadAttention, layers.GroupQueryAttention), channels=_sequence.attention,
       resize=_sequence.resize, masked_by_matrix=True, macs=cost.attention)
define((layers.MultiHeadAttention, layers.GroupQueryAttention), quantized=qat.attention_kernels,
       simulation=qat.ATTENTION)
define((layers.LSTM, layers.GRU, layers.SimpleRNN), channels=_sequence.recurrent, resize=_sequence.resize,
       masked_by_matrix=True, macs=cost.recurrent, quantized=qat.recurrent_kernels)
for _layer, _simulation in qat.RECURRENT.items():  # unrolled, as their int8 file
    define(_layer, simulation=_simulation)
define(layers.Bidirectional, channels=_sequence.bidirectional, resize=_sequence.resize, masked_by_matrix=True,
       macs=cost.bidirectional, quantized=qat.recurrent_kernels, simulation=qat.BIDIRECTIONAL)
define(layers.Embedding, channels=_sequence.embedding, resize=_sequence.resize, masked_by_matrix=True,
       macs=cost.free, quantized=qat.embedding_table, keeps_scale=True)  # GATHER keeps its table's scale
define(QRNN, macs=cost.qrnn, quantized=qat.qrnn_gates)

# Per-channel weights: folded or kept in float by the converter.
define(layers.BatchNormalization, channels=_groups._batch_norm, in_chain=True, macs=cost.free,
       quantized=qat.no_int8_weights, fuses=("activation",))
define(layers.Normalization, channels=_groups._normalization, macs=cost.free, quantized=qat.no_int8_weights)
define(layers.PReLU, channels=_groups._prelu, macs=cost.free)
define(layers.LayerNormalization, macs=cost.free, quantized=qat.layer_norm_constants, simulation=qat.LAYER_NORM)
define((layers.GroupNormalization, layers.UnitNormalization, layers.RMSNormalization, ProjectionLayer,
        HadamardClassifier), macs=cost.free)

# Layers without weights. Elementwise ones keep channels apart even after a Flatten; padding keeps each channel
# but not a constant one (its border is 0), so unit merging does not fold through it.
_ELEMENTWISE = dict(channels=_groups._channelwise, elementwise=True, in_chain=True)
define((layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU), **_ELEMENTWISE)
define(layers.Activation, splits_activation=True, fuses=("own_activation",))
_IDENTITY_AT_INFERENCE = (layers.Dropout, layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout,
                          layers.ActivityRegularization, layers.Identity)
define(_IDENTITY_AT_INFERENCE, keeps_scale=True, **_ELEMENTWISE)
define(layers.Softmax, channels=_groups._channelwise, in_chain=True)  # refused where it spans the channels
define(layers.Rescaling, channels=_groups._channelwise)
define(_family("SpatialDropout"), channels=_groups._channelwise, in_chain=True, keeps_scale=True)
define(_family("MaxPooling", "GlobalMaxPooling"), channels=_groups._channelwise, in_chain=True, keeps_scale=True)
define(_family("AveragePooling"), channels=_groups._channelwise, in_chain=True, keeps_scale=True)
define(_family("GlobalAveragePooling"), channels=_groups._channelwise, in_chain=True)
define(_family("ZeroPadding", "Cropping"), channels=_groups._channelwise, keeps_scale=True)
define(_family("UpSampling"), channels=_groups._channelwise)
define(layers.Flatten, channels=_groups._flatten, keeps_scale=True)
define(layers.Reshape, channels=_groups._reshape, keeps_scale=True)
define((layers.Permute, layers.RepeatVector), keeps_scale=True)
define(layers.Concatenate, channels=_groups._concatenate)
define(layers.Add, channels=_groups._merge, fuses=("activation",))
define((layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum), channels=_groups._merge)

# KerasHub's transformer blocks, by name (KerasHub is not imported to know them): feed-forward units a group.
define_by_name(_keras_hub.BLOCKS, channels=_keras_hub.transformer_block, resize=_keras_hub.resize,
               masked_by_matrix=True, macs=_keras_hub.macs)
define_by_name(_keras_hub.LOOKUPS, macs=cost.free)
define_by_name(_keras_hub.VIT_ENCODER, channels=_keras_hub.vit_encoder, resize=_keras_hub.vit_encoder_resize,
               masked_by_matrix=True, macs=_keras_hub.vit_encoder_macs)
define_by_name(_keras_hub.VIT_EMBEDDING, macs=_keras_hub.vit_embedding_macs)
# ... and quantization-aware: each block computed as its int8 operators, every tensor between them rounded.
define_by_name(hub_qat.ENCODER, quantized=hub_qat.encoder_weights, simulation=hub_qat.ENCODER_SIMULATION)
define_by_name(hub_qat.VIT_ENCODER, quantized=hub_qat.encoder_weights, simulation=hub_qat.ENCODER_SIMULATION)
define_by_name(hub_qat.POSITION_EMBEDDING, quantized=hub_qat.position_table, keeps_scale=True)
