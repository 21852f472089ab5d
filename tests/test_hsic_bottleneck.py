import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import HSICBottleneck
from keras_compact.ops import gaussian_kernel, hsic, normalized_cca_hsic, normalized_hsic
from keras_compact.ops import hsic_kernels
from conftest import gradients, run_with_two_logical_cpus
from tflite_export import export


# An independent reference: plain loops over samples, no vectorisation.
def _kernel_loops(a, sigma):
    m, d = a.shape
    k = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            k[i, j] = np.exp(-np.sum((a[i] - a[j]) ** 2) / (2 * sigma**2 * d))
    return k


def _centering_loops(m):
    h = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            h[i, j] = (1.0 if i == j else 0.0) - 1.0 / m
    return h


def _hsic_loops(a, b, sigma):
    m = a.shape[0]
    k, l, h = _kernel_loops(a, sigma), _kernel_loops(b, sigma), _centering_loops(m)
    return np.trace(k @ h @ l @ h) / m**2


def _cca_loops(a, b, sigma, epsilon=1e-5):
    m = a.shape[0]
    h = _centering_loops(m)
    operators = []
    for value in (a, b):
        centred = h @ _kernel_loops(value, sigma) @ h
        operators.append(centred @ np.linalg.inv(centred + epsilon * m * np.eye(m)))
    return np.trace(operators[0] @ operators[1])


def _block(units=32):
    return keras.Sequential(
        [keras.layers.Dense(units), keras.layers.BatchNormalization(center=False, scale=False), keras.layers.ReLU()]
    )


@pytest.fixture
def small(rng):
    a = rng.normal(size=(40, 5))
    b = np.tanh(a[:, :3] @ rng.normal(size=(3, 2))) + 0.1 * rng.normal(size=(40, 2))
    return a.astype("float32"), b.astype("float32")


def test_gaussian_kernel_matches_loops(small):
    a, _ = small
    np.testing.assert_allclose(gaussian_kernel(a, 1.5), _kernel_loops(a.astype(np.float64), 1.5), atol=1e-5)


def test_hsic_matches_loops(small):
    a, b = small
    np.testing.assert_allclose(float(hsic(a, b, 2.0)), _hsic_loops(a, b, 2.0), rtol=1e-3)


def test_normalized_hsic_matches_loops(small):
    a, b = small
    expected = _hsic_loops(a, b, 1.0) / np.sqrt(_hsic_loops(a, a, 1.0) * _hsic_loops(b, b, 1.0))
    np.testing.assert_allclose(float(normalized_hsic(a, b, 1.0)), expected, rtol=1e-3)


def test_normalized_cca_matches_loops(small):
    a, b = small
    np.testing.assert_allclose(float(normalized_cca_hsic(a, b, 1.0)), _cca_loops(a, b, 1.0), rtol=1e-3)


def test_identical_inputs_give_the_normalized_maximum(rng):
    a = rng.normal(size=(100, 8)).astype("float32")
    b = rng.normal(size=(100, 8)).astype("float32")
    assert float(normalized_hsic(a, a, 1.0)) == pytest.approx(1.0, abs=1e-5)
    # tr(R_a R_b) <= sqrt(tr(R_a^2) tr(R_b^2)): identical inputs reach the bound.
    same, other = float(normalized_cca_hsic(a, a, 1.0)), float(normalized_cca_hsic(a, b, 1.0))
    bound = np.sqrt(same * float(normalized_cca_hsic(b, b, 1.0)))
    assert other < bound and same > other


def test_independent_inputs_give_near_zero(rng):
    a = rng.normal(size=(1000, 4)).astype("float32")
    b = rng.normal(size=(1000, 4)).astype("float32")
    assert float(normalized_hsic(a, b, 1.0)) < 0.02
    dependent = (a + 0.3 * b).astype("float32")
    assert float(normalized_hsic(a, dependent, 1.0)) > 0.5


@pytest.mark.parametrize("estimator", [hsic, normalized_hsic, normalized_cca_hsic])
def test_constant_inputs_and_single_samples_give_zero_not_nan(rng, estimator):
    a = rng.normal(size=(16, 3)).astype("float32")
    assert float(estimator(np.ones((16, 3), "float32"), a, 1.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(estimator(a[:1], a[:1], 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_estimators_stay_finite_in_float32_for_large_batches(rng):
    a = rng.normal(size=(1500, 64)).astype("float16")
    b = np.eye(10, dtype="float32")[rng.integers(0, 10, size=1500)]
    value = normalized_cca_hsic(a, b, 5.0)
    (gradient,) = gradients(lambda a: normalized_cca_hsic(a, b, 5.0), inputs=[a])
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert np.isfinite(float(value)) and np.all(np.isfinite(gradient))


def _digits_net(digits, blocks=3, units=64, **kwargs):
    (x_train, y_train), _ = digits
    net = HSICBottleneck([_block(units) for _ in range(blocks)], num_classes=10, **kwargs)
    net.compile(keras.optimizers.Adam(1e-2))
    return net


def test_no_gradient_crosses_from_one_block_to_another(digits):
    (x_train, y_train), _ = digits
    net = _digits_net(digits)
    net.build((None, 64))
    x, targets = x_train[:128], np.eye(10, dtype="float32")[y_train[:128]]

    def last_objective():
        # Training mode: each block's input is held constant, as in fit.
        return hsic_kernels.normalized_cca_hsic(net(x, training=True), targets, 5.0)

    found = gradients(last_objective, variables=net.blocks[0].trainable_weights + net.blocks[-1].trainable_weights)
    first, final = found[: len(net.blocks[0].trainable_weights)], found[len(net.blocks[0].trainable_weights):]
    assert all(np.all(g == 0) for g in first)
    assert all(np.any(g != 0) for g in final)


def test_a_training_step_updates_the_first_block_from_its_own_objective_only(digits):
    (x_train, y_train), _ = digits
    x, y = x_train[:256], y_train[:256]
    net = HSICBottleneck([_block(32) for _ in range(3)], num_classes=10, beta=50.0, sigma=5.0)
    # Eager, as the expected gradient is: XLA's fused float32 changes the last digits of the
    # ill-conditioned CCA inverses (2 of 2,048 kernel updates by 1e-6 on JAX when compiled).
    net.compile(keras.optimizers.SGD(1e-2), run_eagerly=True)
    net.build((None, 64))
    first = net.blocks[0]
    before = [np.asarray(w.value) for w in first.trainable_weights]
    # The gradient of block 0's objective alone, from an independent forward pass of block 0.
    twin = keras.models.clone_model(first)
    twin.set_weights(first.get_weights())
    targets = np.eye(10, dtype="float32")[y]

    def objective():
        z = twin(x, training=True)
        return normalized_cca_hsic(z, x, 5.0) - 50.0 * normalized_cca_hsic(z, targets, 5.0)

    expected = [w - 1e-2 * g for w, g in zip(before, gradients(objective, variables=twin.trainable_weights))]
    net.fit(x, y, batch_size=256, epochs=1, shuffle=False, verbose=0)
    # The kernel moves (the bias before batch normalisation gets no gradient).
    assert np.max(np.abs(np.asarray(first.trainable_weights[0].value) - before[0])) > 1e-5
    for got, want, old in zip(first.trainable_weights, expected, before):
        np.testing.assert_allclose(np.asarray(got.value) - old, want - old, rtol=1e-3, atol=1e-6)


def test_training_on_real_digits_beats_chance_by_far_and_logs_every_block(digits):
    (x_train, y_train), (x_test, y_test) = digits
    net = _digits_net(digits)
    history = net.fit(x_train, y_train, batch_size=128, epochs=8, verbose=0)
    for i in range(3):
        assert {f"hsic_x_{i}", f"hsic_y_{i}"} <= set(history.history)
    # The bottleneck forms: the last block gains information about the labels.
    assert history.history["hsic_y_2"][-1] > history.history["hsic_y_2"][0]
    classifier = net.post_train(x_train, y_train, epochs=10, batch_size=64, verbose=0)
    _, accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.85
    assert all(not block.trainable for block in net.blocks)


def test_format_maps_units_to_labels_when_the_last_block_has_one_unit_per_class(digits):
    (x_train, y_train), (x_test, y_test) = digits
    net = HSICBottleneck([_block(64), _block(64), _block(10)], num_classes=10)
    net.compile(keras.optimizers.Adam(1e-2))
    net.fit(x_train, y_train, batch_size=128, epochs=10, verbose=0)
    formatted = net.format(x_train, y_train)
    accuracy = np.mean(formatted.predict(x_test, verbose=0).argmax(-1) == y_test)
    assert accuracy > 0.5
    with pytest.raises(ValueError, match="one unit per class"):
        _digits_net(digits).format(x_train, y_train)


def test_sigma_combined_branches_are_summed_and_post_trained(digits):
    (x_train, y_train), (x_test, y_test) = digits
    net = HSICBottleneck.sigma_combined([[_block(32), _block(32)] for _ in range(3)], [1.0, 5.0, 10.0], num_classes=10)
    net.compile(keras.optimizers.Adam(1e-2))
    history = net.fit(x_train, y_train, batch_size=128, epochs=6, verbose=0)
    assert "hsic_y_2_1" in history.history
    outputs = [net._branch_outputs(branch, x_test[:5], False)[-1] for branch in net.branches]
    np.testing.assert_allclose(net(x_test[:5]), np.sum(outputs, axis=0), rtol=1e-5, atol=1e-6)
    classifier = net.post_train(x_train, y_train, epochs=10, batch_size=64, verbose=0)
    assert classifier.evaluate(x_test, y_test, verbose=0)[1] > 0.8


def test_saved_network_round_trip(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    net = _digits_net(digits, beta=20.0, sigma=4.0)
    net.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
    net.save(tmp_path / "hsic.keras")
    restored = keras.models.load_model(tmp_path / "hsic.keras")
    np.testing.assert_allclose(restored.predict(x_test, verbose=0), net.predict(x_test, verbose=0), atol=1e-5)
    assert (restored.beta, restored.sigmas, restored.num_classes) == (20.0, [4.0], 10)


@pytest.mark.tensorflow_backend("exports; the export from a JAX process is tested in test_backends.py")
def test_post_trained_classifier_exports_to_litert(tmp_path, digits):
    (x_train, y_train), (x_test, _) = digits
    net = _digits_net(digits)
    net.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
    classifier = net.post_train(x_train, y_train, epochs=1, verbose=0)
    report = export(classifier, tmp_path / "hsic.tflite", verify_with=x_test)
    assert report.builtin_only and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4


def test_mixed_precision_keeps_the_hsic_math_finite(digits):
    (x_train, y_train), _ = digits
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = _digits_net(digits)
        history = net.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert net.blocks[0].compute_dtype == "float16"
    assert all(np.isfinite(values[-1]) for values in history.history.values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta=-1.0), "beta must be a number >= 0. Received: beta=-1.0"),
        (dict(sigma=0.0), "sigma must be a number > 0 (or a list of them). Received: sigma=0.0"),
        (dict(sigma=-2), "sigma=-2"),
        (dict(estimator="kl"), "estimator must be one of"),
        (dict(num_classes=1), "num_classes=1"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        HSICBottleneck([_block()], **kwargs)
    assert message in str(error.value)


def test_blocks_must_be_layers():
    with pytest.raises(ValueError, match="blocks must be a non-empty list of Keras layers"):
        HSICBottleneck([])
    with pytest.raises(ValueError, match="one branch per sigma"):
        HSICBottleneck.sigma_combined([[_block()]], [1.0, 2.0])


def test_a_single_model_as_blocks_says_how_to_pass_it():
    # Used to fail with "'Sequential' object is not iterable".
    with pytest.raises(ValueError, match=r"blocks must be a list of Keras layers.*Received: blocks=Sequential.*list\(model.layers\)"):
        HSICBottleneck(keras.Sequential([keras.layers.Dense(8), keras.layers.ReLU()]))


def test_fit_takes_positional_arguments_as_keras_does(digits):
    (x_train, y_train), _ = digits
    net = _digits_net(digits)
    history = net.fit(x_train[:256], y_train[:256], 128, 2, 0)  # x, y, batch_size, epochs, verbose
    assert len(history.history["loss"]) == 2
    with pytest.raises(ValueError, match="Received: batch_size=1"):
        net.fit(x_train[:256], y_train[:256], 1)


def test_batch_of_one_and_labels_out_of_range_are_rejected(digits):
    (x_train, y_train), _ = digits
    net = _digits_net(digits)
    with pytest.raises(ValueError, match=r"at least 2 samples per batch .*Received: batch_size=1"):
        net.fit(x_train, y_train, batch_size=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"Labels must be in \[0, num_classes=10\). Received: labels from 0 to 10"):
        net.fit(x_train[:20], np.arange(20) % 11, epochs=1, verbose=0)


_MIRRORED_SCRIPT = """
    import numpy as np
    import keras
    import keras_compact

    (x, y), _ = keras_compact.datasets.load("digits")
    x = x.reshape(len(x), -1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        blocks = [keras.Sequential([keras.layers.Dense(32), keras.layers.ReLU()]) for _ in range(2)]
        net = keras_compact.HSICBottleneck(blocks, num_classes=10)
        net.compile(keras.optimizers.Adam(1e-2))
    history = net.fit(x, y, batch_size=256, epochs=4, verbose=0)
    values = history.history["hsic_y_1"]
    assert all(np.isfinite(v) for v in values) and values[-1] > values[0], values
    print("MIRRORED-OK", values)
"""


@pytest.mark.tensorflow_backend("tf.distribute")
def test_trains_under_mirrored_strategy_on_two_cpus():
    run_with_two_logical_cpus(_MIRRORED_SCRIPT, "MIRRORED-OK")
