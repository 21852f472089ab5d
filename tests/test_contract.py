"""Every public layer and model keeps the contract of `contract.py`; a new one joins the lists below."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact
from contract import LayerCase, run_layer_test
from keras_compact import HadamardClassifier, HSICBottleneck, ProjectionLayer, ProjectionNet, TargetedDropout
from keras_compact.layers import QRNN, FeatureBuckets, QuantizeAware, TextFeaturizer, TextViews, TokenBuckets
from keras_compact.pruning import PruningMask

_X = np.random.default_rng(0).uniform(-1, 1, size=(5, 16)).astype("float32")
_IDS = tf.ragged.constant([[1, 5, 9], [2], [7, 7]], dtype=tf.int64)
_WEIGHTS = tf.ragged.constant([[0.5, 1.0, -2.0], [3.0], [1.0, 1.0]], dtype=tf.float32)


def _dense_input():
    return [keras.Input((16,), name="features")]


def _ragged_inputs():
    return [
        keras.Input((None,), ragged=True, dtype="int64", name="ids"),
        keras.Input((None,), ragged=True, dtype="float32", name="weights"),
    ]


LAYER_CASES = [
    LayerCase("projection_bits", lambda: ProjectionLayer(8, 6), _dense_input, lambda: _X, (5, 48), "float32", 0, 0),
    LayerCase(
        "projection_signatures", lambda: ProjectionLayer(8, 6, output_mode="signatures", seed=3), _dense_input,
        lambda: _X, (5, 8), "int32", 0, 0,
    ),
    LayerCase(
        "projection_ragged", lambda: ProjectionLayer(4, 5), _ragged_inputs, lambda: [_IDS, _WEIGHTS], (3, 20),
        "float32", 0, 0, sequential=False,
    ),
    LayerCase("hadamard", lambda: HadamardClassifier(10), _dense_input, lambda: _X, (5, 10), "float32", 1, 0),
    LayerCase(
        "hadamard_orthogonal_bias", lambda: HadamardClassifier(10, matrix="orthogonal", use_bias=True, seed=1),
        _dense_input, lambda: _X, (5, 10), "float32", 2, 0,
    ),
    LayerCase(
        "targeted_dropout", lambda: TargetedDropout(keras.layers.Dense(8), 0.5, 0.5, seed=1), _dense_input,
        lambda: _X, (5, 8), "float32", 2, 6,
    ),
    LayerCase(
        "targeted_dropout_refreshed_every_few_steps",
        lambda: TargetedDropout(keras.layers.Dense(8), 0.5, 0.5, seed=1, refresh_steps=8), _dense_input,
        lambda: _X, (5, 8), "float32", 2, 6,
    ),
    LayerCase(
        "targeted_dropout_conv_units",
        lambda: TargetedDropout(keras.layers.Conv1D(4, 3), 0.25, 1.0, granularity="unit"),
        lambda: [keras.Input((16, 1), name="signal")], lambda: _X[..., None], (5, 14, 4), "float32", 2, 2,
    ),
    LayerCase(
        "targeted_dropout_channels", lambda: TargetedDropout(keras.layers.Dense(8), 0.5, 0.5, granularity="channel"),
        _dense_input, lambda: _X, (5, 8), "float32", 2, 3,
    ),
    LayerCase("pruning_mask", lambda: PruningMask(keras.layers.Dense(8)), _dense_input, lambda: _X, (5, 8), "float32", 2, 2),
    LayerCase(
        "pruning_mask_of_targeted_dropout_units",
        lambda: PruningMask(TargetedDropout(keras.layers.Dense(8), 0.5, 0.5, seed=2), granularity="unit"),
        _dense_input, lambda: _X, (5, 8), "float32", 2, 8,
    ),
    LayerCase(
        "pruning_mask_of_lstm_units", lambda: PruningMask(keras.layers.LSTM(3), granularity="channel"),
        lambda: [keras.Input((4, 4), name="sequence")], lambda: _X.reshape(5, 4, 4), (5, 3), "float32", 3, 3,
    ),
    LayerCase(
        "pruning_mask_of_embedding", lambda: PruningMask(keras.layers.Embedding(16, 3), granularity="channel"),
        lambda: [keras.Input((4,), dtype="int32", name="ids")], lambda: (np.arange(20) % 16).reshape(5, 4),
        (5, 4, 3), "float32", 1, 1,
    ),
    LayerCase("quantize_aware", lambda: QuantizeAware(keras.layers.Dense(8)), _dense_input, lambda: _X, (5, 8),
              "float32", 2, 2),
    LayerCase(
        "quantize_aware_inputs_softmax",
        lambda: QuantizeAware(keras.layers.Dense(8), activation="softmax", output_mode=(0.0, 255 / 256), quantize_inputs=True),
        _dense_input, lambda: _X, (5, 8), "float32", 2, 3,
    ),
    LayerCase(
        "quantize_aware_pruned_conv", lambda: QuantizeAware(PruningMask(keras.layers.Conv1D(4, 3)), ema_decay=0.9),
        lambda: [keras.Input((16, 1), name="signal")], lambda: _X[..., None], (5, 14, 4), "float32", 2, 4,
    ),
    LayerCase(
        "feature_buckets", lambda: FeatureBuckets(100, 4), _ragged_inputs, lambda: [_IDS, _WEIGHTS], (3, 4), "int32",
        0, 0, sequential=False,
    ),
    LayerCase(
        "text_featurizer", lambda: TextFeaturizer(ngrams=2, char_ngrams=(3, 3)),
        lambda: [keras.Input((), dtype="string", name="sentences")],
        lambda: tf.constant(["Hello, world!", "", "ok"]), (3, 13), "int64", 0, 0, sequential=False,
    ),
    LayerCase(
        "token_buckets", lambda: TokenBuckets(100, 4), lambda: [keras.Input((), dtype="string", name="sentences")],
        lambda: tf.constant(["Hello, world!", "", "a b c d e"]), (3, 4), "int32", 0, 0, sequential=False,
    ),
    LayerCase(
        # Outputs flatten in key order: "tokens" comes after "chars_ids" and "chars_weights".
        "text_views", lambda: TextViews({"chars": TextFeaturizer(ngrams=0, char_ngrams=(3, 3)), "tokens": TokenBuckets(50, 3)}),
        lambda: [keras.Input((), dtype="string", name="sentences")],
        lambda: tf.constant(["Hello, world!", "", "ok"]), (3, 10), "int64", 0, 0, sequential=False,
    ),
    LayerCase(
        "qrnn_bidirectional", lambda: QRNN(4, kernel_size=2), lambda: [keras.Input((4, 4), name="sequence")],
        lambda: _X.reshape(5, 4, 4), (5, 4, 8), "float32", 4, 0,
    ),
    LayerCase(
        "qrnn_forward", lambda: QRNN(3, kernel_size=3, bidirectional=False), lambda: [keras.Input((4, 4), name="sequence")],
        lambda: _X.reshape(5, 4, 4), (5, 4, 3), "float32", 2, 0,
    ),
]


def test_every_public_layer_has_a_contract_case():
    public = {
        value
        for value in vars(keras_compact.layers).values()
        if isinstance(value, type) and issubclass(value, keras.layers.Layer)
    } | {PruningMask}
    covered = {type(case.make()) for case in LAYER_CASES}
    assert public <= covered, f"layers without a contract case: {sorted(c.__name__ for c in public - covered)}"


_TENSORFLOW_ONLY = {"projection_ragged", "feature_buckets", "text_featurizer", "token_buckets", "text_views"}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.name,
            marks=[pytest.mark.tensorflow_backend("strings and ragged ids")] if case.name in _TENSORFLOW_ONLY else [],
        )
        for case in LAYER_CASES
    ],
)
def test_layer_keeps_the_contract(case, tmp_path):
    run_layer_test(case, tmp_path)


_FRESH_PROCESS = """
import sys
import numpy as np
import keras
import keras_compact  # registers the package's layers and models

x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    model = keras.models.load_model(path)
    outputs = keras.tree.flatten(model(x))[0]
    np.save(path + ".npy", np.asarray(outputs))
print("LOADED")
"""


def _models():
    trainer = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3)], name="trainer"
    )
    projection = keras.Sequential(name="projection")
    projection.add(keras.Input((16,)))
    projection.add(ProjectionLayer(6, 4))
    projection.add(keras.layers.Dense(3, activation="softmax"))
    blocks = [keras.Sequential([keras.layers.Dense(8), keras.layers.ReLU()]) for _ in range(2)]
    hsic = HSICBottleneck(blocks, num_classes=3)
    hsic.build((None, 16))
    return {
        "projection_net": ProjectionNet(trainer, projection, distillation_loss_weight=0.3, temperature=2.0),
        "hsic_bottleneck": hsic,
    }


@pytest.mark.parametrize("name", ["projection_net", "hsic_bottleneck"])
def test_model_config_round_trip_fit_and_save_load(name, tmp_path):
    model = _models()[name]
    config = model.get_config()
    assert type(model).from_config(config).get_config() == config
    y = np.arange(len(_X)) % 3
    model.compile(optimizer="adam")
    history = model.fit(_X, y, batch_size=5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(np.asarray(loaded(_X)), np.asarray(model(_X)), atol=1e-6)


def test_saved_layers_and_models_load_in_a_fresh_process(tmp_path):
    paths = []
    for case in LAYER_CASES[:2] + LAYER_CASES[3:4] + LAYER_CASES[5:6]:
        model = keras.Sequential([case.inputs()[0], case.make()])
        paths.append((tmp_path / f"{case.name}.keras", model))
    net = _models()["projection_net"]
    paths.append((tmp_path / "net.keras", net))
    for path, model in paths:
        model.save(path)
    np.save(tmp_path / "x.npy", _X)
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(_FRESH_PROCESS))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "x.npy")] + [str(path) for path, _ in paths],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0 and "LOADED" in result.stdout, result.stderr[-3000:]
    for path, model in paths:
        expected = np.asarray(keras.tree.flatten(model(_X))[0])
        np.testing.assert_allclose(np.load(str(path) + ".npy"), expected, atol=1e-6, err_msg=path.name)
