"""Attention heads, recurrent units and embedding dimensions as channel groups: pruned, shrunk exactly.

The models are what users bring: a transformer block (`MultiHeadAttention` over an `Embedding`, residual adds,
`LayerNormalization`, an MLP), grouped-query attention, text classifiers with `LSTM`, `GRU`, `SimpleRNN` and
`Bidirectional` layers (padded ids with `mask_zero=True`), built functionally, as list-built Sequentials and with
`.add()`. Each pruned model is shrunk and must compute what the masked model computes.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_compact.callbacks import GradualPruning
from keras_compact.pruning import PruningMask, channel_groups, macs, prunable, prune, shrink, strip

VOCAB, LENGTH = 50, 7


def _ids(rng, count=6, padded=True):
    ids = rng.integers(1, VOCAB, size=(count, LENGTH))
    if padded:  # the last positions of each example are padding, as a tokenizer leaves them
        for row, length in zip(ids, rng.integers(2, LENGTH + 1, size=count)):
            row[length:] = 0
    return ids.astype("int32")


def _transformer(heads=4, key_dim=4, width=16, hidden=32, grouped=False):
    ids = keras.Input((LENGTH,), dtype="int32", name="ids")
    x = keras.layers.Embedding(VOCAB, width, name="embed")(ids)
    if grouped:
        attention = keras.layers.GroupQueryAttention(head_dim=key_dim, num_query_heads=heads,
                                                     num_key_value_heads=heads // 2, name="attention")
    else:
        attention = keras.layers.MultiHeadAttention(heads, key_dim, name="attention")
    x = keras.layers.LayerNormalization(name="norm_1")(keras.layers.Add()([x, attention(x, x)]))
    h = keras.layers.Dense(hidden, activation="gelu", name="mlp_in")(x)
    x = keras.layers.LayerNormalization(name="norm_2")(keras.layers.Add()([x, keras.layers.Dense(width, name="mlp_out")(h)]))
    outputs = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(ids, outputs, name="transformer")


def _same(pruned, small, x):
    np.testing.assert_allclose(small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def _group(groups, producer, of="channels"):
    return next(group for group in groups if producer in group.producers and group.of == of)


def test_transformer_heads_and_mlp_units_are_groups_and_the_residual_stream_stays(rng):
    model = _transformer()
    groups = channel_groups(model)
    heads = _group(groups, "attention", "heads")
    assert (heads.size, heads.prunable, heads.members) == (4, True, ("attention",))
    assert _group(groups, "mlp_in").prunable
    residual = _group(groups, "embed")
    assert not residual.prunable and "norm_1" in residual.reason and "normalises over the channels" in residual.reason
    assert "4 heads" in str(groups)


def test_half_the_heads_and_half_the_mlp_shrink_to_what_the_masked_model_computes(rng):
    model = _transformer()
    report = prune(model, {"heads": 0.5, "channels": 0.5}, granularity="channel")
    assert sorted((g.size, g.pruned) for g in report.groups) == [(4, 2), (32, 16)]
    small = shrink(report.model)
    assert small.get_layer("attention").num_heads == 2 and small.get_layer("mlp_in").units == 16
    x = _ids(rng)
    _same(report.model, small, x)
    assert len(small.get_weights()) == len(model.get_weights())  # plain layers again, no masks
    # The heads' projections and the MLP are most of the block: macs counts both.
    assert 0.4 < macs(small) / macs(model) < 0.75


def test_heads_only_leave_the_mlp_whole(rng):
    report = prune(_transformer(), {"heads": 0.75}, granularity="channel")
    small = shrink(report.model)
    assert small.get_layer("attention").num_heads == 1 and small.get_layer("mlp_in").units == 32
    _same(report.model, small, _ids(rng))


def test_grouped_query_attention_loses_whole_key_value_heads_with_their_query_heads(rng):
    model = _transformer(heads=4, grouped=True)
    heads = _group(channel_groups(model), "attention", "heads")
    assert heads.size == 2  # key/value heads; each carries two query heads
    report = prune(model, {"heads": 0.5}, granularity="channel")
    small = shrink(report.model)
    layer = small.get_layer("attention")
    assert (layer.num_query_heads, layer.num_key_value_heads) == (2, 1)
    _same(report.model, small, _ids(rng))


@pytest.mark.parametrize("value_dim", [None, pytest.param(3, marks=pytest.mark.tensorflow_backend(
    "Keras's attention on JAX fails for a value_dim other than key_dim, unpruned too"))])
def test_cross_attention_between_two_inputs(value_dim, rng):
    query, context = keras.Input((5, 6), name="query"), keras.Input((3, 4), name="context")
    q = keras.layers.Dense(8, name="q_proj")(query)
    c = keras.layers.Dense(8, name="c_proj")(context)
    attended = keras.layers.MultiHeadAttention(4, 2, value_dim=value_dim, name="cross")(q, c, key=c)
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(attended))
    model = keras.Model([query, context], outputs)
    report = prune(model, 0.5, granularity="channel")
    small = shrink(report.model)
    assert small.get_layer("cross").num_heads == 2
    assert small.get_layer("c_proj").units == 4 and small.get_layer("q_proj").units == 4
    x = [rng.normal(size=(4, 5, 6)).astype("float32"), rng.normal(size=(4, 3, 4)).astype("float32")]
    _same(report.model, small, x)


@pytest.mark.parametrize("causal", [False, True], ids=["padding_mask", "padding_and_causal_masks"])
def test_attention_over_padded_ids_shrinks_to_what_the_masked_model_computes(causal, rng):
    # The wrapper gives the attention layer the query and value padding masks Keras gives it unwrapped
    # (without them the keys at the padding are attended to: the masked model differed by 0.1).
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 16, mask_zero=True)(ids)
    attended = keras.layers.MultiHeadAttention(4, 4, name="attention")(x, x, use_causal_mask=causal)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([x, attended]))
    model = keras.Model(ids, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x)))
    report = prune(model, {"heads": 0.5}, granularity="channel")
    small = shrink(report.model)
    assert small.get_layer("attention").num_heads == 2
    _same(report.model, small, _ids(rng))


def _lstm_by_add():
    model = keras.Sequential(name="by_add")
    model.add(keras.Input((LENGTH,), dtype="int32"))
    model.add(keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="embed"))
    model.add(keras.layers.LSTM(6, name="lstm"))
    model.add(keras.layers.Dense(3, name="classes"))
    return model


def _bidirectional_gru(merge_mode):
    return keras.Sequential([
        keras.Input((LENGTH,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="embed"),
        keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True), merge_mode=merge_mode, name="bi"),
        keras.layers.SimpleRNN(4, name="simple"),
        keras.layers.Dense(3, name="classes"),
    ], name=f"bi_{merge_mode}")


@pytest.mark.parametrize("make, sizes", [
    (_lstm_by_add, {"embed": ("output_dim", 4), "lstm": ("units", 3)}),
    (lambda: _bidirectional_gru("concat"), {"embed": ("output_dim", 4), "simple": ("units", 2)}),
    (lambda: _bidirectional_gru("sum"), {"embed": ("output_dim", 4), "simple": ("units", 2)}),
], ids=["lstm_by_add", "bidirectional_concat", "bidirectional_sum"])
def test_recurrent_units_and_embedding_dimensions_shrink_exactly_on_padded_ids(make, sizes, rng):
    model = make()
    report = prune(model, 0.5, granularity="channel")
    small = shrink(report.model)
    for name, (key, size) in sizes.items():
        assert small.get_layer(name).get_config()[key] == size
    x = _ids(rng)
    _same(report.model, small, x)
    # The padding mask reaches the wrapped recurrent layers: masking changes what they compute.
    assert not np.allclose(report.model.predict(x, verbose=0), report.model.predict(np.where(x == 0, 1, x), verbose=0))


def test_bidirectional_halves_keep_their_own_units(rng):
    report = prune(_bidirectional_gru("concat"), 0.4, granularity="channel")
    small = shrink(report.model)
    bi = small.get_layer("bi")
    assert bi.forward_layer.units == bi.backward_layer.units == 3
    _same(report.model, small, _ids(rng))


def test_pruned_sequence_models_save_reload_and_shrink(tmp_path, rng):
    report = prune(_transformer(), {"heads": 0.5, "channels": 0.5}, granularity="channel")
    path = tmp_path / "pruned.keras"
    report.model.save(path)
    loaded = keras.saving.load_model(path)
    x = _ids(rng)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), report.model.predict(x, verbose=0), atol=1e-6)
    assert sum(isinstance(layer, PruningMask) for layer in loaded.layers) == sum(
        isinstance(layer, PruningMask) for layer in report.model.layers)
    _same(loaded, shrink(loaded), x)


def test_fine_tuning_keeps_the_pruned_heads_and_units_at_zero(rng):
    model = _lstm_by_add()
    report = prune(model, 0.5, granularity="channel")
    pruned = report.model
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _ids(rng, 16), rng.integers(0, 3, 16)
    pruned.fit(x, y, epochs=2, batch_size=8, verbose=0)
    _same(pruned, shrink(pruned), x)
    plain = strip(pruned)
    assert not any(isinstance(layer, PruningMask) for layer in plain.layers)


@pytest.mark.parametrize("criterion", ["onorm", pytest.param("taylor", marks=pytest.mark.tensorflow_backend(
    "criterion='taylor' differentiates with TensorFlow"))])
def test_data_criteria_rank_heads_by_magnitude_and_channels_by_data(criterion, rng):
    model = _transformer()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _ids(rng, 16), rng.integers(0, 3, 16)
    report = prune(model, {"heads": 0.5, "channels": 0.5}, granularity="channel", criterion=criterion, data=(x, y))
    by_magnitude = prune(model, {"heads": 0.5}, granularity="channel")
    attention = [layer for layer in report.model.layers if getattr(layer, "target", None) is not None
                 and layer.target.name == "attention"][0]
    expected = [layer for layer in by_magnitude.model.layers if getattr(layer, "target", None) is not None
                and layer.target.name == "attention"][0]
    # Heads have no tensor a probe reads: they go by magnitude whatever the criterion.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(attention.masks[6]),
                                  keras.ops.convert_to_numpy(expected.masks[6]))
    _same(report.model, shrink(report.model), x)


def test_gradual_pruning_by_channel_reaches_heads_and_units(rng):
    model = prunable(_transformer(), granularity="channel")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _ids(rng, 32), rng.integers(0, 3, 32)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0,
                        callbacks=[GradualPruning(0.5, begin_step=0, end_step=6, frequency=2)])
    assert history.history["sparsity"][-1] == pytest.approx(0.5, abs=0.05)
    small = shrink(model)
    assert small.get_layer("attention").num_heads == 2
    _same(model, small, x)


def test_layers_that_cannot_be_mapped_say_why():
    sequence = keras.Input((LENGTH, 6))
    scored, scores = keras.layers.MultiHeadAttention(2, 3, name="scored")(sequence, sequence,
                                                                         return_attention_scores=True)
    states = keras.layers.LSTM(4, return_state=True, name="stateful")(keras.layers.Dense(6, name="d")(scored))
    outputs = keras.layers.Dense(2)(keras.layers.Concatenate()([states[0], keras.layers.Flatten()(scores)]))
    groups = channel_groups(keras.Model(sequence, outputs))
    assert "returns its attention scores" in str(groups)
    assert "returns its states" in groups.blocked["d"]


def test_bad_sparsities_name_what_is_accepted():
    model = _transformer()
    with pytest.raises(ValueError, match=r"\[0, 1\) for granularity='channel': every group keeps one of its heads. "
                                         r"Received: sparsity\['heads'\]=1.0"):
        prune(model, {"heads": 1.0}, granularity="channel")
    with pytest.raises(ValueError, match=r"maps \('channels', 'heads'\) to fractions. Received: sparsity=\{'units'"):
        prune(model, {"units": 0.5}, granularity="channel")
    with pytest.raises(ValueError, match="is for granularity='channel'"):
        prune(model, {"heads": 0.5}, granularity="unit")
    with pytest.raises(ValueError, match="between 0 and 1. Received: sparsity\\['channels'\\]=-0.5"):
        prune(model, {"channels": -0.5}, granularity="channel")
    with pytest.raises(ValueError, match="asks for heads of 'by_add' to be pruned, and it has no prunable group of heads"):
        prune(_lstm_by_add(), {"heads": 0.5}, granularity="channel")
    with pytest.raises(ValueError, match="by channel only. Received: granularity='weight'"):
        PruningMask(keras.layers.LSTM(3))


@pytest.mark.tensorflow_backend("exports in this process; export from JAX is tested in test_backends.py")
def test_pruned_and_shrunk_sequence_models_export_and_agree_in_litert(tmp_path, rng):
    from tflite_export import export

    x = _ids(rng, 8)
    transformer = shrink(prune(_transformer(), {"heads": 0.5, "channels": 0.5}, granularity="channel").model)
    report = export(transformer, tmp_path / "transformer.tflite", verify_with=x)
    assert report.builtin_only and report.top1_agreement == 1.0 and report.operators["BATCH_MATMUL"] == 2
    masked = prune(_lstm_by_add(), 0.5, granularity="channel").model  # the wrappers are stripped on export
    report = export(masked, tmp_path / "lstm.tflite", verify_with=x)
    assert report.builtin_only and report.top1_agreement == 1.0


@pytest.mark.parametrize("wrap", ["prunable", "targeted", "PruningMask by hand", "TargetedDropout by hand"])
def test_wrappers_pass_an_embeddings_padding_mask_on_to_the_recurrent_layer(wrap, rng):
    def text_model(hidden):
        return keras.Sequential([keras.Input((LENGTH,), dtype="int32"), keras.layers.Embedding(VOCAB, 8, mask_zero=True),
                                 hidden, keras.layers.LSTM(4), keras.layers.Dense(3, name="out")])

    model = text_model(keras.layers.Dense(8, name="hidden"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = _wrapped(wrap, model, text_model)
    # Keras warns that a wrapper "will destroy the mask information" unless it says it supports masking.
    assert not [w for w in caught if "destroy the mask" in str(w.message)]
    x = _ids(rng)
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def _wrapped(wrap, model, text_model):
    from keras_compact import TargetedDropout
    from keras_compact.pruning import targeted

    if wrap == "prunable":
        wrapped = prunable(model, layers=["hidden"])
    elif wrap == "targeted":
        wrapped = targeted(model, 0.5, 0.5, layers=["hidden"])
    else:  # built by hand with .add(): no clone carries the mask to the LSTM for it
        dense = keras.layers.Dense(8, name="hidden")
        wrapper = PruningMask(dense) if wrap.startswith("PruningMask") else TargetedDropout(dense, 0.5, 0.5)
        wrapped = text_model(wrapper)
        wrapped.layers[1].layer.set_weights(model.layers[1].get_weights())
        for index in (0, 2, 3):
            wrapped.layers[index].set_weights(model.layers[index].get_weights())
    return wrapped


# KerasHub is in the test extras (CI installs it); a machine without it skips these tests, saying so.
def _keras_hub_text_model():
    keras_hub = pytest.importorskip("keras_hub")
    ids = keras.Input((LENGTH,), dtype="int32", name="ids")
    x = keras.layers.Embedding(VOCAB, 16, name="embed")(ids)
    x = keras_hub.layers.TransformerEncoder(32, 4, name="encoder")(x)
    x = keras_hub.layers.TransformerDecoder(24, 4, activation="gelu", name="decoder")(x, x)
    outputs = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(ids, outputs, name="hub_text")


def _block_macs(length, width, heads_width, hidden, attentions):
    """One KerasHub block: each attention's four projections and its two products, then the feed-forward pair."""
    return attentions * (4 * length * width * heads_width + 2 * length * length * heads_width) + 2 * length * width * hidden


@pytest.mark.tensorflow_backend("KerasHub's blocks are the same on every backend; JAX runs the Keras layers' tests")
def test_keras_hub_transformer_blocks_lose_feed_forward_units_and_shrink_to_the_masked_model(rng, tmp_path):
    model = _keras_hub_text_model()
    groups = channel_groups(model)
    assert [(group.producers, group.size) for group in groups.prunable] == [(("encoder",), 32), (("decoder",), 24)]
    assert "TransformerEncoder 'encoder' normalises its residual stream" in groups.blocked["embed"]
    assert not [group for group in groups if group.of == "heads"]  # KerasHub ties key_dim to hidden_dim / num_heads
    full = _block_macs(LENGTH, 16, 16, 32, 1) + _block_macs(LENGTH, 16, 16, 24, 2) + 16 * 3
    assert macs(model) == full

    masked = prune(model, 0.5, granularity="channel").model
    small = shrink(masked)
    assert (small.get_layer("encoder").intermediate_dim, small.get_layer("decoder").intermediate_dim) == (16, 12)
    x = _ids(rng, padded=False)
    _same(masked, small, x)
    assert macs(small) == _block_macs(LENGTH, 16, 16, 16, 1) + _block_macs(LENGTH, 16, 16, 12, 2) + 16 * 3
    path = tmp_path / "masked.keras"
    masked.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-6)


@pytest.mark.tensorflow_backend("KerasHub's blocks are the same on every backend; JAX runs the Keras layers' tests")
def test_a_keras_hub_bert_backbone_under_a_head_is_pruned_shrunk_counted_and_exported(rng, tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    from tflite_export import export

    from keras_compact.quantization import quantize_aware

    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=4, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=LENGTH)
    inputs = {name: keras.Input((LENGTH,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    model = keras.Model(inputs, keras.layers.Dense(3, name="intent")(backbone(inputs)["pooled_output"]))
    groups = channel_groups(model)
    assert [(group.producers, group.size) for group in groups.prunable] == [
        (("transformer_layer_0",), 32), (("transformer_layer_1",), 32), (("pooled_dense",), 16)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # counted on the 7 tokens it is called on, every layer known
        assert macs(model) == 2 * _block_macs(LENGTH, 16, 16, 32, 1) + 16 * 16 + 16 * 3

    masked = prune(model, 0.5, granularity="channel").model
    small = shrink(masked)
    x = {"token_ids": _ids(rng), "segment_ids": np.zeros((6, LENGTH), "int32")}
    x["padding_mask"] = (x["token_ids"] > 0).astype("int32")
    _same(masked, small, x)
    assert macs(small) == 2 * _block_macs(LENGTH, 16, 16, 16, 1) + 16 * 8 + 8 * 3
    report = export(small, tmp_path / "bert.tflite", verify_with=x)
    assert report.builtin_only and report.top1_agreement == 1.0

    # Quantization-aware: each TransformerEncoder computed as its int8 operators (attention, LayerNorms,
    # FULLY_CONNECTEDs, GELU, residual ADDs), every tensor between them rounded. The embeddings' Add of three
    # has no range for its first partial sum: representative_data calibrates it. Measured on 64 padded
    # sentences, pruned and shrunk (and unpruned): fully int8, the softmax within 1 step of the model's.
    head = small.get_layer("intent")
    probabilities = keras.Model(small.inputs, keras.layers.Softmax()(head.output))
    qat = quantize_aware(probabilities)
    many = {"token_ids": _ids(rng, count=64), "segment_ids": np.zeros((64, LENGTH), "int32")}
    many["padding_mask"] = (many["token_ids"] > 0).astype("int32")
    qat(many, training=True)
    report = export(qat, tmp_path / "bert_int8.tflite", quantization="int8", verify_with=many,
                    representative_data=many, min_agreement=None)
    assert report.operators["DEQUANTIZE"] == 1 and report.operators["GELU"] == 2, report.operators
    assert report.max_abs_diff <= 1 / 256 + 1e-6
    assert report.top1_agreement >= 0.95


@pytest.mark.tensorflow_backend("KerasHub's blocks are the same on every backend; JAX runs the Keras layers' tests")
def test_a_keras_hub_vit_backbone_under_a_head_loses_mlp_units_in_every_block_and_exports(rng, tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    from tflite_export import export

    from keras_compact.quantization import quantize_aware

    backbone = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=4,
                                            hidden_dim=16, mlp_dim=32, include_rescaling=False)
    images = keras.Input((16, 16, 3))
    model = keras.Model(images, keras.layers.Dense(3, name="digit")(backbone(images)[:, 0]))
    groups = channel_groups(model)
    # One ViTEncoder holds both blocks and one mlp_dim: their MLP units are one group.
    assert [(group.producers, group.size) for group in groups.prunable] == [(("vit_encoder",), 32)]
    tokens, patch = 17, 4 * 4 * 3 * 16
    full = 2 * _block_macs(tokens, 16, 16, 32, 1) + (tokens - 1) * patch + 16 * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert macs(model) == full

    masked = prune(model, 0.5, granularity="channel").model
    small = shrink(masked)  # KerasHub's patch embedding, whose config its constructor refuses, copied too
    assert small.layers[1].get_layer("vit_encoder").mlp_dim == 16
    x = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    _same(masked, small, x)
    assert macs(small) == 2 * _block_macs(tokens, 16, 16, 16, 1) + (tokens - 1) * patch + 16 * 3
    report = export(small, tmp_path / "vit.tflite", verify_with=x)
    assert report.builtin_only and report.top1_agreement == 1.0
    # Its ViTEncoder trains quantization-aware (below); its patch embedding does not: the converter crashed on
    # the LayerNormalization after the class token's row (see keras_compact/layers/_keras_hub_simulation.py).
    with pytest.raises(ValueError, match="ViTPatchingAndEmbedding 'vit_patching_and_embedding' has weights"):
        quantize_aware(small)


@pytest.mark.tensorflow_backend("KerasHub's blocks are the same on every backend; JAX runs the Keras layers' tests")
def test_a_keras_hub_vit_encoder_trains_as_its_int8_operators_compute_it(rng, tmp_path):
    pytest.importorskip("keras_hub")  # in the test extras; skips only where someone installed without them
    from keras_hub.src.models.vit.vit_layers import ViTEncoder
    from tflite_export import export

    from keras_compact.quantization import quantize_aware

    # Patches embedded by a Dense, then one pre-norm block and a LayerNormalization in one ViTEncoder. Measured
    # (seed 0, one block): fully int8, the softmax 4 steps from the quantization-aware model's (a whole block
    # of attention, LayerNorms and residual ADDs adds up the 0-3 steps of its parts), classes the same.
    keras.utils.set_random_seed(0)
    images = keras.Input((16, 16, 3))
    x = keras.layers.Dense(16, name="patches")(keras.layers.Reshape((16, 48))(images))
    x = ViTEncoder(num_layers=1, num_heads=4, hidden_dim=16, mlp_dim=32, name="encoder")(x)
    model = keras.Model(images, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))
    qat = quantize_aware(model)
    assert "block_0_attention_scores" in qat.get_layer("encoder_quant").step_names
    data = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    qat(data, training=True)
    report = export(qat, tmp_path / "encoder.tflite", quantization="int8", verify_with=data, min_agreement=None)
    assert report.operators["DEQUANTIZE"] == 1 and report.operators["GELU"] == 1, report.operators
    assert report.max_abs_diff <= 4 / 256 + 1e-6
    assert report.top1_agreement >= 0.95
