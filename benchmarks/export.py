"""`.tflite` size, LiteRT latency and accuracy of every model kind under every quantization.

Models, trained on real MNIST (8,000 train / 2,000 test of the shared 10k split):
the demo's trainer MLP (784-256-256-10, `tflite_export._demo.build_networks`); a
ProjectionNet whose trainer is the paper's MNIST MLP (784-1000-1000-10) and whose
projection network (T=60, d=12) is exported with both lowerings; an MLP
784-300-100-10 trained with ramping targeted dropout and pruned to 90% of its
weights (dense and sparse encodings); an MLP 784-512-512 with a `HadamardClassifier`.
Each is exported float32, dynamic, float16 and int8 (calibrated on 300 training
images); accuracy is the LiteRT file's on the 2,000 test images, latency the median
of single-example invokes over them.

    python benchmarks/export.py            # full (about 6 min on 2 cores)
    python benchmarks/export.py --quick    # smoke run

Writes benchmarks/results/export.md (or export_quick.md).
"""

import os
import sys
import tempfile

import keras
import numpy as np

import common
import reporting
import keras_compact
import tflite_export
from keras_compact import HadamardClassifier, ProjectionNet, TargetedDropout
from keras_compact.callbacks import TargetedDropoutRamp
from keras_compact.pruning import prune
from tflite_export import _demo

MODES = [None, "dynamic", "float16", "int8"]


def train_models(x, y, epochs):
    keras.utils.set_random_seed(0)
    demo_trainer, _ = _demo.build_networks(784, 10, 60, 12)
    demo_trainer.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    demo_trainer.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    keras.utils.set_random_seed(0)
    trainer, projection = _demo.build_networks(784, 10, 60, 12, trainer_units=(1000, 1000))
    net = ProjectionNet(trainer, projection)
    net.compile(keras.optimizers.Adam(1e-3))
    net.fit(x, y, batch_size=64, epochs=epochs, verbose=0)

    keras.utils.set_random_seed(0)
    targeted = keras.Sequential(
        [keras.Input((784,), name="pixels")]
        + [TargetedDropout(keras.layers.Dense(units, activation="relu"), 0.0, 1.0) for units in (300, 100)]
        + [TargetedDropout(keras.layers.Dense(10, activation="softmax"), 0.0, 1.0)]
    )
    targeted.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    targeted.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[TargetedDropoutRamp(target_rate=(0.0, 0.9))])
    pruned = prune(targeted, 0.9).model

    keras.utils.set_random_seed(0)
    hadamard = keras.Sequential(
        [keras.Input((784,), name="pixels"), keras.layers.Dense(512, activation="relu"),
         keras.layers.Dense(512, activation="relu"), HadamardClassifier(10), keras.layers.Softmax()]
    )
    hadamard.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    hadamard.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return {
        "demo trainer MLP 784-256-256-10": (demo_trainer, {}),
        "ProjectionNet trainer MLP 784-1000-1000-10": (trainer, {}),
        "projection T=60 d=12, builtin LSH_PROJECTION": (net, {"projection_lowering": "builtin"}),
        "projection T=60 d=12, matrix lowering": (net, {"projection_lowering": "matrix"}),
        "targeted dropout pruned 90%, dense encoding": (pruned, {"sparse": False}),
        "targeted dropout pruned 90%, sparse encoding": (pruned, {"sparse": True}),
        "MLP 784-512-512 + HadamardClassifier": (hadamard, {}),
    }


def measure(models, x_train, x_test, y_test):
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, options) in models.items():
            for mode in MODES:
                try:
                    report = tflite_export.export(
                        model, os.path.join(folder, "model.tflite"), verify_with=x_test, quantization=mode,
                        representative_data=x_train[:300] if mode == "int8" else None, min_agreement=None, **options,
                    )
                except ValueError as error:  # e.g. a sparse encoding LiteRT cannot run quantized
                    rows[(name, mode)] = "not written: " + str(error).split(":")[0]
                    print(name, mode, "not written:", rows[(name, mode)], flush=True)
                    continue
                accuracy = float(np.mean(tflite_export.predict(report.path, x_test).argmax(-1) == y_test))
                rows[(name, mode)] = dict(bytes=report.bytes, latency_ms=report.latency_ms, accuracy=accuracy,
                                          agreement=report.top1_agreement)
                print(name, mode, rows[(name, mode)], flush=True)
    return rows


def write_results(stem, results):
    """`results`: `info`, `epochs`, `quick`, the trained `models` and the measured `rows` per (model, mode)."""
    reporting.write(stem, table_section(results) + target_section(results["models"], results["rows"]))


def table_section(results):
    label = {None: "float32", "dynamic": "dynamic", "float16": "float16", "int8": "int8"}
    lines = [
        *reporting.heading("Export: size, LiteRT latency and accuracy per quantization", "export.py", results["quick"]),
        f"Data: {results['info']['source']}; {results['info']['split']}. {results['epochs']} epochs of training "
        "per model (ProjectionNet: joint with its trainer). Each cell: `.tflite` bytes / median LiteRT ms per "
        "example (one invoke, default delegates) / test accuracy of the file / top-1 agreement with the Keras "
        "model. int8: calibrated on 300 training images, float32 inputs and outputs.",
        "",
    ]

    def cell(row):
        return row if isinstance(row, str) else (
            f"{row['bytes']:,} B / {row['latency_ms']:.3f} ms / {row['accuracy']:.2%} / {row['agreement']:.1%}")

    return lines + reporting.table(["model"] + [label[m] for m in MODES],
                                [[name] + [cell(results["rows"][(name, mode)]) for mode in MODES]
                                 for name in results["models"]])


def target_section(models, rows):
    lines = ["", "## Targets", ""]
    for name in models:
        base, int8 = rows[(name, None)], rows[(name, "int8")]
        if isinstance(int8, str):
            lines.append(f"- {name}: int8 {int8}.")
            continue
        drop = (base["accuracy"] - int8["accuracy"]) * 100
        lines.append(f"- {name}: int8 {int8['accuracy']:.2%} vs float32 {base['accuracy']:.2%} ({drop:+.2f} points lost): "
                     + ("**met** (within 1 point)." if drop <= 1 else "**NOT met**."))
    trainer = rows[("ProjectionNet trainer MLP 784-1000-1000-10", None)]["bytes"]
    projection = rows[("projection T=60 d=12, builtin LSH_PROJECTION", None)]["bytes"]
    return lines + [
        f"- Projection model vs its trainer, 784-1000-1000-10 (float32 files): {projection:,} vs {trainer:,} bytes, "
        f"{trainer / projection:.0f}x smaller: " + ("**met** (at least 100x)." if trainer / projection >= 100 else "**NOT met**."),
        "",
    ]


def main(argv=None):
    parser = common.parser(__doc__, "1,000 train / 200 test images, 1 epoch", "default 10 (quick: 1)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 10)
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("mnist", args.data_dir, with_info=True)
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:200], y_test[:200]
    models = train_models(x_train, y_train, epochs)
    rows = measure(models, x_train, x_test, y_test)
    results = dict(info=info, epochs=epochs, models=models, rows=rows, quick=args.quick)
    write_results("export_quick" if args.quick else "export", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
