"""`macs` counts attention, recurrent, einsum, transposed, separable and depthwise layers; it never counts a
layer with weights as 0 in silence."""

import warnings

import keras
import pytest

from keras_compact.pruning import macs


def _silently(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return macs(model)


def test_a_transformer_block_counts_its_projections_its_two_products_and_its_mlp():
    tokens = keras.Input((10, 64))
    attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=16)(tokens, tokens)
    normed = keras.layers.LayerNormalization()(keras.layers.Add()([tokens, attended]))
    hidden = keras.layers.Dense(128, activation="gelu")(normed)
    model = keras.Model(tokens, keras.layers.Dense(64)(hidden))
    projections = 4 * (10 * 64 * 4 * 16)  # query, key, value, output
    products = 4 * 10 * 10 * (16 + 16)  # per head: query x key, scores x value
    assert _silently(model) == projections + products + 10 * 64 * 128 + 10 * 128 * 64


def test_attention_by_keyword_with_a_shorter_value_and_grouped_query_attention():
    query, memory = keras.Input((6, 32)), keras.Input((9, 24))
    cross = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, value_dim=4)(query=query, value=memory)
    assert _silently(keras.Model([query, memory], cross)) == (
        6 * 32 * 2 * 8 + 9 * 24 * 2 * 8 + 9 * 24 * 2 * 4 + 6 * 2 * 4 * 32 + 2 * 6 * 9 * (8 + 4))
    grouped = keras.layers.GroupQueryAttention(head_dim=8, num_query_heads=4, num_key_value_heads=2)(query, query)
    assert _silently(keras.Model(query, grouped)) == (
        6 * 32 * 4 * 8 + 2 * 6 * 32 * 2 * 8 + 6 * 4 * 8 * 32 + 4 * 6 * 6 * (8 + 8))


@pytest.mark.parametrize("layer, gates", [(keras.layers.LSTM, 4), (keras.layers.GRU, 3), (keras.layers.SimpleRNN, 1)])
def test_a_recurrent_layer_costs_its_kernels_at_every_step(layer, gates):
    model = keras.Sequential([keras.Input((20, 8)), layer(32), keras.layers.Dense(5)])
    assert _silently(model) == 20 * (8 * 32 * gates + 32 * 32 * gates) + 32 * 5


def test_a_bidirectional_lstm_counts_both_directions():
    model = keras.Sequential([keras.Input((20, 8)), keras.layers.Bidirectional(keras.layers.LSTM(16))])
    assert _silently(model) == 2 * 20 * (8 * 64 + 16 * 64)


def test_einsum_transposed_separable_and_depthwise_layers():
    einsum = keras.Sequential([keras.Input((5, 8)), keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 12))])
    assert _silently(einsum) == 5 * 12 * 8
    transposed = keras.Sequential([keras.Input((4, 4, 4, 2)), keras.layers.Conv3DTranspose(3, 2, strides=2)])
    assert _silently(transposed) == 4 * 4 * 4 * (2 * 2 * 2 * 3 * 2)
    separable = keras.Sequential([keras.Input((16, 4)), keras.layers.SeparableConv1D(8, 3)])
    assert _silently(separable) == 14 * (3 * 4 + 4 * 8)
    depthwise = keras.Sequential([keras.Input((16, 4)), keras.layers.DepthwiseConv1D(3)])
    assert _silently(depthwise) == 14 * 3 * 4


class _Block(keras.layers.Layer):
    """A subclassed block: its Dense runs inside `call`, out of the model's graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(4)

    def call(self, inputs):
        return self.inner(inputs)


def test_layers_with_weights_it_cannot_count_are_named_in_a_warning():
    model = keras.Sequential([keras.Input((6,)), _Block(name="block"), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match=r"no multiply-accumulates for layer\(s\) 'block' \(_Block\)"):
        assert macs(model) == 4 * 2
    unknown_length = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, name="lstm")])
    with pytest.warns(UserWarning, match=r"'lstm' \(LSTM\).*a recurrent layer needs a known sequence length"):
        assert macs(unknown_length) == 0


def test_lookups_and_normalizations_are_free_without_a_warning():
    tokens = keras.Input((7,), dtype="int32")
    embedded = keras.layers.Embedding(100, 8)(tokens)
    normed = keras.layers.BatchNormalization()(keras.layers.LayerNormalization()(embedded))
    assert _silently(keras.Model(tokens, keras.layers.Dense(3)(normed))) == 7 * 8 * 3


def test_a_quantization_aware_model_costs_what_its_float_model_does():
    from keras_compact.quantization import quantize_aware

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    assert _silently(quantize_aware(model)) == _silently(model) == 5328


def test_this_packages_layers_count_without_a_warning():
    from keras_compact import HadamardClassifier, ProjectionLayer
    from keras_compact.layers import QRNN

    sequence = keras.Sequential([keras.Input((12, 6)), QRNN(8, kernel_size=2), keras.layers.Flatten(),
                                 HadamardClassifier(4)])
    assert _silently(sequence) == 12 * 2 * (2 * 6 * 3 * 8)  # forward and backward gates; the classifier adds
    projection = keras.Sequential([keras.Input((16,)), ProjectionLayer(4, 8), keras.layers.Dense(3)])
    assert _silently(projection) == 32 * 3
