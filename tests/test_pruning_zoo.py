"""The models people ship (keras.applications, weights=None, small inputs) through
channel groups, prune, shrink, save and export: what every pruning feature must pass."""

import keras
import numpy as np
import pytest

import tflite_export
from keras_compact.pruning import channel_groups, macs, prune, recalibrate_batch_norm, shrink

A = keras.applications
ZOO = {
    "MobileNetV2": lambda: A.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None, classes=5,
                                         classifier_activation=None),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, classes=5,
                                                   classifier_activation=None),
    "EfficientNetB0": lambda: A.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=5,
                                               classifier_activation=None),
    "ResNet50": lambda: A.ResNet50(input_shape=(64, 64, 3), weights=None, classes=5, classifier_activation=None),
    "DenseNet121": lambda: A.DenseNet121(input_shape=(64, 64, 3), weights=None, classes=5,
                                         classifier_activation=None),
    # Separable convolutions through residual adds (Xception; 71x71 is its smallest input) and
    # through NASNet's cells of concatenations, croppings and paddings.
    "Xception": lambda: A.Xception(input_shape=(71, 71, 3), weights=None, classes=5, classifier_activation=None),
    "NASNetMobile": lambda: A.NASNetMobile(input_shape=(64, 64, 3), weights=None, classes=5,
                                           classifier_activation=None),
}
# MACs when every group loses half its channels: about a quarter (input and classes kept whole).
MOST_MACS = {"MobileNetV2": 0.33, "MobileNetV3Small": 0.32, "EfficientNetB0": 0.30, "ResNet50": 0.28,
             "DenseNet121": 0.28, "Xception": 0.28, "NASNetMobile": 0.31}


def _images(model, count=4):
    return np.random.default_rng(0).uniform(0, 255, size=(count,) + model.input_shape[1:]).astype("float32")


# The groups come from the graph, the same on every backend; on JAX (eager, slower on 2 cores)
# MobileNetV2 checks the numerics, TensorFlow runs the whole zoo.
ON_JAX = {"MobileNetV2"}


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo(request):
    if keras.backend.backend() != "tensorflow" and request.param not in ON_JAX:
        pytest.skip(f"{request.param}: the whole zoo runs on TensorFlow; on {keras.backend.backend()} the "
                    f"{sorted(ON_JAX)} checks the same graph code")
    keras.utils.set_random_seed(0)
    model = ZOO[request.param]()
    report = prune(model, 0.5, granularity="channel")
    return request.param, model, report, shrink(report.model)


def test_every_channel_a_convolution_computes_is_prunable_but_the_classes(zoo):
    name, model, _, _ = zoo
    groups = channel_groups(model)
    assert groups.prunable_fraction > 0.99
    assert list(groups.blocked.values()) == ["its channels are a model output"]


def test_the_shrunk_model_computes_what_the_masked_model_does(zoo):
    name, model, report, smaller = zoo
    x = _images(model)
    masked, shrunk, original = (np.asarray(m(x)) for m in (report.model, smaller, model))
    assert np.abs(masked - shrunk).max() <= 1e-5 * np.abs(masked).max()
    assert np.abs(masked - original).max() > 1e-3 * np.abs(original).max()  # pruning did change the model
    assert macs(smaller) <= MOST_MACS[name] * macs(model)
    assert smaller.count_params() < 0.35 * model.count_params()


def test_the_shrunk_model_saves_reloads_and_exports_with_litert_parity(zoo, tmp_path):
    name, model, _, smaller = zoo
    if name not in ("MobileNetV2", "MobileNetV3Small"):
        # Not a hidden failure: the larger files take minutes to convert on 2 cores; the benchmark
        # exports and verifies all of them in LiteRT (benchmarks/results/structured_pruning.md).
        pytest.skip("export of the larger zoo models runs in benchmarks/structured_pruning.py (minutes on 2 cores)")
    smaller.save(tmp_path / "smaller.keras")
    again = keras.models.load_model(tmp_path / "smaller.keras")
    x = _images(model, 8)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(smaller(x)), rtol=1e-5, atol=1e-5)
    if keras.backend.backend() != "tensorflow":
        return  # export from JAX converts in a TensorFlow subprocess: tests/test_backends.py covers it
    report = tflite_export.export(again, tmp_path / "smaller.tflite", verify_with=x)
    assert report.builtin_only
    assert report.max_abs_diff <= 1e-4 * np.abs(np.asarray(smaller(x))).max()


def test_recalibrated_statistics_are_each_layers_own_on_the_data(zoo):
    name, model, _, smaller = zoo
    if name != "ResNet50":
        # recalibrate_batch_norm has no per-model code; ResNet50 has the most BatchNormalization layers.
        pytest.skip("one zoo model is enough for the statistics; the others run the same code")
    x = _images(model, 16)
    fixed = recalibrate_batch_norm(smaller, x, batch_size=8)
    norm = fixed.get_layer("conv2_block1_1_bn")
    seen = keras.Model(fixed.inputs[0], norm.input)(x)
    seen = np.asarray(seen, np.float64).reshape(-1, seen.shape[-1])
    np.testing.assert_allclose(np.asarray(norm.moving_mean), seen.mean(axis=0), rtol=1e-3, atol=1e-3)
    assert not np.allclose(np.asarray(smaller.get_layer("conv2_block1_1_bn").moving_mean), seen.mean(axis=0))


def _under_a_head(backbone, classes=5):
    """A KerasHub backbone as users fine-tune one: pooled features into a new classifier, at 32x32."""
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, name="classes")(features))


@pytest.mark.tensorflow_backend("KerasHub's graphs are the same on every backend; the keras.applications zoo "
                                "covers JAX")
def test_a_keras_hub_resnet_backbone_is_pruned_through_its_nested_graph_and_shrunk():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64],
        stackwise_num_blocks=[2, 2, 2], stackwise_num_strides=[1, 2, 2], block_type="bottleneck_block",
        image_shape=(32, 32, 3))
    model = _under_a_head(backbone)
    groups = channel_groups(model)
    assert groups.prunable_fraction > 0.99 and list(groups.blocked) == ["classes"]
    report = prune(model, 0.5, granularity="channel")
    smaller = shrink(report.model)
    x = _images(model)
    masked, shrunk = np.asarray(report.model(x)), np.asarray(smaller(x))
    assert np.abs(masked - shrunk).max() <= 1e-5 * np.abs(masked).max()
    assert macs(smaller) <= 0.30 * macs(model)


@pytest.mark.tensorflow_backend("KerasHub's graphs are the same on every backend")
def test_a_keras_hub_efficientnet_backbone_names_its_custom_blocks_and_prunes_the_rest():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 2, 1], stackwise_input_filters=[24, 24, 48],
        stackwise_output_filters=[24, 48, 64], stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25], stackwise_strides=[1, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused"], width_coefficient=1.0, depth_coefficient=1.0,
        image_shape=(32, 32, 3))
    model = _under_a_head(backbone)
    groups = channel_groups(model)
    # Its MBConv blocks are subclassed layers: their channels cannot be mapped, and the report says so.
    assert "FusedMBConvBlock 'block1a_' mixes channels in a way the graph cannot map" in groups.blocked.values()
    assert [group.producers for group in groups.prunable] == [("top_conv",)]
    report = prune(model, 0.5, granularity="channel")
    smaller = shrink(report.model)  # the layers inside the custom blocks are left as they are
    x = _images(model)
    masked, shrunk = np.asarray(report.model(x)), np.asarray(smaller(x))
    assert np.abs(masked - shrunk).max() <= 1e-5 * np.abs(masked).max()
    assert smaller.count_params() < model.count_params()
