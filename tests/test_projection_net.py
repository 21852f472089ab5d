import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_mirrored_like_one_device
from keras_compact import ProjectionLayer, ProjectionNet


def _networks(num_features=64, num_classes=10, hidden=128):
    trainer = keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="trainer",
    )
    projection = keras.Sequential(
        [
            keras.Input((num_features,)),
            ProjectionLayer(60, 12),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="projection",
    )
    return trainer, projection


def test_fit_trains_both_networks_on_real_digits_and_reports_both(digits):
    (x_train, y_train), (x_test, y_test) = digits
    net = ProjectionNet(*_networks())
    net.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = net.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    for name in ("loss", "trainer_loss", "distillation_loss", "projection_loss",
                 "trainer_accuracy", "projection_accuracy"):
        assert name in history.history
    scores = net.evaluate(x_test, y_test, return_dict=True, verbose=0)
    assert scores["trainer_accuracy"] > 0.93, scores
    assert scores["projection_accuracy"] > 0.90, scores
    predictions = net.predict(x_test, verbose=0)
    np.testing.assert_allclose(predictions, net.projection.predict(x_test, verbose=0), atol=1e-6)


def test_loss_is_the_weighted_sum_of_the_three_terms(digits):
    (x_train, y_train), _ = digits
    net = ProjectionNet(*_networks(), trainer_loss_weight=0.7, distillation_loss_weight=0.3, projection_loss_weight=2.0)
    net.compile(optimizer="adam")
    scores = net.evaluate(x_train[:256], y_train[:256], batch_size=256, return_dict=True, verbose=0)
    expected = 0.7 * scores["trainer_loss"] + 0.3 * scores["distillation_loss"] + 2.0 * scores["projection_loss"]
    assert scores["loss"] == pytest.approx(expected, rel=1e-5)


def test_distillation_does_not_push_gradients_into_the_trainer(digits):
    (x_train, y_train), _ = digits
    trainer, projection = _networks()
    net = ProjectionNet(trainer, projection, trainer_loss_weight=0.0, distillation_loss_weight=1.0, projection_loss_weight=0.0)
    net.compile(optimizer=keras.optimizers.SGD(0.5))
    before_trainer = [w.copy() for w in trainer.get_weights()]
    before_projection = [w.copy() for w in projection.get_weights()]
    net.fit(x_train[:64], y_train[:64], batch_size=64, epochs=1, verbose=0)
    for before, after in zip(before_trainer, trainer.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(b, a) for b, a in zip(before_projection, projection.get_weights()))


def test_one_hot_labels_give_the_same_losses_as_integer_labels(digits):
    (x_train, y_train), _ = digits
    net = ProjectionNet(*_networks(), temperature=2.0)
    net.compile(optimizer="adam")
    sparse = net.evaluate(x_train[:128], y_train[:128], return_dict=True, verbose=0)
    dense = net.evaluate(x_train[:128], np.eye(10)[y_train[:128]], return_dict=True, verbose=0)
    for name in sparse:
        assert dense[name] == pytest.approx(sparse[name], rel=1e-6)


def test_logit_outputs_with_from_logits():
    trainer = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    projection = keras.Sequential([keras.Input((8,)), ProjectionLayer(4, 4), keras.layers.Dense(3)])
    net = ProjectionNet(trainer, projection, from_logits=True)
    net.compile(optimizer="adam")
    x = np.random.default_rng(0).uniform(size=(32, 8)).astype("float32")
    history = net.fit(x, np.arange(32) % 3, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def _logit_networks(num_classes=10):
    trainer = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(num_classes)]
    )
    projection = keras.Sequential()  # built with .add(), as the README does
    projection.add(keras.Input((64,)))
    projection.add(ProjectionLayer(60, 12))
    projection.add(keras.layers.Dense(num_classes))
    return trainer, projection


def test_logit_networks_train_well_without_from_logits(digits):
    # Used to train silently to chance (20% / 13% on digits): logits were read as probabilities.
    (x_train, y_train), (x_test, y_test) = digits
    net = ProjectionNet(*_logit_networks())
    assert net.outputs_logits == {"trainer": True, "projection": True}
    net.compile(optimizer=keras.optimizers.Adam(1e-3))
    net.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    scores = net.evaluate(x_test, y_test, return_dict=True, verbose=0)
    assert scores["trainer_accuracy"] > 0.93 and scores["projection_accuracy"] > 0.88, scores


def test_each_network_is_read_from_its_own_last_layer():
    trainer, _ = _logit_networks()
    _, projection = _networks()
    net = ProjectionNet(trainer, projection)
    assert net.outputs_logits == {"trainer": True, "projection": False}
    softmax_layer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10), keras.layers.Softmax()])
    assert ProjectionNet(softmax_layer, projection).outputs_logits["trainer"] is False


def test_logits_said_to_be_probabilities_raise_before_training(digits):
    (x_train, y_train), _ = digits
    net = ProjectionNet(*_logit_networks(), from_logits=False)
    net.compile(optimizer="adam")
    before = [w.copy() for w in net.get_weights()]
    with pytest.raises(ValueError, match=r"told that the trainer network outputs probabilities.*from_logits=True"):
        net.fit(x_train, y_train, epochs=1, verbose=0)
    for a, b in zip(before, net.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_subclassed_networks_are_decided_from_the_first_batch(digits):
    (x_train, y_train), _ = digits

    class Logits(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(64, activation="relu")
            self.out = keras.layers.Dense(10)

        def call(self, x):
            return self.out(self.hidden(x))

    net = ProjectionNet(Logits(), _networks()[1])
    assert net.outputs_logits["trainer"] is None
    net.compile(optimizer="adam")
    net.fit(tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(32), epochs=1, verbose=0)
    assert net.outputs_logits == {"trainer": True, "projection": False}


def test_different_class_counts_are_refused_at_construction():
    trainer, _ = _logit_networks(num_classes=10)
    _, projection = _logit_networks(num_classes=7)
    with pytest.raises(ValueError, match="same number of classes. Received: trainer outputs 10, projection outputs 7"):
        ProjectionNet(trainer, projection)


def test_numpy_scalars_are_numbers_and_nan_is_not():
    net = ProjectionNet(*_networks(), trainer_loss_weight=np.float32(0.5), distillation_loss_weight=np.int64(1),
                        temperature=np.float64(2.0))
    assert (net.trainer_loss_weight, net.distillation_loss_weight, net.temperature) == (0.5, 1.0, 2.0)
    for name in ("trainer_loss_weight", "distillation_loss_weight", "projection_loss_weight", "temperature"):
        with pytest.raises(ValueError, match=f"{name}=nan"):
            ProjectionNet(*_networks(), **{name: float("nan")})
    with pytest.raises(ValueError, match="from_logits=1"):
        ProjectionNet(*_networks(), from_logits=1)


def test_save_and_load_round_trip(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    net = ProjectionNet(*_networks(), distillation_loss_weight=0.25, temperature=3.0)
    net.compile(optimizer="adam")
    net.fit(x_train[:128], y_train[:128], epochs=1, verbose=0)
    path = tmp_path / "net.keras"
    net.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, ProjectionNet)
    assert (restored.distillation_loss_weight, restored.temperature) == (0.25, 3.0)
    np.testing.assert_allclose(restored.predict(x_test, verbose=0), net.predict(x_test, verbose=0), atol=1e-6)
    np.testing.assert_allclose(
        restored.trainer.predict(x_test, verbose=0), net.trainer.predict(x_test, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(trainer_loss_weight=-1.0), "trainer_loss_weight=-1.0"),
        (dict(distillation_loss_weight="a"), "distillation_loss_weight='a'"),
        (dict(trainer_loss_weight=0, distillation_loss_weight=0, projection_loss_weight=0), "At least one"),
        (dict(temperature=0), "temperature=0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProjectionNet(*_networks(), **kwargs)


def test_non_model_networks_are_rejected():
    with pytest.raises(ValueError, match="trainer must be a keras.Model"):
        ProjectionNet(keras.layers.Dense(3), _networks()[1])


_MIRRORED_SCRIPT = """
    from keras_compact import ProjectionLayer, ProjectionNet

    def build():
        keras.utils.set_random_seed(0)
        trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                    keras.layers.Dense(10, activation="softmax")])
        projection = keras.Sequential([keras.Input((64,)), ProjectionLayer(10, 8),
                                       keras.layers.Dense(10, activation="softmax")])
        net = ProjectionNet(trainer, projection)
        net.compile(optimizer=keras.optimizers.SGD(0.1))
        return net

    def train(net):
        net.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        return net.get_weights()
"""


@pytest.mark.tensorflow_backend("tf.distribute")
def test_trains_under_mirrored_strategy_on_two_cpus_like_one_device():
    run_mirrored_like_one_device(_MIRRORED_SCRIPT)


def test_compile_refuses_a_loss_and_computes_metrics_on_the_projection(digits):
    (x_train, y_train), _ = digits
    trainer, projection = _networks()
    net = ProjectionNet(trainer, projection)
    with pytest.raises(ValueError, match="compile takes no loss. Received: loss='mse'"):
        net.compile("adam", loss="mse")
    net.compile("adam", metrics=["accuracy"])
    history = net.fit(x_train[:256], y_train[:256], epochs=1, verbose=0)
    assert history.history["accuracy"][0] == pytest.approx(history.history["projection_accuracy"][0], abs=1e-6)
