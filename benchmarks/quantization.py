"""Where int8 loses a model, and the two cheap remedies: int16x8 and layers kept in float32.

Issue 23's first two parts (the per-layer error report, int16x8, selective quantization), measured:

1. A digits MLP (sklearn's digits, 1,000 train / 797 test) whose middle layer holds one huge
   weight per unit, so int8 rounds its other weights to zero: `quantization_report`'s ranking,
   and the top-1 agreement with the Keras model of the int8 file, of int16x8, and of int8 with
   the report's worst layer in float32 (`float_layers`); the same for the undamaged MLP.
2. EfficientNetB0 (`weights=None`, 96x96, 10 classes, random images): the report's worst
   operators, int8 agreement, int8 with the 5 worst layers in float32, and int16x8 (which LiteRT
   refuses for it).

Not here yet (issue 23, part 4): trained zoo models on MNIST, quantization-aware training.

    python benchmarks/quantization.py           # about 3 min on 2 cores
    python benchmarks/quantization.py --quick   # the MLP only

Writes benchmarks/results/quantization.md (or quantization_quick.md).
"""

import argparse
import pathlib
import sys
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

from tflite_export import export, quantization_report

import reporting



def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    return (x[:1000], data.target[:1000]), (x[1000:], data.target[1000:])


def mlps(train):
    x, y = train
    keras.utils.set_random_seed(0)
    healthy = keras.Sequential([
        keras.Input((64,), name="pixels"), keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(32, activation="relu", name="damaged"),
        keras.layers.Dense(10, activation="softmax", name="classes"),
    ])
    healthy.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    healthy.fit(x, y, epochs=10, batch_size=64, verbose=0)
    damaged = keras.models.clone_model(healthy)
    damaged.set_weights(healthy.get_weights())
    kernel, bias = damaged.get_layer("damaged").get_weights()
    kernel[5, :] = 200.0 * np.abs(kernel).max()  # one huge weight per unit: int8 rounds the others to zero
    damaged.get_layer("damaged").set_weights([kernel, bias])
    return {"digits MLP": healthy, "digits MLP, one layer damaged": damaged}


def variants(name, model, calibration, comparison, folder, worst_count):
    """`{variant: agreement or the refusal}` and the report."""
    quantization = quantization_report(model, calibration, debug_data=comparison[:64])
    worst = quantization.worst(worst_count)
    rows = {}
    for variant, options in (
        ("int8", dict(quantization="int8")),
        (f"int8, {worst} in float32", dict(quantization="int8", float_layers=worst)),
        ("int16x8", dict(quantization="int16x8")),
    ):
        try:
            exported = export(model, folder / f"{len(rows)}.tflite", verify_with=comparison,
                              representative_data=calibration, min_agreement=None, **options)
            rows[variant] = {"agreement": exported.top1_agreement, "max_diff": exported.max_abs_diff,
                             "bytes": exported.bytes}
        except ValueError as error:
            rows[variant] = {"refused": str(error).split(". Nothing was written")[0][:160]}
        print(name, variant, rows[variant], flush=True)
    return quantization, rows


def write_results(stem, results):
    """`results`: `quick` and the `networks`, `{name: (QuantizationReport, {variant: row}, setting)}`."""
    lines = [
        "# int8 that keeps the model: the report, int16x8, layers kept in float32",
        "",
        f"`python benchmarks/quantization.py{reporting.flag(results['quick'])}`; Keras {keras.__version__}, "
        f"{reporting.machine()}, `ai_edge_litert`. Agreement: the fraction of comparison examples whose top-1 class "
        "the file and the Keras model share. Error: what each quantized operator adds, RMSE in quantization steps "
        "of its output (rounding alone is about 0.29).",
    ]
    for name, (quantization, rows, setting) in results["networks"].items():
        lines += ["", f"## {name}", "", setting, ""]
        lines += reporting.table(["file", "top-1 agreement", "max abs diff", "bytes"], [
            [variant, f"refused: {row['refused']}", None, None] if "refused" in row else
            [variant, f"{row['agreement']:.2%}", f"{row['max_diff']:.4f}", f"{row['bytes']:,}"]
            for variant, row in rows.items()])
        lines += ["", "The report's worst operators:", ""]
        lines += reporting.table(["layer", "operator", "error (steps)"], [
            [row.layer or row.tensor, row.operator, f"{row.error_steps:.2f}"] for row in quantization.layers[:8]])
    reporting.write(stem, lines, end="\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the digits MLPs only")
    args = parser.parse_args(argv)
    train, test = digits()
    networks = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        for name, model in mlps(train).items():
            quantization, rows = variants(name, model, train[0][:300], test[0], folder, 1)
            networks[name] = (quantization, rows, "Calibrated on 300 training digits, compared on the 797 test digits.")
        if not args.quick:
            keras.utils.set_random_seed(0)
            model = keras.applications.EfficientNetB0(input_shape=(96, 96, 3), weights=None, classes=10)
            rng = np.random.default_rng(0)
            calibration = rng.uniform(0, 255, (64, 96, 96, 3)).astype("float32")
            comparison = rng.uniform(0, 255, (200, 96, 96, 3)).astype("float32")
            quantization, rows = variants("EfficientNetB0", model, calibration, comparison, folder, 5)
            networks["EfficientNetB0 (weights=None, 96x96, 10 classes)"] = (
                quantization, rows, "Calibrated on 64 random images, compared on 200 others (an untrained network: "
                "the report ranks its operators; agreement figures say little about a trained one).")
    write_results("quantization_quick" if args.quick else "quantization", dict(networks=networks, quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
