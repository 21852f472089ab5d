"""Issue 21: inputs that used to give a silent wrong result, or a crash deep inside
TensorFlow, LiteRT or NumPy, now give a clear error (or the right result)."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import ProjectionLayer, ProjectionNet
from tflite_export import _cli, export, predict, verify

export_here = pytest.mark.tensorflow_backend(
    "converts in this process; other backends convert in a TensorFlow subprocess, tested in test_backends.py"
)


def _diverged_model():
    """A trained-looking model whose first kernel went NaN (a diverged run)."""
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(hidden))
    model.get_layer("hidden").kernel.assign(np.full((6, 4), np.nan, "float32"))
    return model


def _token_model(dtype):
    inputs = keras.Input((8,), dtype=dtype, name="ids")
    embedded = keras.layers.Embedding(50, 4)(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))


_IDS = np.random.default_rng(0).integers(0, 50, (16, 8))


# 1. Non-finite outputs pass verification.
@export_here
def test_export_refuses_a_model_whose_outputs_are_nan_naming_the_weights(tmp_path):
    target = tmp_path / "diverged.tflite"
    with pytest.raises(ValueError, match=r"outputs are NaN or infinite for 64 of the 64 .*hidden/kernel.*"
                                         r"allow_non_finite=True"):
        export(_diverged_model(), target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@export_here
def test_allow_non_finite_writes_the_file_warns_and_counts(tmp_path):
    model = _diverged_model()
    with pytest.warns(UserWarning, match="NaN or infinite"):
        report = export(model, tmp_path / "diverged.tflite", allow_non_finite=True)
    assert report.non_finite_outputs == 64 and report.num_examples == 0
    assert report.top1_agreement is None and "64 with NaN/inf outputs left out" in str(report)
    with pytest.warns(UserWarning, match="file's outputs are NaN or infinite for 2 of 2"):
        assert np.isnan(predict(report.path, np.ones((2, 6), "float32"))).all()
    with pytest.warns(UserWarning, match="hidden/kernel"):
        verification = verify(model, report.path, np.ones((3, 6), "float32"))
    assert verification.non_finite_outputs == 3 and verification.top1_agreement is None


@export_here
def test_a_finite_model_predicts_without_a_warning(tmp_path):
    model = _token_model("int32")
    report = export(model, tmp_path / "ids.tflite", verify_with=_IDS)
    assert report.non_finite_outputs == 0 and report.top1_agreement == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(report.path, _IDS[:2])


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_allow_non_finite_must_be_a_bool(tmp_path, value):
    with pytest.raises(ValueError, match="allow_non_finite must be True or False"):
        export(_diverged_model(), tmp_path / "m.tflite", allow_non_finite=value)


@export_here
def test_command_line_refuses_nan_outputs_and_accepts_the_switch(tmp_path, capsys):
    _diverged_model().save(tmp_path / "diverged.keras")
    arguments = ["export", str(tmp_path / "diverged.keras"), "-o", str(tmp_path / "m.tflite")]
    assert _cli.main(arguments) == 2
    err = capsys.readouterr().err
    assert "Pass --allow-non-finite to write" in err and "allow_non_finite" not in err
    with pytest.warns(UserWarning, match="NaN or infinite"):
        assert _cli.main(arguments + ["--allow-non-finite"]) == 0
    assert (tmp_path / "m.tflite").exists()


def test_min_agreement_none_the_library_suggests_is_accepted_by_the_command_line():
    parsed = _cli._parser("keras-compact").parse_args(["export", "m.keras", "-o", "m.tflite", "--min-agreement", "none"])
    assert parsed.min_agreement is None


# 1. Inputs the file cannot represent are silently changed.
@export_here
@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_predict_refuses_fractional_and_out_of_range_token_ids(tmp_path, dtype):
    path = export(_token_model(dtype), tmp_path / "ids.tflite", verify_with=_IDS.astype(dtype)).path
    with pytest.raises(ValueError, match=r"input 'ids' must be whole numbers.*1\.7 would be truncated"):
        predict(path, np.full((1, 8), 1.7))
    with pytest.raises(ValueError, match=r"input 'ids' must be whole numbers"):
        predict(path, np.full((1, 8), np.nan))
    with pytest.raises(ValueError, match=r"embedding with 50 rows.*\[0, 50\).*Received: 60"):
        predict(path, np.full((1, 8), 60))
    with pytest.raises(ValueError, match=r"Received: -51"):
        predict(path, np.full((1, 8), -51))
    # Whole floats and ids counted from the end, as Keras's Embedding takes them, are fine.
    np.testing.assert_allclose(predict(path, np.full((1, 8), 3.0)), predict(path, np.full((1, 8), -47)), atol=1e-6)


@export_here
def test_export_and_verify_refuse_ids_the_model_cannot_take(tmp_path):
    model = _token_model("int32")
    with pytest.raises(ValueError, match=r"verify_with for input 'ids' must be whole numbers"):
        export(model, tmp_path / "a.tflite", verify_with=np.full((2, 8), 1.5))
    with pytest.raises(ValueError, match=r"verify_with for input 'ids' are token ids of an embedding with 50 rows"):
        export(model, tmp_path / "b.tflite", verify_with=np.full((2, 8), 50))
    assert list(tmp_path.iterdir()) == []
    path = export(model, tmp_path / "c.tflite", verify_with=_IDS).path
    with pytest.raises(ValueError, match=r"inputs for input 'ids' are token ids"):
        verify(model, path, np.full((2, 8), 99))


# 1. Labels the model cannot learn from are accepted.
def _binary_networks(activation="sigmoid", units=1):
    trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(units, activation=activation)])
    projection = keras.Sequential([keras.Input((64,)), ProjectionLayer(40, 8),
                                   keras.layers.Dense(units, activation=activation)])
    return trainer, projection


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_one_unit_projection_net_learns_a_binary_task(digits, activation):
    (x_train, y_train), (x_test, y_test) = digits
    y_train, y_test = (y_train >= 5).astype("int32"), (y_test >= 5).astype("int32")
    net = ProjectionNet(*_binary_networks(activation))
    net.compile("adam")
    history = net.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0).history
    # A softmax over one unit gave loss 0 and accuracy 1 from the first epoch.
    assert history["projection_loss"][-1] > 0.05 and history["projection_loss"][-1] < history["projection_loss"][0]
    assert net.outputs_logits == {"trainer": activation is None, "projection": activation is None}
    scores = net.predict(x_test, verbose=0)[:, 0]
    accuracy = np.mean((scores > (0.5 if activation else 0.0)) == y_test)
    assert accuracy > 0.8, accuracy  # measured 0.88-0.89 on this split; chance is 0.5
    assert 0.8 < net.evaluate(x_test, y_test, verbose=0, return_dict=True)["projection_accuracy"] <= 1


def test_one_unit_binary_loss_is_binary_cross_entropy():
    net = ProjectionNet(*_binary_networks(), trainer_loss_weight=0.0, distillation_loss_weight=0.0, projection_loss_weight=1.0)
    probabilities = keras.ops.convert_to_tensor(np.array([[0.9], [0.2], [0.6]], "float32"))
    labels = np.array([1, 0, 0])
    losses, _, _ = net._joint_losses(probabilities, probabilities, labels, None)
    expected = keras.losses.BinaryCrossentropy()(labels[:, None].astype("float32"), probabilities)
    np.testing.assert_allclose(float(losses["projection_loss"]), float(expected), rtol=1e-5)


@pytest.mark.parametrize(
    "make_networks, message",
    [
        (lambda: _binary_networks("softmax"), "a softmax over one unit is always 1"),
        (lambda: _binary_networks("sigmoid", units=3), "a sigmoid over 3 units"),
    ],
)
def test_networks_that_cannot_learn_class_labels_are_refused(make_networks, message):
    with pytest.raises(ValueError, match=message):
        ProjectionNet(*make_networks())


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array(["jazz", "rock"] * 32), "numeric class labels.*StringLookup"),
        (np.array([0.5, 1.0] * 32), "whole class ids; 0.5 is not"),
        (np.array([0, 10] * 32), r"class ids in \[0, 10\). Received ids from 0 to 10"),
        (np.array([-1, 2] * 32), r"class ids in \[0, 10\)"),
        (np.full(64, np.nan), "NaN or infinite labels"),
        (np.eye(10)[np.arange(64) % 10] * 2, "non-negative, each summing to 1"),
        (np.eye(4)[[0, 1] * 32], "one column per class"),
    ],
)
def test_labels_the_networks_cannot_learn_from_are_refused_before_training(labels, message):
    net = ProjectionNet(*_networks10())
    net.compile("adam")
    x = np.random.default_rng(0).uniform(size=(64, 64)).astype("float32")
    for run in (lambda: net.fit(x, labels, epochs=1, verbose=0), lambda: net.evaluate(x, labels, verbose=0)):
        with pytest.raises(ValueError, match=message):
            run()
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    with pytest.raises(ValueError, match=message):
        net.fit(dataset, epochs=1, verbose=0)


def test_fit_without_labels_and_nan_inputs_say_what_is_wrong():
    net = ProjectionNet(*_networks10())
    net.compile("adam")
    x = np.random.default_rng(0).uniform(size=(64, 64)).astype("float32")
    with pytest.raises(ValueError, match="trains on labels: pass y"):
        net.fit(x, epochs=1, verbose=0)
    x[3, 5] = np.nan
    with pytest.raises(ValueError, match="outputs are NaN or infinite: x holds NaN"):
        net.fit(x, np.zeros(64, "int32"), epochs=1, verbose=0)


def _networks10():
    return (keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")]),
            keras.Sequential([keras.Input((64,)), ProjectionLayer(20, 8), keras.layers.Dense(10, activation="softmax")]))


@pytest.mark.parametrize(
    "labels, message",
    [(np.array(["a", "b"] * 16), "numeric class labels"), (np.full(32, np.nan), "NaN or infinite labels")],
)
def test_hsic_bottleneck_refuses_string_and_nan_labels_with_the_reason(labels, message):
    from keras_compact import HSICBottleneck

    net = HSICBottleneck([keras.layers.Dense(8)], num_classes=2)
    net.compile("sgd")
    with pytest.raises(ValueError, match=message):
        net.fit(np.zeros((32, 4), "float32"), labels, batch_size=16, epochs=1, verbose=0)


# 1. Schedules that cannot know their length.
def _rampable(wrapper=True):
    from keras_compact import TargetedDropout

    hidden = keras.layers.Dense(16)
    model = keras.Sequential([keras.Input((8,)), TargetedDropout(hidden, 0.5, 0.5) if wrapper else hidden,
                              keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


_X = np.random.default_rng(0).normal(size=(96, 8)).astype("float32")
_Y = (_X[:, 0] > 0).astype("int32")


def _unknown_length():
    dataset = tf.data.Dataset.from_tensor_slices((_X, _Y)).batch(24).filter(lambda x, y: True)
    assert dataset.cardinality() == tf.data.UNKNOWN_CARDINALITY
    return dataset


@pytest.mark.parametrize("name", ["TargetedDropoutRamp", "DropoutSchedule"])
def test_step_ramps_refuse_a_dataset_of_unknown_length_and_run_with_end(name):
    from keras_compact import callbacks

    make = {"TargetedDropoutRamp": lambda **kw: callbacks.TargetedDropoutRamp((0.0, 0.9), unit="step", **kw),
            "DropoutSchedule": lambda **kw: callbacks.DropoutSchedule(0.5, schedule="linear", unit="step", **kw)}[name]
    with pytest.raises(ValueError, match=rf"{name} with unit='step' needs end here.*unknown length"):
        _rampable().fit(_unknown_length(), epochs=1, verbose=0, callbacks=[make()])
    ramp = make(end=4)
    _rampable().fit(_unknown_length(), epochs=1, verbose=0, callbacks=[ramp])
    rate = ramp.rates["target_rate"] if name == "TargetedDropoutRamp" else ramp.rate
    final = 0.9 if name == "TargetedDropoutRamp" else 0.5
    # 4 batches; Keras begins one more batch on a dataset of unknown length before it ends the epoch.
    assert final * 3 / 4 - 1e-6 <= rate <= final


def test_a_constant_rate_needs_no_length():
    from keras_compact.callbacks import TargetedDropoutRamp

    ramp = TargetedDropoutRamp(0.5, unit="step")
    _rampable().fit(_unknown_length(), epochs=1, verbose=0, callbacks=[ramp])  # no end needed, no error
    assert ramp.rates == {"target_rate": 0.5}


def test_ramps_that_cannot_finish_in_this_fit_say_so():
    from keras_compact.callbacks import GradualPruning, TargetedDropoutRamp
    from keras_compact.pruning import prunable

    with pytest.warns(UserWarning, match=r"runs epochs 0 to 0: the ramp gets 0% of the way.*unit='step'"):
        _rampable().fit(_X, _Y, epochs=1, verbose=0, callbacks=[TargetedDropoutRamp((0.0, 0.9))])
    with pytest.warns(UserWarning, match=r"epoch 0 to epoch 10, but this fit runs epochs 0 to 4: the ramp gets 40%"):
        _rampable().fit(_X, _Y, epochs=5, verbose=0, callbacks=[TargetedDropoutRamp((0.0, 0.9), end=10)])
    model = prunable(_rampable(wrapper=False))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(UserWarning, match=r"step 0 to step 1000, but this fit runs steps 0 to 11: it reaches"):
        model.fit(_X, _Y, epochs=1, batch_size=8, verbose=0, callbacks=[GradualPruning(0.8, end_step=1000)])
    with warnings.catch_warnings():  # a ramp that fits its training is silent
        warnings.simplefilter("error", UserWarning)
        model.fit(_X, _Y, epochs=2, batch_size=8, verbose=0, callbacks=[GradualPruning(0.8, frequency=4)])
        _rampable().fit(_X, _Y, epochs=3, verbose=0, callbacks=[TargetedDropoutRamp((0.0, 0.9))])


@pytest.mark.parametrize("name", [
    "TargetedDropoutRamp",
    # The same position bookkeeping; DropoutSchedule retraces the step at each new rate (43 s on JAX).
    pytest.param("DropoutSchedule", marks=pytest.mark.tensorflow_backend("TargetedDropoutRamp covers it on JAX")),
])
def test_a_resumed_fit_continues_a_step_ramp_where_the_whole_fit_has_it(name):
    from keras_compact import callbacks

    make = {"TargetedDropoutRamp": lambda: callbacks.TargetedDropoutRamp((0.0, 0.9), unit="step"),
            "DropoutSchedule": lambda: callbacks.DropoutSchedule(0.5, schedule="linear", unit="step")}[name]
    logged = "target_rate" if name == "TargetedDropoutRamp" else "dropout_rate"
    whole = _rampable().fit(_X, _Y, batch_size=24, epochs=4, verbose=0, callbacks=[make()])
    with warnings.catch_warnings():  # it reaches the ramp's end: silent
        warnings.simplefilter("error", UserWarning)
        resumed = _rampable().fit(_X, _Y, batch_size=24, epochs=4, initial_epoch=2, verbose=0, callbacks=[make()])
    np.testing.assert_allclose(resumed.history[logged], whole.history[logged][2:], atol=1e-6)


def test_a_resumed_fit_over_a_dataset_of_unknown_length_says_where_it_counts_steps_from():
    from keras_compact.callbacks import TargetedDropoutRamp

    ramp = TargetedDropoutRamp((0.0, 0.9), unit="step", end=4)
    with pytest.warns(UserWarning, match=r"counts steps from 0 in this fit, which starts at epoch 1 of a dataset "
                                         r"of unknown length"):
        _rampable().fit(_unknown_length(), epochs=2, initial_epoch=1, verbose=0, callbacks=[ramp])


def test_gradual_pruning_spreads_its_ramp_over_the_epochs_a_resumed_fit_runs():
    from keras_compact.callbacks import GradualPruning
    from keras_compact.pruning import prunable

    model = prunable(_rampable(wrapper=False))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruning = GradualPruning(0.8, frequency=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        history = model.fit(_X, _Y, batch_size=8, epochs=4, initial_epoch=2, verbose=0, callbacks=[pruning])
    assert pruning._end == 2 * 12 - 1  # this fit's 24 steps, not the 48 of epochs=4
    assert history.history["sparsity"][-1] == pytest.approx(0.8, abs=0.01)


# 1. Data-driven criteria trust their data; datasets and generators where arrays were the only way.
def _mlp(compiled=True):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(3, activation="softmax")])
    if compiled:
        model.compile("adam", "sparse_categorical_crossentropy")
    return model


_RNG = np.random.default_rng(0)
_XS = _RNG.normal(size=(200, 6)).astype("float32")
_YS = _RNG.integers(0, 3, 200)


@pytest.mark.parametrize("kwargs", [dict(criterion="onorm"), dict(merge=True), dict(criterion="taylor")])
def test_prune_refuses_nan_data_before_any_linear_algebra(kwargs):
    from keras_compact.pruning import prune

    x = _XS.copy()
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="data holds NaN or infinite values in 1 of its 200 examples"):
        prune(_mlp(), 0.5, granularity="unit", data=(x, _YS), **kwargs)
    y = _YS.astype("float32")
    y[0] = np.nan
    with pytest.raises(ValueError, match="labels y hold NaN"):
        prune(_mlp(), 0.5, granularity="unit", data=(_XS, y), **kwargs)


def test_prune_refuses_a_model_with_nan_weights():
    from keras_compact.pruning import prune

    model = _mlp()
    model.get_layer("hidden").kernel.assign(np.full((6, 8), np.nan, "float32"))
    with pytest.raises(ValueError, match="hidden/kernel hold NaN"):
        prune(model, 0.5)


def test_merge_on_fewer_samples_than_unknowns_warns():
    from keras_compact.pruning import prune

    with pytest.warns(UserWarning, match="underdetermined"):
        prune(_mlp(), 0.5, granularity="unit", data=_XS[:2], merge=True)


def _stream(kind):
    dataset = tf.data.Dataset.from_tensor_slices((_XS, _YS)).batch(32)
    if kind == "dataset":
        return dataset
    if kind == "repeated":
        return dataset.repeat()
    return (batch for batch in dataset.as_numpy_iterator())


@pytest.mark.parametrize("kind", ["dataset", "generator", "repeated"])
def test_prune_takes_data_as_a_dataset_or_generator_like_arrays(kind):
    from keras_compact.pruning import prune

    model = _mlp()
    # "taylor" differentiates with TensorFlow (its own test says so on JAX).
    for criterion in ("onorm", "taylor") if keras.backend.backend() == "tensorflow" else ("onorm",):
        from_stream = prune(model, 0.5, granularity="unit", criterion=criterion, data=_stream(kind)).model
        # The repeated dataset is read to 4,096 examples, the others to their end: the same ranking.
        from_arrays = prune(model, 0.5, granularity="unit", criterion=criterion, data=(_XS, _YS)).model
        for got, want in zip(from_stream.get_weights(), from_arrays.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@export_here
@pytest.mark.parametrize("kind", ["dataset", "generator", "repeated"])
def test_verify_with_verify_and_predict_take_a_dataset_or_generator(tmp_path, kind):
    model = _mlp(compiled=False)
    report = export(model, tmp_path / "m.tflite", verify_with=_stream(kind))
    assert report.num_examples == (1000 if kind == "repeated" else 200) and report.top1_agreement == 1.0
    assert verify(model, report.path, _stream(kind)).num_examples == report.num_examples
    if kind != "repeated":  # predict reads to the end, as model.predict does
        np.testing.assert_allclose(predict(report.path, _stream(kind)), model.predict(_XS, verbose=0), atol=1e-5)


@export_here
def test_an_empty_dataset_says_so(tmp_path):
    empty = tf.data.Dataset.from_tensor_slices(_XS).take(0).batch(4)
    with pytest.raises(ValueError, match="verify_with yielded no batches"):
        export(_mlp(compiled=False), tmp_path / "m.tflite", verify_with=empty)
    with pytest.raises(ValueError, match="representative_data yielded no batches"):
        export(_mlp(compiled=False), tmp_path / "m.tflite", quantization="int8", representative_data=empty)


# 2. Sentences without features, raw strings and mismatched ragged inputs.
_SENTENCES = ["play jazz", "", "?!", "book a table for two"]


def _text_network():
    from keras_compact import TextFeaturizer
    from keras_compact.models import projection_network

    featurizer = TextFeaturizer(ngrams=2)
    ids, weights = featurizer(tf.constant(_SENTENCES))
    assert list(ids.row_lengths().numpy()[1:3]) == [0, 0]  # "" and "?!" have no features
    return projection_network(4, 20, 8), ids, weights


@pytest.mark.tensorflow_backend("strings and ragged ids are TensorFlow tensors")
def test_sentences_without_features_go_in_as_one_feature_of_weight_zero(tmp_path):
    network, ids, weights = _text_network()
    report = export(network, tmp_path / "text.tflite", verify_with=[ids, weights])
    assert report.num_examples == 4 and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-6
    np.testing.assert_allclose(predict(report.path, [ids, weights]), network([ids, weights]).numpy(), atol=1e-6)
    assert verify(network, report.path, [ids, weights]).num_examples == 4
    int8 = export(network, tmp_path / "int8.tflite", quantization="int8", representative_data=[ids, weights],
                  verify_with=[ids, weights], min_agreement=None)
    assert int8.num_examples == 4


@pytest.mark.tensorflow_backend("ragged ids are TensorFlow tensors")
def test_an_ids_only_file_cannot_take_an_example_without_features_and_says_why(tmp_path):
    ids = keras.Input(shape=(None,), ragged=True, dtype="int64", name="ids")
    model = keras.Model(ids, keras.layers.Dense(4)(ProjectionLayer(6, 5)(ids)))
    path = export(model, tmp_path / "ids.tflite", num_random_examples=4).path
    with pytest.raises(ValueError, match=r"no features in input 'ids'.*without a weights input"):
        predict(path, tf.ragged.constant([[3, 4], []], dtype=tf.int64))


@pytest.mark.tensorflow_backend("strings and ragged ids are TensorFlow tensors")
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ids, weights: ["play jazz", "stop"], r"input 'ids' must be int64 numbers, not text.*TextFeaturizer"),
        (lambda ids, weights: [tf.constant(["play jazz"]), weights], "not text"),
        (lambda ids, weights: [ids, tf.ragged.constant([[1.0, 1.0], [], [], [0.5] * 9])],
         r"one weight per feature id.*example 0 has 2 weights and 3 ids"),
        (lambda ids, weights: [[[1, 2], [3.5]], [[0.5, 0.5], [1.0]]], r"'ids' must be whole numbers"),
        (lambda ids, weights: [[[1, 2], [[3]]], [[0.5, 0.5], [1.0]]], r"ragged input 'ids' must be a tf.RaggedTensor"),
    ],
)
def test_text_models_refuse_what_they_cannot_read_naming_the_input(tmp_path, make, message):
    network, ids, weights = _text_network()
    bad = make(ids, weights)
    with pytest.raises(ValueError, match=message):
        export(network, tmp_path / "a.tflite", verify_with=bad)
    with pytest.raises(ValueError, match=message.replace("verify_with", "representative_data")):
        export(network, tmp_path / "b.tflite", quantization="int8", representative_data=bad)
    assert list(tmp_path.iterdir()) == []


# 3. Errors that mislead: a subclassed model or a bare layer given to the pruning tools.
class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.classes = keras.layers.Dense(4), keras.layers.Dense(2)

    def call(self, x):
        return self.classes(self.hidden(x))


def _pruning_calls():
    from keras_compact import pruning

    return {
        "prune": lambda m: pruning.prune(m, 0.5), "prunable": pruning.prunable, "strip": pruning.strip,
        "shrink": pruning.shrink, "grow": lambda m: pruning.grow(m, "dense", 2), "macs": pruning.macs,
        "recalibrate_batch_norm": lambda m: pruning.recalibrate_batch_norm(m, np.zeros((4, 3), "float32")),
        "targeted": lambda m: pruning.targeted(m, 0.5, 0.5),
    }


@pytest.mark.parametrize("function", sorted(_pruning_calls()))
def test_pruning_tools_say_what_to_do_with_a_subclassed_model_or_a_layer(function):
    call = _pruning_calls()[function]
    subclassed = _Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    inputs = keras.Input((3,))
    wrapped = keras.Model(inputs, subclassed(inputs))  # export's advice; the layers stay hidden
    for model in (subclassed, wrapped):
        with pytest.raises(ValueError, match=rf"{function} works on the layers.*_Subclassed '.*' is a subclassed "
                                             r"model.*keras.Model\(inputs, outputs\)"):
            call(model)
    with pytest.raises(TypeError, match=rf"{function} expects a keras.Model. Received: model=Dense. To use one layer"):
        call(keras.layers.Dense(3))


def test_command_line_path_errors_answer_before_tensorflow_loads(tmp_path):
    import subprocess
    import sys

    (tmp_path / "model.keras").write_bytes(b"not read: a flag's file is wrong first")
    (tmp_path / "a_text.py").write_text("print('hello')\n")
    model, missing = str(tmp_path / "model.keras"), str(tmp_path / "missing")
    cases = [
        (["inspect", missing + ".tflite"], "No such .tflite file"),
        (["export", missing + ".keras", "-o", "m.tflite"], "No such model file"),
        (["export", model, "-o", "m.tflite", "--labels", missing + ".txt"], "No such --labels file"),
        (["export", model, "-o", "m.tflite", "--representative", str(tmp_path / "a_text.py")],
         "is not an .npz archive"),
    ]
    code = (
        "import sys\nfrom tflite_export import _cli\n"
        f"for argv, message in {cases!r}:\n"
        "    assert _cli.main(argv) == 2\n"
        "print('TENSORFLOW LOADED' if 'tensorflow' in sys.modules else 'NO TENSORFLOW')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "NO TENSORFLOW" in result.stdout, result.stderr[-2000:]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(cases) and "pickle" not in result.stderr
    for (_, message), line in zip(cases, errors):
        assert message in line, line


@export_here
@pytest.mark.parametrize("output", ["bits", "signatures"])
@pytest.mark.parametrize("build", ["sequential", "functional", "bits and classes"])
def test_a_projection_layer_as_the_model_output_exports(tmp_path, output, build):
    inputs = keras.Input((16,), name="features")
    bits = ProjectionLayer(4, 6, output_mode=output)(inputs)
    if build == "sequential":
        model = keras.Sequential([keras.Input((16,), name="features"), ProjectionLayer(4, 6, output_mode=output)])
    elif build == "functional":
        model = keras.Model(inputs, bits)
    else:
        model = keras.Model(inputs, [bits, keras.layers.Dense(3)(keras.layers.Embedding(4 * 64, 2)(bits)
                                                                  if output == "signatures" else bits)])
    report = export(model, tmp_path / "bits.tflite")
    # The bits are exact; a Dense after them is float arithmetic, whose last bit depends on the CPU's kernels.
    assert report.operators["LSH_PROJECTION"] == 1 and report.max_abs_diff <= (0 if build != "bits and classes" else 1e-6)
    x = np.random.default_rng(1).uniform(size=(5, 16)).astype("float32")
    got, want = predict(report.path, x), model(x)
    for a, b in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
        np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), atol=1e-6)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@export_here
@pytest.mark.parametrize("quantization", [None, "float16"])
def test_a_mixed_float16_model_exports_computing_in_float32(tmp_path, mixed_float16, quantization, digits):
    from keras_compact.pruning import prunable

    (x_train, y_train), (x_test, _) = digits
    model = keras.Sequential([keras.Input((64,), name="pixels"), ProjectionLayer(20, 8),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model = prunable(model)  # wrappers under the policy too
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, verbose=0)
    assert model.layers[-1].compute_dtype == "float16"
    report = export(model, tmp_path / "mixed.tflite", verify_with=x_test, quantization=quantization)
    assert report.builtin_only and report.top1_agreement >= 0.99, report
    assert report.max_abs_diff < 5e-3  # float16 computation against float32
    assert model.layers[-1].compute_dtype == "float16"  # the user's model is unchanged


def _python_input_cases():
    from keras_compact import HadamardClassifier, TargetedDropout
    from keras_compact.layers import QRNN, FeatureBuckets, TextFeaturizer, TextViews, TokenBuckets
    from keras_compact.pruning import PruningMask

    numbers, text = [[0.1, 0.2, 0.3]], ["play jazz", "stop"]
    return [
        ("projection", lambda: ProjectionLayer(4, 6), [numbers, "play jazz", [[1, 2], [3]]], r"float tensor \(batch, features\)"),
        ("hadamard", lambda: HadamardClassifier(10), [numbers, "abc"], r"float tensor \(batch, features\)"),
        ("qrnn", lambda: QRNN(4), [[numbers]], r"float tensor \(batch, time, features\)"),
        ("targeted_dropout", lambda: TargetedDropout(keras.layers.Dense(3)), [numbers], "what its wrapped layer takes"),
        ("pruning_mask", lambda: PruningMask(keras.layers.Dense(3)), [numbers], "what its wrapped layer takes"),
        ("text_featurizer", lambda: TextFeaturizer(), [text, "play jazz"], "string tensor of sentences"),
        ("token_buckets", lambda: TokenBuckets(100, 4), [text], "string tensor of sentences"),
        ("text_views", lambda: TextViews({"tokens": TokenBuckets(50, 3)}), [text], "string tensor of sentences"),
        ("feature_buckets", lambda: FeatureBuckets(100, 4), [[[1, 2], [3]]], r"\[ids, weights\]"),
    ]


@pytest.mark.parametrize("name, make, values, message", _python_input_cases(), ids=[c[0] for c in _python_input_cases()])
def test_python_lists_and_strings_passed_to_a_layer_say_what_it_takes(name, make, values, message):
    if name in ("text_featurizer", "token_buckets", "text_views", "feature_buckets") and keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow-ops layer; on other backends it says it needs TensorFlow first")
    for value in values:
        layer = make()
        with pytest.raises(ValueError, match=rf"{type(layer).__name__} '.*' takes .*{message}.*Received a Python "
                                             rf"{type(value).__name__}.*Convert it first"):
            layer(value)


@pytest.mark.tensorflow_backend("ragged ids")
def test_a_list_of_ragged_tensors_still_reaches_the_projection():
    ids = tf.ragged.constant([[1, 5], [2]], dtype=tf.int64)
    weights = tf.ragged.constant([[0.5, 1.0], [3.0]])
    assert tuple(ProjectionLayer(4, 5)([ids, weights]).shape) == (2, 20)


_OTHER_BACKEND = pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="what a JAX (non-TensorFlow) user meets")


@_OTHER_BACKEND
@pytest.mark.parametrize("builder", ["lstm_trainer", "bag_of_ngrams", "projection_network"])
def test_text_model_builders_say_they_need_tensorflow_on_jax(builder):
    from keras_compact import models

    arguments = (3, 8, 4) if builder == "projection_network" else (3,)
    with pytest.raises(RuntimeError, match=r"text model reading ragged feature ids.*needs the TensorFlow backend.*"
                                           r"sequence_network"):
        getattr(models, builder)(*arguments)
    assert models.sequence_network(3).inputs[0].dtype == "int32"  # the one that trains here


@_OTHER_BACKEND
def test_a_tensorflow_saved_text_projection_net_says_it_needs_tensorflow_on_jax(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "text_net.keras"
    code = (
        "import keras\nfrom keras_compact import ProjectionNet\n"
        "from keras_compact.models import bag_of_ngrams, projection_network\n"
        f"ProjectionNet(bag_of_ngrams(3), projection_network(3, 8, 4)).save({str(path)!r})\n"
    )
    made = subprocess.run([sys.executable, "-c", code], env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    with pytest.raises(RuntimeError, match=r"ProjectionNet's trainer network reads ragged feature ids.*TensorFlow backend"):
        keras.models.load_model(path)


def test_hsic_bottleneck_checks_a_datasets_first_batch_of_labels():
    from keras_compact import HSICBottleneck

    net = HSICBottleneck([keras.layers.Dense(8)], num_classes=3)
    net.compile("sgd")
    x = np.zeros((32, 4), "float32")
    for labels, message in ((np.full(32, 5), r"Labels must be in \[0, num_classes=3\)"), (np.full(32, 0.5), "whole class ids")):
        with pytest.raises(ValueError, match=message):
            net.fit(tf.data.Dataset.from_tensor_slices((x, labels)).batch(16), epochs=1, verbose=0)


@export_here
def test_int8_calibration_refuses_nan_representative_data(tmp_path):
    x = _XS.copy()
    x[7, 1] = np.inf
    with pytest.raises(ValueError, match="representative_data holds NaN or infinite values in 1 of its 200"):
        export(_mlp(compiled=False), tmp_path / "m.tflite", quantization="int8", representative_data=x)
    assert list(tmp_path.iterdir()) == []
