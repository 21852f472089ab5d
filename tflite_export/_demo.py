"""The main job: train a ProjectionNet, export its projection network, verify it."""

import os
import pathlib

import keras
import numpy as np

import keras_compact
from keras_compact._checks import keyword_only
from tflite_export._export import export, predict


def default_data_dir():
    """`$KERAS_COMPACT_DATA`, else `../shared/data` when it exists, else None."""
    if os.environ.get("KERAS_COMPACT_DATA"):
        return os.environ["KERAS_COMPACT_DATA"]
    shared = pathlib.Path("..", "shared", "data")
    return str(shared) if shared.is_dir() else None


def build_networks(num_features, num_classes, num_hashes, num_bits, trainer_units=(256, 256)):
    """The demo's trainer (an MLP) and projection network (projection + softmax)."""
    trainer = keras.Sequential(name="trainer")
    trainer.add(keras.Input((num_features,), name="pixels"))
    for units in trainer_units:
        trainer.add(keras.layers.Dense(units, activation="relu"))
    trainer.add(keras.layers.Dense(num_classes, activation="softmax"))
    projection = keras.Sequential(
        [
            keras.Input((num_features,), name="pixels"),
            keras_compact.ProjectionLayer(num_hashes, num_bits, name="projection"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="projection_net",
    )
    return trainer, projection


@keyword_only
def run_demo(
    data="digits",
    data_dir=None,
    *,
    num_hashes=60,
    num_bits=12,
    epochs=None,
    batch_size=32,
    output_dir="demo_output",
    seed=0,
    verbose=1,
):
    """Trains, exports and verifies; prints one table and returns its rows."""
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = keras_compact.datasets.load(data, data_dir)
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    num_classes = int(y_train.max()) + 1
    if epochs is None:
        epochs = 30 if data == "digits" else 10
    trainer, projection = build_networks(x_train.shape[1], num_classes, num_hashes, num_bits)
    net = keras_compact.ProjectionNet(trainer, projection)
    net.compile(optimizer=keras.optimizers.Adam(1e-3))
    net.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    scores = net.evaluate(x_test, y_test, return_dict=True, verbose=0)

    output = pathlib.Path(output_dir)
    rows = []
    for name, model in (("trainer", trainer), ("projection", projection)):
        report = export(model, output / f"{name}.tflite", verify_with=x_test)
        tflite_accuracy = float(np.mean(predict(report.path, x_test).argmax(-1) == y_test))
        rows.append(
            {
                "network": name,
                "keras_accuracy": float(scores[f"{name}_accuracy"]),
                "tflite_accuracy": tflite_accuracy,
                "parameters": model.count_params(),
                "tflite_bytes": report.bytes,
                "latency_ms": report.latency_ms,
                "report": report,
            }
        )
    print(format_table(rows, data, num_hashes, num_bits, len(x_train), len(x_test)))
    return rows


def format_table(rows, data, num_hashes, num_bits, num_train, num_test):
    lines = [
        f"ProjectionNet on {data} ({num_train:,} train / {num_test:,} test), "
        f"projection T={num_hashes} x d={num_bits} = {num_hashes * num_bits} bits",
        "",
        "| network | Keras accuracy | TFLite accuracy | parameters | .tflite bytes | LiteRT ms/example |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['network']} | {row['keras_accuracy']:.2%} | {row['tflite_accuracy']:.2%} | "
            f"{row['parameters']:,} | {row['tflite_bytes']:,} | {row['latency_ms']:.3f} |"
        )
    trainer, projection = rows
    lines += [
        "",
        f"compression (trainer .tflite / projection .tflite): "
        f"{trainer['tflite_bytes'] / projection['tflite_bytes']:.1f}x",
        f"projection network (the file to ship): {projection['report'].path} "
        f"(operators: {', '.join(projection['report'].operators)}; "
        f"builtin only: {projection['report'].builtin_only})",
        f"trainer (for comparison): {trainer['report'].path}",
    ]
    return "\n".join(lines)
