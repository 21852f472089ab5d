"""Renamed arguments: the old names still work with a DeprecationWarning, and files saved with them load.

The `.keras` files in tests/data/*_before_renames.keras were saved by the code of commit e27f555, before
the renames (`ProjectionNet(l1=, l2=, l3=)`, `FanIn(l=)`/`FanOut(l=)`, `ProjectionLayer(output=)`,
`QuantizeAware(output=)`).
"""

import pathlib
import warnings

import keras
import numpy as np
import pytest

from keras_compact import ProjectionLayer, ProjectionNet
from keras_compact.layers import QuantizeAware
from keras_compact.regularizers import FanIn, FanOut

DATA = pathlib.Path(__file__).parent / "data"
X = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")


def _networks():
    trainer = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    projection = keras.Sequential([keras.Input((6,)), ProjectionLayer(8, 4), keras.layers.Dense(3, activation="softmax")])
    return trainer, projection


RENAMES = [  # (make, old keyword arguments, new keyword arguments, attribute read)
    (lambda **kw: ProjectionNet(*_networks(), **kw), dict(l1=0.7, l2=0.3, l3=2.0),
     dict(trainer_loss_weight=0.7, distillation_loss_weight=0.3, projection_loss_weight=2.0), "distillation_loss_weight"),
    (lambda **kw: FanIn(**kw), dict(l=0.02), dict(factor=0.02), "factor"),
    (lambda **kw: FanOut(**kw), dict(l=0.5, p=1), dict(factor=0.5, p=1), "factor"),
    (lambda **kw: ProjectionLayer(4, 5, **kw), dict(output="signatures"), dict(output_mode="signatures"), "output_mode"),
    (lambda **kw: QuantizeAware(keras.layers.Dense(2), **kw), dict(output=None), dict(output_mode=None), "output_mode"),
]


def _config(thing):
    config = thing.get_config()
    return {key: value for key, value in config.items() if key not in ("name", "trainer", "projection", "layer")}


@pytest.mark.parametrize("make, old, new, attribute", RENAMES)
def test_an_old_argument_name_warns_and_means_the_same(make, old, new, attribute):
    with pytest.warns(DeprecationWarning, match=r"is deprecated: the argument is now called"):
        before = make(**old)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        after = make(**new)
    assert getattr(before, attribute) == getattr(after, attribute)
    assert _config(before) == _config(after)
    assert not set(old) - set(new) & set(after.get_config())  # the config says the new names


@pytest.mark.parametrize("make, both, message", [
    (lambda **kw: ProjectionNet(*_networks(), **kw), dict(l1=0.7, trainer_loss_weight=0.9),
     "takes trainer_loss_weight \\(new\\) or l1 \\(deprecated\\), not both"),
    (lambda **kw: FanIn(**kw), dict(l=0.02, factor=0.5), "takes factor \\(new\\) or l \\(deprecated\\)"),
    (lambda **kw: ProjectionLayer(4, 5, **kw), dict(output="bits", output_mode="signatures"),
     "takes output_mode \\(new\\) or output \\(deprecated\\)"),
    (lambda **kw: QuantizeAware(keras.layers.Dense(2), **kw), dict(output=None, output_mode=(0.0, 1.0)),
     "takes output_mode \\(new\\) or output \\(deprecated\\)"),
])
def test_an_old_and_a_new_name_with_different_values_are_refused(make, both, message):
    with pytest.raises(ValueError, match=message):
        make(**both)


def test_errors_name_the_argument_as_the_caller_wrote_it():
    with pytest.raises(ValueError, match=r"l1 must be a number >= 0. Received: l1=-1"), pytest.warns(DeprecationWarning):
        ProjectionNet(*_networks(), l1=-1)
    with pytest.raises(ValueError, match=r"^factor must be a number >= 0. Received: factor=-1"):
        FanIn(factor=-1)
    with pytest.raises(ValueError, match=r"output must be one of"), pytest.warns(DeprecationWarning):
        ProjectionLayer(4, 5, output="words")


def test_old_attribute_names_warn_and_read_the_new_ones():
    net = ProjectionNet(*_networks(), projection_loss_weight=2.0)
    with pytest.warns(DeprecationWarning, match=r"ProjectionNet.l3 is deprecated: read .projection_loss_weight"):
        assert net.l3 == 2.0
    with pytest.warns(DeprecationWarning, match=r"FanIn.l is deprecated: read .factor"):
        assert FanIn(factor=0.25).l == 0.25


def _load_quietly(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # a saved file is not the user's call: no warning
        return keras.models.load_model(DATA / name)


def test_a_projection_net_saved_with_l1_l2_l3_loads_with_its_weights():
    net = _load_quietly("projection_net_before_renames.keras")
    assert (net.trainer_loss_weight, net.distillation_loss_weight, net.projection_loss_weight, net.temperature) \
        == (0.7, 0.3, 2.0, 2.0)
    rebuilt = ProjectionNet(keras.models.clone_model(net.trainer), keras.models.clone_model(net.projection),
                            trainer_loss_weight=0.7, distillation_loss_weight=0.3, projection_loss_weight=2.0)
    rebuilt.projection.set_weights(net.projection.get_weights())
    np.testing.assert_array_equal(net.predict(X, verbose=0), rebuilt.predict(X, verbose=0))
    net.compile("adam")
    history = net.fit(X, np.arange(8) % 3, epochs=1, verbose=0)  # and it trains on
    assert np.isfinite(history.history["loss"]).all()


def test_a_model_saved_with_fan_penalties_of_l_loads_with_their_factors():
    model = _load_quietly("fan_penalties_before_renames.keras")
    hidden, classes = model.layers
    assert (type(hidden.kernel_regularizer), hidden.kernel_regularizer.factor, hidden.kernel_regularizer.p) \
        == (FanIn, 0.02, 1.0)
    assert (type(classes.kernel_regularizer), classes.kernel_regularizer.factor) == (FanOut, 0.5)
    model(X)
    expected = 0.02 * np.abs(keras.ops.convert_to_numpy(hidden.kernel)).sum()  # p=1: the plain L1 penalty
    assert float(keras.ops.convert_to_numpy(hidden.kernel_regularizer(hidden.kernel))) == pytest.approx(
        expected, rel=1e-4)


def test_a_projection_layer_saved_with_output_loads_with_its_output_mode():
    model = _load_quietly("projection_signatures_before_renames.keras")
    layer = model.layers[-1]
    assert (layer.output_mode, layer.num_hashes, layer.num_bits, layer.seed) == ("signatures", 4, 5, 1)
    fresh = ProjectionLayer(4, 5, output_mode="signatures", seed=1)
    np.testing.assert_array_equal(model.predict(X, verbose=0), keras.ops.convert_to_numpy(fresh(X)))


def test_a_quantization_aware_model_saved_with_output_loads_with_its_ranges():
    model = _load_quietly("quantize_aware_before_renames.keras")
    classes = model.get_layer("classes_quant")
    assert classes.output_mode == (0.0, 255 / 256) and model.get_layer("hidden_quant").output_mode == "learned"
    outputs = keras.ops.convert_to_numpy(model.predict(X, verbose=0))
    assert outputs.shape == (8, 3) and np.allclose(outputs.sum(1), 1.0, atol=0.02)
