"""One table of layer types: what the package knows of each built-in type, and a user's own layer joining it.

A user's layer (a Dense with a learned gain per unit, and a per-channel scale) is unknown until
`register_layer` describes it: then it is pruned by channel, shrunk to what the masked model computes, saved
and reloaded, counted by `macs`, trained quantization-aware and exported to a verified int8 file.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_compact import layer_types, register_layer, unregister_layer
from keras_compact.pruning import channel_groups, macs, prune, shrink
from keras_compact.quantization import quantize_aware
from tflite_export import export


@keras.saving.register_keras_serializable(package="test_layer_types")
class GainDense(keras.layers.Layer):
    """`activation(x @ kernel * gain + bias)`: a Dense with a learned gain per unit."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform",
                                      name="kernel")
        self.gain = self.add_weight(shape=(self.units,), initializer="ones", name="gain")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        return self.activation(ops.matmul(x, self.kernel) * self.gain + self.bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="test_layer_types")
class ChannelScale(keras.layers.Layer):
    """Multiplies each channel by a weight of its own."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def _gain_dense_macs(layer, input_shape, output_shape):
    return input_shape[-1] * layer.units


@pytest.fixture
def registered():
    """GainDense and ChannelScale described to the table for one test."""
    register_layer(GainDense, channels="new", size="units",
                   weights={"kernel": ("in", "out"), "gain": ("out",), "bias": ("out",)},
                   macs=_gain_dense_macs, quantize={"kernel": "per_tensor", "gain": "constant", "bias": "constant"})
    register_layer(ChannelScale, channels="same", weights={"scale": ("in",)}, quantize={"scale": "constant"})
    yield
    unregister_layer(GainDense)
    unregister_layer(ChannelScale)


def _model(rng):
    """A list-built Sequential: two GainDense layers, a ChannelScale between them, a Dense head."""
    model = keras.Sequential([keras.Input((12,)), GainDense(16, activation="relu", name="gain_1"),
                              ChannelScale(name="scale"), GainDense(10, activation="relu", name="gain_2"),
                              keras.layers.Dense(4, name="classes")], name="custom")
    for layer in model.layers:  # gains and scales away from 1, so that a wrong cut shows
        layer.set_weights([w if w.ndim > 1 else rng.uniform(0.5, 1.5, w.shape).astype("float32")
                           for w in layer.get_weights()])
    return model


def test_an_unregistered_layer_blocks_its_channels_counts_nothing_and_is_refused_by_qat(rng):
    model = _model(rng)
    groups = channel_groups(model)
    assert not groups.prunable
    assert "GainDense 'gain_1' mixes channels in a way the graph cannot map" in groups.blocked["gain_1"]
    with pytest.warns(UserWarning, match=r"'gain_1' \(GainDense\)"):
        assert macs(model) == 10 * 4
    with pytest.raises(ValueError, match="GainDense 'gain_1' has weights this scheme does not quantize"):
        quantize_aware(model)


def test_a_registered_layer_is_pruned_by_channel_and_shrunk_to_what_the_masked_model_computes(registered, rng,
                                                                                                 tmp_path):
    model = _model(rng)
    x = rng.normal(size=(32, 12)).astype("float32")
    groups = channel_groups(model)
    first, second = groups.group_of("gain_1"), groups.group_of("gain_2")
    assert (first.size, first.members, first.prunable) == (16, ("gain_1", "scale", "gain_2"), True)
    assert (second.size, second.members) == (10, ("gain_2", "classes"))
    assert macs(model) == 12 * 16 + 16 * 10 + 10 * 4

    before = model.get_weights()
    result = prune(model, 0.5, granularity="channel")
    masked = result.model
    assert [w.shape for w in model.get_weights()] == [w.shape for w in before]  # the user's model untouched
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))

    small = shrink(masked)
    layers = {layer.name: layer for layer in small.layers}
    assert (layers["gain_1"].units, layers["gain_2"].units) == (8, 5)
    assert tuple(layers["scale"].scale.shape) == (8,) and tuple(layers["classes"].kernel.shape) == (5, 4)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5)
    assert macs(small) == 12 * 8 + 8 * 5 + 5 * 4

    # The masked model and the shrunk one survive saving, and reload computing the same.
    for name, saved in (("masked", masked), ("small", small)):
        path = tmp_path / f"{name}.keras"
        saved.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(reloaded.predict(x, verbose=0), saved.predict(x, verbose=0), atol=1e-6)


def test_a_registered_layer_is_pruned_by_onorm_in_a_functional_model_with_a_residual_add(registered, rng):
    inputs = keras.Input((12,))
    a = GainDense(16, activation="relu", name="gain_a")(inputs)
    b = GainDense(16, activation="relu", name="gain_b")(a)
    x = keras.layers.Add()([a, ChannelScale(name="scale")(b)])
    outputs = keras.layers.Dense(3, activation="softmax", name="classes")(x)
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.integers(0, 3, size=64)
    group = channel_groups(model).group_of("gain_a")
    assert group.producers == ("gain_a", "gain_b") and group.prunable
    masked = prune(model, 0.25, granularity="channel", criterion="onorm", data=(x, y)).model
    small = shrink(masked)
    assert {layer.name: getattr(layer, "units", None) for layer in small.layers}["gain_b"] == 12
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5)


def test_a_registered_layer_trains_quantization_aware_and_exports_a_verified_int8_file(registered, rng, tmp_path):
    model = _model(rng)
    x = rng.normal(size=(256, 12)).astype("float32")
    y = np.argmax(x[:, :4], axis=1)
    qat = quantize_aware(model)
    wrapper = {layer.name: layer for layer in qat.layers}["gain_1_quant"]
    assert [mode for _, mode in wrapper_weights(wrapper)] == ["per_tensor", "table", "table"]
    qat.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=2, batch_size=32, verbose=0)
    report = export(qat, tmp_path / "custom.tflite", quantization="int8", representative_data=x[:64],
                    verify_with=x, min_agreement=None)
    assert report.builtin_only and report.operators["FULLY_CONNECTED"] == 3 and report.operators["MUL"] == 1
    # Every operator computes in int8. Measured over 6 seeds: the file's classes equal the quantization-aware
    # model's on 0.89-1.0 of these inputs (its post-training file: 0.98-1.0). The converter folds each
    # GainDense's gain and bias into one FULLY_CONNECTED, whose kernel * gain it rounds as one tensor, where
    # training rounded the kernel and the gain apart: a registration names weights, not what the converter
    # folds them into (README, "Your own layers").
    assert report.top1_agreement >= 0.85, report


def wrapper_weights(wrapper):
    from keras_compact.layers.quantize_aware import quantized_weights

    return quantized_weights(wrapper.target)


def test_a_description_that_does_not_fit_the_layer_is_refused_with_what_it_lacks(rng):
    register_layer(GainDense, channels="new", size="units", weights={"kernel": ("in", "out")})
    try:
        with pytest.raises(ValueError, match=r"weights \['gain', 'bias'\] are not described"):
            channel_groups(_model(rng))
    finally:
        unregister_layer(GainDense)
    register_layer(GainDense, channels="new", size="units",
                   weights={"kernel": ("out", "in"), "gain": ("out",), "bias": ("out",)})
    try:
        with pytest.raises(ValueError, match=r"the 'in' axes \(1,\) of weight 'kernel' .* hold 16 values, but the "
                                             r"layer's input has 12 channels"):
            channel_groups(_model(rng))
    finally:
        unregister_layer(GainDense)


@pytest.mark.parametrize("arguments, message", [
    ({"channels": "per_channel", "weights": {}}, r"channels must be one of \('new', 'same'\) or None"),
    ({"channels": "new", "weights": {"kernel": ("in", "out")}}, "channels='new' needs size"),
    ({"channels": "new", "size": "units", "weights": {"kernel": ("in", "in")}}, "needs a weight with an 'out' axis"),
    ({"channels": "new", "size": "units", "weights": {"kernel": (0, 1)}}, r"weights\['kernel'\] must be a tuple"),
    ({"channels": "new", "size": "units", "weights": ["kernel"]}, "weights must map every weight's name"),
    ({"channels": "same", "weights": {"scale": ("in", "out")}}, "more than one channel axis"),
    ({"channels": "same", "size": "units", "weights": {"scale": ("in",)}}, "size is the output channel count"),
    ({"weights": {"kernel": ("in", "out")}}, "give channels too"),
    ({"macs": 3}, "macs must be a function"),
    ({"quantize": {"kernel": "int4"}}, r"quantize must map weight names to one of \('per_channel', 'per_tensor', "),
    ({}, "give at least one of channels"),
])
def test_register_layer_refuses_bad_arguments_naming_them(arguments, message):
    with pytest.raises(ValueError, match=message):
        register_layer(GainDense, **arguments)
    assert layer_types.lookup(GainDense).registered_by is None  # nothing half-registered


def test_built_in_types_cannot_be_registered_or_removed_but_subclasses_can():
    with pytest.raises(ValueError, match="Dense is built in; register a subclass"):
        register_layer(keras.layers.Dense, macs=_gain_dense_macs)
    with pytest.raises(ValueError, match="layer_class must be a subclass of keras.layers.Layer"):
        register_layer("Dense", macs=_gain_dense_macs)
    with pytest.raises(ValueError, match="which is built in"):
        unregister_layer(keras.layers.Dense)
    with pytest.raises(ValueError, match="which is not registered"):
        unregister_layer(GainDense)

    class WideDense(keras.layers.Dense):
        pass

    assert layer_types.lookup(WideDense) is layer_types.lookup(keras.layers.Dense)  # a Dense until registered
    register_layer(WideDense, macs=_gain_dense_macs)
    try:
        assert layer_types.lookup(WideDense(3)).macs is not layer_types.lookup(keras.layers.Dense).macs
        assert layer_types.lookup(WideDense).channels is None
    finally:
        unregister_layer(WideDense)
    assert layer_types.lookup(WideDense) is layer_types.lookup(keras.layers.Dense)


def _built_in_types():
    layer_types.lookup(keras.layers.Dense)  # loads the table
    return {cls: entry for cls, entry in layer_types._TABLE.items() if entry.registered_by == "keras_compact"}


def test_the_table_agrees_with_itself():
    """What one facet says of a type, the others do not contradict: every type that makes channels or holds
    int8 kernels has its MACs counted; a weighted type pruning cuts as matrices can be resized; what keeps its
    input's scale or fuses into the operator before it holds no weights of its own."""
    table = _built_in_types()
    assert len(table) > 60
    for cls, entry in table.items():
        named = cls.__name__
        if entry.kernel_mode is not None or entry.quantized is not None:
            assert entry.macs is not None, named
        if entry.masked_by_matrix:
            assert entry.channels is not None and entry.resize is not None, named
        if entry.in_chain or entry.elementwise:
            assert entry.channels is not None, named  # what unit merging folds through, channel groups map too
        if entry.elementwise:
            assert entry.in_chain, named
        if "own_activation" in entry.fuses:
            assert entry.splits_activation, named
    # The families of the disagreements: padding and upsampling are channel-wise for groups, and the
    # table says why unit merging does not fold through padding; Conv3DTranspose has MACs.
    assert table[keras.layers.ZeroPadding2D].channels is not None and not table[keras.layers.ZeroPadding2D].in_chain
    assert table[keras.layers.Conv3DTranspose].macs is not None


def test_the_built_in_layers_of_a_cnn_are_all_known(rng):
    """Every layer of a keras.applications CNN has an entry: MACs counted without a warning, groups mapped."""
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)
    unknown = {type(layer).__name__ for layer in model.layers if layer_types.lookup(layer).channels is None
               and not isinstance(layer, keras.layers.InputLayer)}
    assert unknown == set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert macs(model) > 0


def test_a_layer_class_defined_in_main_exports_on_tensorflow_and_is_refused_with_the_way_out_on_jax(tmp_path, rng):
    # On JAX, export converts in a TensorFlow-backend Python that loads the saved model: it imports the modules
    # that define the model's layers (as this file's, above), but cannot import a script's or notebook's.
    scale = keras.saving.register_keras_serializable(package="test_main")(
        type("MainScale", (ChannelScale,), {"__module__": "__main__"}))
    model = keras.Sequential([keras.Input((4,)), scale(), keras.layers.Dense(2)])
    x = rng.normal(size=(8, 4)).astype("float32")
    if keras.backend.backend() == "tensorflow":
        assert export(model, tmp_path / "main.tflite", verify_with=x).top1_agreement == 1.0
    else:
        with pytest.raises(ValueError, match=r"\['MainScale'\] are defined in __main__ .* Define them in a module"):
            export(model, tmp_path / "main.tflite", verify_with=x)


def test_weight_and_unit_pruning_point_a_registered_layer_to_channel_pruning(registered, rng):
    model = _model(rng)
    with pytest.raises(ValueError, match=r"\['gain_1'\] are pruned by channel only .*granularity='channel'"):
        prune(model, 0.5, granularity="unit", layers=["gain_1"])
    with pytest.raises(ValueError, match=r"Its layers \['gain_1', 'gain_2', 'scale'\] are pruned by channel only"):
        prune(model, 0.5, granularity="unit")
