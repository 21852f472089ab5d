"""Trains ProjectionNet, HSICBottleneck and a Targeted Dropout MLP on the JAX backend; saves the weights.

Run by `test_backends.py` as a script, `KERAS_BACKEND=jax`:

    python distributed_worker.py OUT single            one device, no distribution
    python distributed_worker.py OUT local             DataParallel over this process's devices
    python distributed_worker.py OUT multi I N PORT    process I of N on 127.0.0.1:PORT, DataParallel over all

The same global batches in every mode (a tf.data.Dataset, which Keras shards per process),
so every mode should end with the same weights.
"""

import sys

import jax

out, mode = sys.argv[1], sys.argv[2]
if mode == "multi":
    process_id, processes, port = (int(value) for value in sys.argv[3:6])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=processes, process_id=process_id
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_compact  # noqa: E402

if mode != "single":
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))

digits = load_digits()
x = (digits.data[:512] / 16).astype("float32")
y = digits.target[:512].astype("int32")


def batches():
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


def projection_net():
    trainer = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    projection = keras.Sequential(
        [keras.Input((64,)), keras_compact.ProjectionLayer(10, 8), keras.layers.Dense(10, activation="softmax")]
    )
    net = keras_compact.ProjectionNet(trainer, projection)
    net.compile(optimizer=keras.optimizers.SGD(0.1))
    return net


def hsic_bottleneck():
    blocks = [keras.Sequential([keras.layers.Dense(16), keras.layers.ReLU()]) for _ in range(2)]
    # The biased estimator: the same weights to 3e-8 after 16 steps on 1 or 2 devices. The default
    # normalized_cca inverts an ill-conditioned kernel matrix, so the order in which the sharded
    # step sums moves the first step's update by 2e-6 of the weights and 16 steps by 2e-3.
    net = keras_compact.HSICBottleneck(blocks, num_classes=10, estimator="hsic")
    net.compile(keras.optimizers.SGD(0.05))
    return net


def targeted_dropout():
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras_compact.TargetedDropout(keras.layers.Dense(32, activation="relu"), 0.5, 0.5, seed=1),
            keras.layers.Dense(10),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


weights = {}
for name, build in (("projection_net", projection_net), ("hsic", hsic_bottleneck), ("targeted_dropout", targeted_dropout)):
    keras.utils.set_random_seed(0)
    model = build()
    model.fit(batches(), epochs=2, verbose=0)
    for index, value in enumerate(model.get_weights()):
        weights[f"{name}_{index}"] = np.asarray(value)
np.savez(out, **weights)
print("TRAINED", mode, len(jax.devices()), "devices")
