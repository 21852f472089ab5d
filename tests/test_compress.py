"""`tflite_export.compress`: a trained model and its data to a smaller verified `.tflite` file, in one call."""

import keras
import numpy as np
import pytest

from keras_compact.pruning import PruningMask
from tflite_export import CompressionReport, compress
from tflite_export._cli import main


def _images(digits):
    (x, y), (x_test, y_test) = digits
    return (x.reshape(-1, 8, 8, 1), y), (x_test.reshape(-1, 8, 8, 1), y_test)


def _trained(train, activation="softmax", batch_norm=False):
    keras.utils.set_random_seed(0)
    if batch_norm:
        layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3), keras.layers.BatchNormalization(),
                  keras.layers.ReLU()]
    else:
        layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3, activation="relu")]
    layers += [keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
               keras.layers.Dense(10, activation=activation)]
    model = keras.Sequential(layers)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=activation is None))
    model.fit(*train, epochs=8, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def images(digits):
    return _images(digits)


@pytest.fixture(scope="module")
def trained(images):
    return _trained(images[0])


def test_compress_meets_the_budget_keeps_the_accuracy_and_writes_a_verified_file(images, trained, tmp_path):
    train, test = images
    before = [w.copy() for w in trained.get_weights()]
    report = compress(trained, train, tmp_path / "digits.tflite", macs_ratio=0.5, validation_data=test, epochs=2,
                      verbose=0)
    assert [stage.name for stage in report.stages] == ["unpruned", "pruned and reconstructed",
                                                       "fine-tuned, distilled"]
    unpruned, *_, last = report.stages
    assert last.macs <= 0.5 * unpruned.macs and 0 < report.ratio < 0.9
    assert unpruned.accuracy > 0.9  # measured on TensorFlow: 95.8%; compressed 96.1%
    assert last.accuracy >= unpruned.accuracy - 0.01
    assert (tmp_path / "digits.tflite").stat().st_size == report.export.bytes == last.bytes
    assert report.export.top1_agreement >= 0.95 and last.latency_ms > 0
    assert trained.trainable and all(layer.trainable for layer in trained.layers)  # the teacher was a copy
    for a, b in zip(before, trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "| pruned and reconstructed |" in str(report) and "top-1 agreement" in str(report)


def test_every_stage_is_a_plain_keras_model_that_saves_and_reloads(images, trained, tmp_path):
    report = compress(trained, images[0], tmp_path / "plain.tflite", macs_ratio=0.6, epochs=1, verbose=0)
    for stage in report.stages:
        assert not any(isinstance(layer, PruningMask) for layer in stage.model.layers)
    report.model.save(tmp_path / "compressed.keras")
    again = keras.models.load_model(tmp_path / "compressed.keras")
    x = images[1][0][:16]
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(report.model(x)), rtol=1e-5, atol=1e-6)
    assert report.stages[1].accuracy is None  # no validation_data: nothing to measure on
    assert isinstance(report, CompressionReport)


def test_logits_batch_normalization_and_quantization_aware_int8(images, tmp_path):
    train, test = images
    model = _trained(train, activation=None, batch_norm=True)
    optimizer = keras.optimizers.Adam(1e-3)  # one instance for both fine-tunes: each gets a copy
    report = compress(model, train, tmp_path / "int8.tflite", macs_ratio=0.6, validation_data=test, epochs=1,
                      quantization="qat", optimizer=optimizer, verbose=0)
    assert [stage.name for stage in report.stages][-2:] == ["statistics re-estimated", "quantization-aware"]
    assert report.stages[-1].accuracy >= report.stages[0].accuracy - 0.03
    assert report.export.top1_agreement >= 0.95
    assert "QUANTIZE" in report.export.operators  # float in, int8 inside


def test_the_plot_draws_accuracy_against_macs(images, trained, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    report = compress(trained, images[0], tmp_path / "plot.tflite", validation_data=images[1], epochs=0, verbose=0)
    axis = report.plot()
    assert len(axis.lines[0].get_xdata()) == len(report.stages) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(macs_ratio=0.0), r"macs_ratio must be a fraction of the model's MACs in \(0, 1\]. Received: macs_ratio=0.0"),
        (dict(macs_ratio=float("nan")), "macs_ratio=nan"),
        (dict(macs_ratio=0.001), r"macs_ratio=0.001 cannot be met: removing 90% .* leaves 0\.\d+x"),
        (dict(criterion="similarity"), "criterion"),
        (dict(quantization="int4"), "quantization"),
        (dict(epochs=-1), "epochs must be an integer >= 0. Received: epochs=-1"),
        (dict(temperature=0), "temperature must be a number > 0"),
        (dict(data="x only"), r"data must be a pair \(x, y\)"),
        (dict(path="no/such/folder/model.tflite"), "path's folder does not exist: no/such/folder"),
        (dict(validation_data=(np.zeros((3, 8, 8, 1), "float32"), np.zeros(4))), "validation_data's x and y differ"),
        (dict(data=(np.full((3, 8, 8, 1), np.nan, "float32"), np.zeros(3))), "NaN"),
    ],
)
def test_bad_input_is_refused_before_any_work(images, trained, tmp_path, kwargs, message):
    arguments = {"data": images[0], "path": tmp_path / "never.tflite", "verbose": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        compress(trained, **arguments)
    assert not (tmp_path / "never.tflite").exists()


def test_a_model_without_a_loss_is_asked_for_one(images, trained, tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 1))] + [keras.layers.deserialize(keras.layers.serialize(layer))
                                                         for layer in trained.layers])
    model.set_weights(trained.get_weights())  # trained, never compiled
    with pytest.raises(ValueError, match="pass loss=..."):
        compress(model, images[0], tmp_path / "never.tflite", verbose=0)


def test_the_command_line_compresses_a_saved_model(images, trained, tmp_path, capsys):
    trained.save(tmp_path / "model.keras")
    np.savez(tmp_path / "train.npz", x=images[0][0], y=images[0][1])
    np.savez(tmp_path / "test.npz", x=images[1][0], y=images[1][1])
    status = main(["compress", str(tmp_path / "model.keras"), "--data", str(tmp_path / "train.npz"),
                   "--validation", str(tmp_path / "test.npz"), "-o", str(tmp_path / "cli.tflite"),
                   "--epochs", "1", "--quiet"])
    assert status == 0 and (tmp_path / "cli.tflite").exists()
    assert "| fine-tuned, distilled |" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", images=images[0][0])
    assert main(["compress", str(tmp_path / "model.keras"), "--data", str(tmp_path / "bad.npz"),
                 "-o", str(tmp_path / "never.tflite")]) == 2
    error = capsys.readouterr().err
    assert "--data" in error and "two arrays named x and y" in error


def test_the_command_line_offers_every_channel_criterion():
    from keras_compact.pruning._channel import CRITERIA
    from tflite_export._cli import _parser

    compress = next(action for action in _parser("keras-compact")._subparsers._group_actions[0].choices.values()
                    if action.prog.endswith("compress"))
    criterion = next(action for action in compress._actions if action.dest == "criterion")
    assert tuple(criterion.choices) == CRITERIA
