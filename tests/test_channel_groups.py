"""Channel groups: each coupling on a tiny model against hand-written expectations,
pruning by channel, and shrinking that keeps the masked model's outputs."""

import keras
import numpy as np
import pytest

from keras_compact.callbacks import GradualPruning, TargetedChannels, TargetedDropoutRamp
from keras_compact.layers import TargetedDropout
from keras_compact.pruning import (
    PruningMask,
    channel_groups,
    grow,
    prunable,
    prune,
    recalibrate_batch_norm,
    shrink,
    strip,
    targeted,
)


# The groups, the cuts of `shrink` and the growth of `grow` are NumPy over the model's graph, the
# same code on every backend. On JAX, whose eager ops compile for every new shape (5-20 s a test on 2
# cores), these tests run on TensorFlow only; JAX runs the rest: the elementwise merges, concatenation,
# depthwise and nested models through prune and shrink, training with the masks, the data criteria,
# Targeted Dropout by channel and its callback, save and reload.
GRAPH_ONLY = {
    "test_a_grouped_convolution_loses_the_same_channels_in_every_group",
    "test_transposed_3d_and_1d_convolutions_and_normalization_are_cut_in_their_own_layout",
    "test_grow_adds_channels_to_every_member_of_the_group_and_keeps_the_outputs",
    "test_grow_through_a_depthwise_convolution_and_a_concatenation",
    "test_outputs_inputs_and_ignored_layers_are_kept_whole",
    "test_a_squeeze_excite_gate_belongs_to_the_feature_map_it_scales",
    "test_round_to_keeps_a_multiple_of_it_and_global_scope_counts_over_all_groups",
    "test_a_separable_convolution_reads_each_channel_times_its_multiplier",
    "test_a_gate_over_a_concatenation_is_split_into_the_concatenated_groups",
    "test_targeted_dropout_and_pruning_masks_read_each_layers_kernel_in_its_own_layout",
    "test_raw_keras_ops_in_the_graph_are_elementwise_members",
    "test_a_flattened_channel_is_cut_at_every_position_of_the_dense_layer",
    "test_slices_merged_in_different_orders_join_into_one_group",
    "test_a_space_joined_to_others_is_split_with_all_of_them",
    "test_shrink_folds_a_constant_into_a_one_by_one_same_padded_convolution",
    "test_shrink_gives_a_bias_to_a_bias_less_layer_that_loses_units_and_receives_a_constant",
}


@pytest.fixture(autouse=True)
def _graph_only_tests_on_tensorflow(request):
    if request.node.originalname in GRAPH_ONLY and keras.backend.backend() != "tensorflow":
        pytest.skip(f"graph code, the same on every backend: it runs on TensorFlow (eager {keras.backend.backend()} "
                    "compiles every shape); the merges, concatenation, depthwise, training and save/load run here")


def _x(model, count=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(count,) + tuple(model.input_shape[1:])).astype("float32")


def _shrunk_equals_masked(report, rtol=1e-5):
    smaller = shrink(report.model)
    x = _x(report.model)
    masked, shrunk = np.asarray(report.model(x)), np.asarray(smaller(x))
    scale = max(float(np.abs(masked).max()), 1e-6)
    assert np.abs(masked - shrunk).max() <= rtol * scale
    return smaller


def _groups(model):
    return sorted((group.size, group.producers) for group in channel_groups(model).prunable)


def _residual(merge=keras.layers.Add):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(4, 1, name="squeeze")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="expand")(y)
    x = merge(name="merge")([x, y])
    outputs = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("merge", [keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
                                   keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum])
def test_an_elementwise_merge_joins_its_inputs_channels_into_one_group(merge):
    model = _residual(merge)
    assert _groups(model) == [(4, ("squeeze",)), (8, ("stem", "expand"))]
    group = channel_groups(model).group_of("stem")
    assert set(group.members) == {"stem", "stem_bn", "expand", "squeeze", "classes"}
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert [smaller.get_layer(n).filters for n in ("stem", "squeeze", "expand")] == [4, 2, 4]
    assert smaller.get_layer("stem_bn").gamma.shape == (4,)
    assert smaller.get_layer("classes").kernel.shape == (4, 3)


def test_concatenate_keeps_each_input_its_own_group_at_its_offset():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(6, 3, padding="same", name="b")(inputs)
    joined = keras.layers.Concatenate()([a, b])
    out = keras.layers.Conv2D(3, 3, padding="same", name="reader")(keras.layers.ReLU()(joined))
    model = keras.Model(inputs, keras.layers.GlobalMaxPooling2D()(out))
    assert _groups(model) == [(4, ("a",)), (6, ("b",))]
    report = prune(model, 0.5, granularity="channel")
    reader = next(l for l in report.model.layers if isinstance(l, PruningMask) and l.target.name == "reader")
    rows = np.asarray(reader.mask)[0, 0, :, 0].astype(bool)
    a_kept = np.asarray(next(l for l in report.model.layers if getattr(l, "target", None) is not None
                             and l.target.name == "a").mask)[0, 0, 0].astype(bool)
    np.testing.assert_array_equal(rows[:4], a_kept)  # a's channels first, then b's at offset 4
    assert rows[:4].sum() == 2 and rows[4:].sum() == 3
    smaller = _shrunk_equals_masked(report)
    assert smaller.get_layer("reader").kernel.shape == (3, 3, 5, 3)


def test_a_depthwise_convolution_carries_its_input_channels_times_the_multiplier():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, name="expand")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = keras.layers.Conv2D(5, 1, name="project")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    group = channel_groups(model).group_of("expand")
    assert group.size == 4 and set(group.members) == {"expand", "depthwise", "depthwise_bn", "project"}
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert smaller.get_layer("depthwise").kernel.shape == (3, 3, 2, 2)
    assert smaller.get_layer("depthwise_bn").gamma.shape == (4,)
    assert smaller.get_layer("project").kernel.shape == (1, 1, 4, 5)


def _squeeze_excite():
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="swish", name="features")(inputs)
    gate = keras.layers.GlobalAveragePooling2D()(features)
    gate = keras.layers.Reshape((1, 1, 8), name="se_reshape")(gate)
    gate = keras.layers.Conv2D(2, 1, activation="relu", name="reduce")(gate)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="excite")(gate)
    x = keras.layers.Multiply()([features, gate])
    x = keras.layers.Conv2D(6, 3, padding="same", name="after")(x)
    return keras.Model(inputs, keras.layers.Flatten()(keras.layers.GlobalAveragePooling2D(keepdims=True)(x)))


def test_a_squeeze_excite_gate_belongs_to_the_feature_map_it_scales():
    model = _squeeze_excite()
    assert _groups(model) == [(2, ("reduce",)), (8, ("features", "excite"))]
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert smaller.get_layer("se_reshape").output.shape == (None, 1, 1, 4)
    assert smaller.get_layer("reduce").kernel.shape == (1, 1, 4, 1)


def test_a_flattened_channel_is_cut_at_every_position_of_the_dense_layer():
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(5, name="hidden"),
                              keras.layers.Dense(2, name="classes")])
    assert _groups(model) == [(5, ("hidden",)), (6, ("conv",))]
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert smaller.get_layer("hidden").kernel.shape == (2 * 2 * 3, 3)  # round(2.5) = 2 pruned
    assert isinstance(smaller, keras.Sequential)


def test_raw_keras_ops_in_the_graph_are_elementwise_members():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    hard_sigmoid = keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    x = keras.layers.Multiply()([x, hard_sigmoid])
    y = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    x = keras.ops.add(x, y)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    assert _groups(model) == [(8, ("conv", "branch"))]
    _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))


def test_a_zeroed_channel_before_same_padding_is_removed_exactly():
    """BatchNormalization turns a removed filter's zeros into a non-zero constant,
    which a padding='same' convolution would see at the borders: the masked rows make it moot."""
    model = _residual()
    norm = model.get_layer("stem_bn")
    norm.set_weights([np.random.default_rng(1).uniform(0.5, 2.0, size=8).astype("float32") for _ in range(4)])
    _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda x: keras.layers.LayerNormalization(name="ln")(x), "normalises over the channels"),
        (lambda x: keras.layers.Lambda(lambda t: t[..., ::-1], name="flip")(x), "cannot map"),
        (lambda x: keras.layers.Conv2D(6, 1, groups=3, name="grouped")(keras.layers.DepthwiseConv2D(
            1, depth_multiplier=3)(x)), "splits its input into 3 groups across depthwise-repeated"),
        (lambda x: keras.layers.Softmax(name="channel_softmax")(x), "softmax over the channels"),
        (lambda x: keras.layers.Reshape((64, 4), name="mixing")(x), "mixing channels and positions"),
    ],
)
def test_a_layer_that_mixes_channels_ends_the_group_and_says_why(make, reason):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(16, 1, name="conv")(inputs)
    x = make(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    groups = channel_groups(model)
    assert reason in groups.blocked["conv"]
    assert reason in str(groups)


def test_outputs_inputs_and_ignored_layers_are_kept_whole():
    model = _residual()
    groups = channel_groups(model, ignored_layers=["squeeze"])
    assert groups.blocked["classes"] == "its channels are a model output"
    assert "'squeeze' is in ignored_layers" in groups.blocked["squeeze"]
    # squeeze reads the stem's channels: ignoring it keeps them too.
    assert "'squeeze' is in ignored_layers" in groups.blocked["stem"]
    chain = keras.Sequential([keras.Input((8, 8, 3))] + [keras.layers.Conv2D(8, 3, name=n) for n in "abc"]
                             + [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    report = prune(chain, 0.5, granularity="channel", ignored_layers=["c"])  # c reads b: only a's group is left
    assert [(g.producers, g.pruned) for g in report.groups] == [(("a",), 4)]
    with pytest.raises(ValueError, match="no prunable channel group(.|\n)*'expand' is in ignored_layers"):
        prune(_residual(), 0.5, granularity="channel", ignored_layers=["expand"])


def test_a_nested_model_joins_the_groups_around_it():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inside")], name="inner")
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="first")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(x)))
    assert _groups(model) == [(4, ("first",)), (4, ("inside",))]


def test_round_to_keeps_a_multiple_of_it_and_global_scope_counts_over_all_groups():
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(20, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="b")(a)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(b)))
    rounded = prune(model, 0.7, granularity="channel", round_to=8)
    assert [(g.size, g.size - g.pruned) for g in rounded.groups] == [(20, 8), (12, 8)]
    overall = prune(model, 0.5, granularity="channel", scope="global")
    assert sum(g.pruned for g in overall.groups) == 16
    _shrunk_equals_masked(overall)


def test_bn_scale_removes_the_channels_with_the_smallest_gammas():
    model = _residual()
    gamma = np.array([0.1, 2.0, 0.2, 3.0, 0.3, 4.0, 5.0, 0.05], "float32")
    norm = model.get_layer("stem_bn")
    norm.set_weights([gamma] + norm.get_weights()[1:])
    report = prune(model, 0.5, granularity="channel", criterion="bn_scale", layers=["stem"])
    stem = next(l for l in report.model.layers if getattr(l, "target", None) is not None and l.target.name == "stem")
    kept = np.asarray(stem.mask)[0, 0, 0].astype(bool)
    assert set(np.flatnonzero(~kept)) == {0, 2, 4, 7}
    assert [(g.producers, g.pruned) for g in report.groups] == [(("stem", "expand"), 4)]


@pytest.mark.parametrize("criterion", ["onorm", pytest.param("taylor", marks=pytest.mark.tensorflow_backend(
    "criterion='taylor' differentiates with tf.GradientTape"))])
def test_data_criteria_rank_groups_on_the_tensors_their_readers_read(criterion):
    model = _squeeze_excite()
    model.compile(loss="mse")
    x = _x(model, count=16)
    y = np.zeros((16, 6), "float32")
    report = prune(model, 0.5, granularity="channel", criterion=criterion, data=(x, y))
    assert sorted((g.size, g.pruned) for g in report.groups) == [(2, 1), (8, 4)]
    _shrunk_equals_masked(report)


def test_pruning_by_channel_never_changes_the_users_model():
    model = _squeeze_excite()
    before = [w.copy() for w in model.get_weights()]
    shrink(prune(model, 0.5, granularity="channel").model)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pruned_and_shrunk_models_save_and_reload(tmp_path):
    report = prune(_squeeze_excite(), 0.5, granularity="channel")
    smaller = shrink(report.model)
    x = _x(smaller)
    for name, form in (("pruned", report.model), ("shrunk", smaller)):
        form.save(tmp_path / f"{name}.keras")
        again = keras.models.load_model(tmp_path / f"{name}.keras")
        np.testing.assert_allclose(np.asarray(again(x)), np.asarray(form(x)), rtol=1e-6, atol=1e-6)
    reloaded = keras.models.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(np.asarray(shrink(reloaded)(x)), np.asarray(smaller(x)), rtol=1e-5, atol=1e-6)


def test_a_pruned_group_fine_tunes_with_its_channels_held_at_zero():
    model = _residual()
    report = prune(model, 0.5, granularity="channel")
    report.model.compile("adam", "mse")
    x = _x(model, count=32)
    report.model.fit(x, np.ones((32, 3), "float32"), epochs=2, verbose=0)
    _shrunk_equals_masked(report)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sparsity=1.0), r"\[0, 1\) for granularity='channel'.*sparsity=1.0"),
        (dict(sparsity=float("nan")), "sparsity=nan"),
        (dict(round_to=0), "round_to must be None or an integer >= 1. Received: round_to=0"),
        (dict(round_to=2.5), "round_to=2.5"),
        (dict(ignored_layers=["nope"]), r"does not have: \['nope'\]"),
        (dict(ignored_layers="stem"), "ignored_layers must be a list of layer names"),
        (dict(criterion="similarity"), "criterion must be one of .* with granularity='channel'"),
        (dict(merge=True), "merge=True refits the one layer"),
        (dict(scope="unit"), "scope must be None, 'layer' or 'global' with granularity='channel'"),
        (dict(layers=["classes"]), r"layers \['classes'\] compute no prunable channel group"),
        (dict(criterion="onorm"), "criterion='onorm' works on examples"),
    ],
)
def test_bad_channel_pruning_arguments_raise_clear_errors(kwargs, message):
    arguments = {"sparsity": 0.5, "granularity": "channel", **kwargs}
    with pytest.raises(ValueError, match=message):
        prune(_residual(), **arguments)


def test_channel_options_are_refused_at_other_granularities():
    with pytest.raises(ValueError, match="round_to rounds the channels"):
        prune(_residual(), 0.5, round_to=8)
    with pytest.raises(ValueError, match="criterion='bn_scale' ranks channel groups"):
        prune(_residual(), 0.5, granularity="unit", criterion="bn_scale")


def test_a_model_with_nothing_prunable_by_channel_says_why():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no prunable channel group(.|\n)*model output"):
        prune(model, 0.5, granularity="channel")


def test_a_subclassed_model_is_refused_with_what_to_do():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="keras.Input"):
        channel_groups(net)


def test_shrink_gives_a_bias_to_a_bias_less_layer_that_loses_units_and_receives_a_constant():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, use_bias=False, name="a"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(6, use_bias=False, name="b"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2, name="classes")])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([np.full(6, v, "float32") for v in (1.5, 0.5, 0.2, 2.0)])
    report = prune(model, 0.5, granularity="unit")
    smaller = _shrunk_equals_masked(report)
    assert [smaller.get_layer(n).units for n in ("a", "b")] == [3, 3]


def test_shrink_folds_a_constant_into_a_one_by_one_same_padded_convolution():
    model = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(4, 3, activation="sigmoid", name="c1"),
                              keras.layers.Conv2D(3, 1, padding="same", name="c2"), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="unit", layers=["c1"]))
    assert smaller.get_layer("c1").filters == 2


def test_shrink_names_a_unit_pruned_depthwise_convolution_instead_of_leaving_it():
    model = keras.Sequential([keras.Input((5, 5, 4)), keras.layers.DepthwiseConv2D(3, name="dw"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="zeroed channels of DepthwiseConv2D 'dw'.*granularity='channel'"):
        shrink(prune(model, 0.5, granularity="unit", layers=["dw"]).model)


@pytest.mark.tensorflow_backend("graph reading is backend-independent; JAX runs the zoo's MobileNetV2 (test_pruning_zoo.py)")
def test_unit_pruning_and_prunable_accept_a_graph_with_raw_keras_ops():
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=4,
                                                include_preprocessing=False)
    assert any(isinstance(l, PruningMask) for l in prunable(model).layers)
    report = prune(model, 0.5, granularity="unit", layers=["expanded_conv_2_project"])
    with pytest.raises(ValueError, match="'expanded_conv_2_project'.*Add.*granularity='channel'"):
        shrink(report.model)


@pytest.mark.parametrize("build, layer", [(_residual, "stem"), (_squeeze_excite, "features"),
                                          (_squeeze_excite, "reduce")])
def test_grow_adds_channels_to_every_member_of_the_group_and_keeps_the_outputs(build, layer):
    model = build()
    wider = grow(model, layer, 3)
    x = _x(model)
    np.testing.assert_allclose(np.asarray(wider(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    group = channel_groups(model).group_of(layer)
    for producer in group.producers:
        assert wider.get_layer(producer).filters == model.get_layer(producer).filters + 3
    # The new channels are read with zero weights, so shrink alone takes the model back to its widths.
    assert shrink(wider).get_layer(layer).filters == group.size


def test_grow_through_a_depthwise_convolution_and_a_concatenation():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    x = keras.layers.Concatenate()([a, keras.layers.Conv2D(3, 1, name="b")(inputs)])
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="norm")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="reader")(x))
    model.get_layer("norm").set_weights([np.full(7, v, "float32") for v in (2.0, 0.5, 0.1, 3.0)])
    wider = grow(model, "a", 2)
    x = _x(model)
    np.testing.assert_allclose(np.asarray(wider(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert wider.get_layer("depthwise").kernel.shape == (3, 3, 9, 1)
    reader = wider.get_layer("reader").kernel.numpy()[0, 0]
    assert not reader[4:6].any() and reader[6:].any()  # a's new channels sit before b's


def test_gradual_pruning_by_channel_ramps_whole_groups_and_shrinks():
    model = _residual()
    ready = prunable(model, granularity="channel")
    ready.compile("adam", "mse")
    x = _x(model, count=64)
    history = ready.fit(x, np.zeros((64, 3), "float32"), batch_size=16, epochs=3, verbose=0,
                        callbacks=[GradualPruning(0.5, frequency=2)])
    assert history.history["sparsity"][-1] == 0.5
    smaller = shrink(ready)
    np.testing.assert_allclose(np.asarray(smaller(x[:4])), np.asarray(ready(x[:4])), rtol=1e-5, atol=1e-6)
    assert smaller.get_layer("stem").filters == 4 and smaller.get_layer("squeeze").filters == 2


@pytest.mark.tensorflow_backend(
    "the wrapping is the same on every backend; eager Targeted Dropout through MobileNetV2's 52 layers takes "
    "20 s on JAX, where tests/test_targeted_dropout.py tests the layer itself")
def test_targeted_wraps_every_layer_of_an_applications_model_and_drops_in_training():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=3)
    ready = targeted(model, target_rate=0.5, drop_rate=0.5, granularity="unit")
    wrapped = [layer for layer in ready.layers if isinstance(layer, TargetedDropout)]
    assert len(wrapped) == sum(isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) for l in model.layers)
    x = _x(model, count=4)
    np.testing.assert_allclose(np.asarray(ready(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)  # a copy
    assert not np.allclose(np.asarray(ready(x, training=True)), np.asarray(model(x, training=True)))  # drops
    with pytest.raises(ValueError, match="already wrapped"):
        targeted(ready)


def _drawn(ready, seed=0):
    """A `TargetedChannels` attached to `ready` as `fit` attaches it."""
    callback = TargetedChannels(seed=seed)
    callback.set_model(ready)
    callback.on_train_begin()
    return callback


def test_targeted_by_channel_drops_the_channels_prune_would_remove_in_every_member_at_once():
    model = _residual()
    ready = targeted(model, target_rate=0.5, drop_rate=1.0, granularity="channel")
    wrapped = {layer.layer.name for layer in ready.layers if isinstance(layer, TargetedDropout)}
    assert wrapped == {"stem", "squeeze", "expand", "classes"}  # every member of the two groups
    x = _x(model, count=4)
    callback = _drawn(ready)
    np.testing.assert_allclose(np.asarray(ready(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)  # not at inference
    keep = callback.draw(0)
    assert sorted(int(np.sum(~k)) for k in keep.values()) == [2, 4]  # floor(0.5 * size) at drop_rate 1
    # The lowest-importance half of each group, dropped by each member in its own call from the producers,
    # the readers and the residual stage alike: in training the model computes what channel pruning leaves.
    pruned = prune(model, 0.5, granularity="channel").model
    np.testing.assert_allclose(np.asarray(ready(x, training=True)), np.asarray(pruned(x, training=True)),
                               rtol=1e-5, atol=1e-6)
    assert {int(layer.draws.numpy()) for layer in ready.layers if isinstance(layer, TargetedDropout)} == {1}


def test_targeted_by_channel_draws_each_candidate_with_the_drop_rate_at_every_step():
    model = _residual()
    ready = targeted(model, target_rate=0.5, drop_rate=0.5, granularity="channel")
    callback = _drawn(ready, seed=3)
    drops = np.array([np.concatenate([~k for k in callback.draw(step).values()]) for step in range(400)])
    scores = list(_channel_scores(ready).values())
    offsets = np.cumsum([0] + [v.size for v in scores])
    candidates = np.concatenate([np.argsort(v, kind="stable")[: v.size // 2] + offset
                                 for v, offset in zip(scores, offsets)])
    assert not drops[:, np.setdiff1d(np.arange(offsets[-1]), candidates)].any()  # only candidates
    assert abs(drops[:, candidates].mean() - 0.5) < 0.05 and len({row.tobytes() for row in drops}) > 50


def _channel_scores(ready):
    from keras_compact.pruning import _channel, _groups

    return _channel.scores(_groups.analyse(ready), "magnitude", None, None, None)


def test_targeted_by_channel_trains_with_the_callback_and_refuses_to_train_without_it(tmp_path):
    model = _residual()
    ready = targeted(model, target_rate=0.5, drop_rate=0.5, granularity="channel")
    ready.compile("adam", "mse")
    x, y = _x(model, count=32), np.zeros((32, 3), "float32")
    if keras.backend.backend() == "tensorflow":  # on JAX, Keras loses the weights when a first step raises
        with pytest.raises(RuntimeError, match="TargetedChannels"):
            ready.fit(x, y, verbose=0)
    before = ready.get_weights()
    ramp = TargetedDropoutRamp(target_rate=(0.0, 0.5), unit="step")
    history = ready.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[ramp, TargetedChannels(seed=0)])
    assert history.history["target_rate"][-1] == 0.5
    assert not all(np.array_equal(a, b) for a, b in zip(before, ready.get_weights()))
    # Every member counted the 8 steps it drew in (what, with the seed, makes their draws agree).
    assert {int(layer.draws.numpy()) for layer in ready.layers if isinstance(layer, TargetedDropout)} == {8}
    if keras.backend.backend() == "tensorflow":  # the next fit without it is traced again, and raises
        with pytest.raises(RuntimeError, match="TargetedChannels"):
            ready.fit(x, y, verbose=0)
    path = tmp_path / "targeted_channels.keras"
    ready.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x[:4])), np.asarray(ready(x[:4])), rtol=1e-6, atol=1e-6)
    loaded.fit(x, y, batch_size=8, verbose=0, callbacks=[TargetedChannels(seed=1)])  # resumes
    smaller = _shrunk_equals_masked(prune(loaded, 0.5, granularity="channel"))
    assert smaller.get_layer("stem").filters == 4


def test_targeted_by_channel_on_a_transformer_block_drops_mlp_units_as_pruning_removes_them():
    inputs = keras.Input((8, 16))
    attended = keras.layers.MultiHeadAttention(4, 4, name="attention")(inputs, inputs)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([inputs, attended]))
    hidden = keras.layers.Dense(32, activation="relu", name="up")(x)
    x = keras.layers.Add()([x, keras.layers.Dense(16, name="down")(hidden)])
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D()(x)))
    ready = targeted(model, target_rate=0.5, drop_rate=1.0, granularity="channel")
    assert {layer.layer.name for layer in ready.layers if isinstance(layer, TargetedDropout)} == {"up", "down"}
    callback = _drawn(ready)
    assert sorted(int(np.sum(~keep)) for keep in callback.draw(0).values()) == [2, 16]  # heads drawn, not wrapped
    x = np.random.default_rng(0).normal(size=(4, 8, 16)).astype("float32")
    # The attention's heads have no TargetedDropout (it drops kernels): the MLP's units alone, as pruning
    # them alone removes them.
    pruned = prune(model, {"channels": 0.5}, granularity="channel").model
    np.testing.assert_allclose(np.asarray(ready(x, training=True)), np.asarray(pruned(x)), rtol=1e-5, atol=1e-5)


def test_targeted_by_channel_draws_inside_the_step_with_any_steps_per_execution():
    model = _residual()
    ready = targeted(model, target_rate=0.5, drop_rate=0.5, granularity="channel")
    ready.compile("adam", "mse", steps_per_execution=2)
    x, y = _x(model, count=16), np.zeros((16, 3), "float32")
    ready.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[TargetedChannels(seed=0)])
    assert {int(layer.draws.numpy()) for layer in ready.layers if isinstance(layer, TargetedDropout)} == {8}
    callback = _drawn(ready, seed=0)
    first, second = ready(x, training=True), ready(x, training=True)  # steps 8 and 9 draw anew
    assert not np.allclose(np.asarray(first), np.asarray(second))
    assert any(not np.array_equal(a, b) for a, b in zip(callback.draw(8).values(), callback.draw(9).values()))


def test_a_targeted_by_channel_layer_saved_with_last_steps_drops_loads_its_rates():
    layer = TargetedDropout(keras.layers.Dense(4), 0.5, 0.5, granularity="channel")
    layer.build((None, 3))
    # What a file saved before the draws moved into the training step holds: the rates, then the last
    # step's kernel and bias masks.
    layer.load_own_variables({"0": np.float32(0.25), "1": np.float32(0.75), "2": np.zeros((3, 4), "float32"),
                              "3": np.zeros(4, "float32")})
    assert (float(layer.target_rate.numpy()), float(layer.drop_rate.numpy()), int(layer.draws.numpy())) == (0.25, 0.75, 0)


def test_targeted_by_channel_refuses_what_it_cannot_do():
    model = _residual()
    with pytest.raises(ValueError, match="TargetedChannels callback's seed.*seed=1"):
        targeted(model, granularity="channel", seed=1)
    with pytest.raises(ValueError, match="leave layers out"):
        targeted(model, granularity="channel", layers=["stem"])
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no prunable channel group"):
        targeted(plain, granularity="channel")
    with pytest.raises(ValueError, match="seed"):
        TargetedChannels(seed="one")
    by_unit = targeted(model, granularity="unit")
    by_unit.compile("adam", "mse")
    with pytest.raises(ValueError, match="found no TargetedDropout\\(granularity='channel'\\)"):
        by_unit.fit(_x(model), np.zeros((3, 3)), verbose=0, callbacks=[TargetedChannels()])
    ready = targeted(model, 0.5, 0.5, granularity="channel")
    ready.compile("adam", "mse")
    ready.layers[1].set_rates(target_rate=0.25)
    with pytest.raises(ValueError, match="the same rates"):
        _drawn(ready)


@pytest.mark.tensorflow_backend("the draws are the same on every backend; the zoo's eager steps are slow on JAX")
def test_targeted_by_channel_on_an_applications_model_trains_then_prunes_and_shrinks():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=3)
    ready = targeted(model, target_rate=0.5, drop_rate=0.5, granularity="channel")
    ready.compile("adam", "sparse_categorical_crossentropy")
    x = _x(model, count=8)
    ready.fit(x, np.arange(8) % 3, batch_size=4, verbose=0, callbacks=[TargetedChannels(seed=0)])
    smaller = _shrunk_equals_masked(prune(recalibrate_batch_norm(strip(ready), x), 0.5, granularity="channel"),
                                    rtol=1e-4)
    assert smaller.count_params() < 0.5 * model.count_params()


def test_a_gate_over_a_concatenation_is_split_into_the_concatenated_groups():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(6, 3, padding="same", name="b")(inputs)
    x = keras.layers.Concatenate()([a, b])
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(10, 1, activation="sigmoid", name="gate")(gate)
    x = keras.layers.Multiply()([x, gate])
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    assert _groups(model) == [(4, ("a", "gate")), (6, ("b", "gate"))]
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert smaller.get_layer("gate").kernel.shape == (1, 1, 5, 5)
    by_gate = prune(model, 0.5, granularity="channel", layers=["gate"])  # both of the gate's groups
    assert sorted((g.size, g.pruned) for g in by_gate.groups) == [(4, 2), (6, 3)]
    wider = grow(model, "b", 2)
    x = _x(model)
    np.testing.assert_allclose(np.asarray(wider(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert wider.get_layer("gate").filters == 12


def test_slices_merged_in_different_orders_join_into_one_group():
    inputs = keras.Input((8, 8, 3))
    a, b, c, d = (keras.layers.Conv2D(n, 1, name=name)(inputs) for name, n in zip("abcd", (4, 4, 8, 8)))
    left = keras.layers.Add()([keras.layers.Concatenate()([a, b]), c])
    right = keras.layers.Add()([keras.layers.Concatenate()([b, a]), d])
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Add()([left, right]))))
    # channel i of the sum holds a_i and b_i, and so does channel 4 + i: one group of 4
    [(size, producers)] = _groups(model)
    assert size == 4 and sorted(producers) == list("abcd")
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert [smaller.get_layer(n).filters for n in "abcd"] == [2, 2, 4, 4]


def test_a_space_joined_to_others_is_split_with_all_of_them():
    inputs = keras.Input((8, 8, 3))
    a, twin, b, e, f = (keras.layers.Conv2D(n, 1, name=name)(inputs)
                        for name, n in zip(("a", "twin", "b", "e", "f"), (4, 4, 4, 2, 6)))
    joined = keras.layers.Add()([a, twin])  # a and twin are one group ...
    x = keras.layers.Add()([keras.layers.Concatenate()([a, b]), keras.layers.Concatenate()([e, f])])  # ... cut 2 + 2
    pooled = [keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(t)) for t in (joined, x)]
    model = keras.Model(inputs, keras.layers.Add()(pooled))
    assert sorted((size, sorted(producers)) for size, producers in _groups(model)) == [
        (2, ["a", "e", "twin"]), (2, ["a", "f", "twin"]), (4, ["b", "f"])]
    _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))


def test_a_merge_of_different_positions_is_blocked_with_the_reason():
    inputs = keras.Input((4, 4, 2))
    a = keras.layers.Flatten()(keras.layers.Conv2D(2, 1, name="a")(inputs))  # 16 positions x 2
    b = keras.layers.Dense(32, name="b")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Add()([a, b])))
    assert "differently made slices" in channel_groups(model).blocked["a"]


@pytest.mark.tensorflow_backend("graph reading is backend-independent; JAX runs the zoo's MobileNetV2 (test_pruning_zoo.py)")
def test_a_nested_backbone_under_a_new_head_is_pruned_and_shrunk_through():
    backbone = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, include_top=False)
    model = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(8, activation="relu", name="head"), keras.layers.Dense(3)])
    groups = channel_groups(model)
    assert groups.group_of("Conv_1").members[-1] == "head"  # the backbone's last channels reach the head
    assert list(groups.blocked.values()) == ["its channels are a model output"]
    report = prune(model, 0.5, granularity="channel")
    smaller = _shrunk_equals_masked(report)
    assert smaller.layers[0].get_layer("Conv_1").filters == backbone.get_layer("Conv_1").filters // 2
    assert grow(model, "Conv_1", 4).get_layer("head").kernel.shape[0] == backbone.get_layer("Conv_1").filters + 4
    # Criteria that read activations and the statistics' recalibration reach inside the backbone.
    x = _x(model, 8)
    calls = {layer.name: len(layer._inbound_nodes) for layer in backbone.layers if layer.weights}
    _shrunk_equals_masked(prune(model, 0.5, granularity="channel", criterion="onorm", data=x))
    # The probe reads a flat copy: the user's layers are not called again.
    assert {layer.name: len(layer._inbound_nodes) for layer in backbone.layers if layer.weights} == calls
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    taylor = prune(model, 0.5, granularity="channel", criterion="taylor", data=(x, np.arange(8) % 3))
    _shrunk_equals_masked(taylor)
    fixed = recalibrate_batch_norm(smaller, x, batch_size=len(x))
    # One batch of all of x: each layer's statistics are those of what it reads in the recalibrated model.
    inner = fixed.layers[0]
    reads = np.asarray(keras.Model(inner.input, inner.get_layer("block_16_depthwise").output)(x))
    norm = inner.get_layer("block_16_depthwise_BN")
    np.testing.assert_allclose(np.asarray(norm.moving_mean), reads.mean(axis=(0, 1, 2)), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(norm.moving_variance), reads.var(axis=(0, 1, 2)), rtol=1e-3)
    assert not np.allclose(np.asarray(norm.moving_mean),
                           np.asarray(smaller.layers[0].get_layer("block_16_depthwise_BN").moving_mean))


def test_a_separable_convolution_reads_each_channel_times_its_multiplier():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="separable")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="second")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling2D()(x)))
    assert _groups(model) == [(8, ("stem", "separable")), (12, ("second",))]
    assert set(channel_groups(model).group_of("stem").members) == {"stem", "separable", "second"}
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    separable = smaller.get_layer("separable")
    assert separable.depthwise_kernel.shape == (3, 3, 4, 2)
    assert separable.pointwise_kernel.shape == (1, 1, 8, 4)
    assert smaller.get_layer("second").pointwise_kernel.shape == (1, 1, 4, 6)
    wider = grow(model, "second", 2)
    x = _x(model)
    np.testing.assert_allclose(np.asarray(wider(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert wider.get_layer("second").pointwise_kernel.shape == (1, 1, 8, 14)


def _grouped():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4, name="four_groups")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(16, 1, groups=2, name="two_groups")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(10, 3, padding="same", name="after")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling2D()(x)))


def test_a_grouped_convolution_loses_the_same_channels_in_every_group():
    model = _grouped()
    # stem's 8 channels are four_groups' 4 slices of 2: channel j of each slice is one channel of the
    # group; four_groups' 4 x 4 outputs and two_groups' 2 x 8 meet in the Add as one group of 4.
    assert _groups(model) == [(2, ("stem",)), (4, ("four_groups", "two_groups")), (10, ("after",))]
    smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel"))
    assert [smaller.get_layer(name).kernel.shape[-2:] for name in ("stem", "four_groups", "two_groups")] == [
        (3, 4), (1, 8), (4, 8)]
    assert smaller.get_layer("four_groups").groups == 4 and smaller.get_layer("two_groups").groups == 2
    wider = grow(model, "four_groups", 8)
    x = _x(model)
    np.testing.assert_allclose(np.asarray(wider(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert wider.get_layer("two_groups").kernel.shape == (1, 1, 12, 24)
    with pytest.raises(ValueError, match="each of the 4 groups of 'four_groups'.s channels: units must be a multiple"):
        grow(model, "four_groups", 3)
    # two_groups (groups=2) shares the group of 4 channels that four_groups repeats 4 times: it holds
    # them 4 times too, so 8 more of its channels are 2 more channels of the group.
    assert grow(model, "two_groups", 8).get_layer("two_groups").filters == 24


def _transposed():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2DTranspose(12, 3, strides=2, padding="same", name="up")(x)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.Conv2DTranspose(6, 3, padding="same", activation="relu", name="up_again")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))


def _three_d():
    inputs = keras.Input((5, 5, 5, 2))
    x = keras.layers.Conv3D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.Conv3DTranspose(6, 3, name="up")(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(x)))


def _normalized():
    inputs = keras.Input((10, 4))
    x = keras.layers.Conv1D(6, 3, padding="same", name="stem")(inputs)
    adapted = keras.layers.Normalization(name="adapted")
    adapted.adapt(np.random.default_rng(0).uniform(0, 3, size=(16, 10, 6)).astype("float32"))
    x = keras.layers.Normalization(mean=np.arange(6.0), variance=np.arange(1.0, 7.0), name="given")(adapted(x))
    x = keras.layers.Conv1DTranspose(8, 3, strides=2, name="up")(x)
    x = keras.layers.SeparableConv1D(5, 3, depth_multiplier=3, name="separable")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))


@pytest.mark.parametrize("build, shapes", [
    (_transposed, {"up": (3, 3, 6, 4), "up_again": (3, 3, 3, 6)}),
    (_three_d, {"stem": (3, 3, 3, 2, 4), "up": (3, 3, 3, 3, 4)}),
    (_normalized, {"stem": (3, 4, 3), "up": (3, 4, 3)}),
])
def test_transposed_3d_and_1d_convolutions_and_normalization_are_cut_in_their_own_layout(build, shapes):
    model = build()
    assert not channel_groups(model).blocked.keys() - {model.layers[-1].name}
    for criterion in ("magnitude", "onorm"):
        data = (_x(model, 8), np.zeros(8, "int32")) if criterion != "magnitude" else None
        smaller = _shrunk_equals_masked(prune(model, 0.5, granularity="channel", criterion=criterion, data=data))
        assert {name: tuple(smaller.get_layer(name).kernel.shape) for name in shapes} == shapes
    if build is _normalized:
        assert [tuple(w.shape) for w in smaller.get_layer("adapted").weights[:2]] == [(3,), (3,)]
        assert len(smaller.get_layer("given").get_config()["mean"]) == 3


@pytest.mark.parametrize("layer", [
    keras.layers.Conv2DTranspose(6, 3, strides=2, name="wrapped"),
    keras.layers.SeparableConv2D(6, 3, depth_multiplier=2, name="wrapped"),
    keras.layers.Conv3D(6, 2, name="wrapped"),
])
def test_targeted_dropout_and_pruning_masks_read_each_layers_kernel_in_its_own_layout(layer):
    from keras_compact.layers.targeted_dropout import kernel_columns, kernel_of
    from keras_compact.ops import targeting

    shape = (4, 4, 4, 3) if isinstance(layer, keras.layers.Conv3D) else (5, 5, 4)
    wrapper = TargetedDropout(layer, target_rate=0.5, drop_rate=1.0, refresh_steps=1)
    x = _x(keras.Sequential([keras.Input(shape), keras.layers.Identity()]), 2)
    wrapper(x)
    kernel = kernel_of(layer)
    columns = np.asarray(kernel_columns(kernel.value, layer))
    assert columns.shape[1] == 6  # one column per output channel, whatever the kernel's axis order
    candidates = targeting.weight_candidates(columns, columns.shape[0] // 2)
    expected_kernel = np.asarray(kernel_of(layer).value).copy()
    plain = type(layer).from_config(layer.get_config())
    plain.build(x.shape)
    weights = [np.asarray(w) for w in layer.weights]
    kernel_index = [id(w) for w in layer.weights].index(id(kernel))
    masked = np.where(candidates, 0.0, columns)
    weights[kernel_index] = np.asarray(targeting.columns_to_kernel(
        masked, kernel.shape, isinstance(layer, keras.layers.Conv2DTranspose)))
    plain.set_weights(weights)
    np.testing.assert_allclose(np.asarray(wrapper(x, training=True)), np.asarray(plain(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(kernel_of(layer).value), expected_kernel)  # never written
    model = keras.Sequential([keras.Input(shape), type(layer).from_config(layer.get_config()),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    report = prune(model, 0.5)
    assert report.layers[0].sparsity == pytest.approx(0.5, abs=0.01)
    mask = next(l for l in report.model.layers if isinstance(l, PruningMask))
    assert mask.mask.shape == kernel.shape
