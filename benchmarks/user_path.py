"""The user's path, measured: CLI start-up, ProjectionNet with logits, export of every model form.

1. Wall time of `keras-compact --help` / `--version` (arguments are parsed before
   TensorFlow loads) against `python -c "import tensorflow"` and an empty Python,
   median of several runs in this one process, so the ratios are what to read.
2. ProjectionNet on scikit-learn's digits (1,437 train / 360 test, 30 epochs,
   batch 32, Adam 1e-3, 3 seeds) with networks ending in logits (`Dense(10)`) and
   in a softmax, both with the default `from_logits=None`: the case that trained
   to chance before the networks' last layers were read.
3. One projection network (T=60, d=12 on 64 digit pixels + softmax) built from a
   list, with `.add()`, functionally, and each saved and reloaded, exported with
   `tflite_export.export`: file bytes, LSH_PROJECTION count, agreement, export
   seconds and the share of it spent making the lowered copy.

    python benchmarks/user_path.py            # about 2 minutes on 2 cores
    python benchmarks/user_path.py --quick    # smoke run

Writes benchmarks/results/user_path.md (or user_path_quick.md).
"""

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

import keras_compact
import reporting
import tflite_export
from tflite_export import _lowering

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _seconds(command, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cli_startup(repeats):
    cli = shutil.which("keras-compact")
    cli = [cli] if cli else [sys.executable, "-m", "tflite_export"]
    rows = [
        ("`python -c pass`", [sys.executable, "-c", "pass"]),
        ("`keras-compact --help`", cli + ["--help"]),
        ("`keras-compact --version`", cli + ["--version"]),
        ("`keras-compact export --help`", cli + ["export", "--help"]),
        ("`python -c 'import tensorflow'`", [sys.executable, "-c", "import tensorflow"]),
    ]
    return [(name, _seconds(command, repeats)) for name, command in rows]


def _networks(last_activation):
    trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                                keras.layers.Dense(10, activation=last_activation)])
    projection = keras.Sequential()
    projection.add(keras.Input((64,)))
    projection.add(keras_compact.ProjectionLayer(60, 12))
    projection.add(keras.layers.Dense(10, activation=last_activation))
    return trainer, projection


def logits_versus_probabilities(data, epochs, seeds):
    (x_train, y_train), (x_test, y_test) = data
    rows = []
    for ending, activation in (("logits (`Dense(10)`)", None), ("softmax", "softmax")):
        scores = []
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            net = keras_compact.ProjectionNet(*_networks(activation))
            net.compile(optimizer=keras.optimizers.Adam(1e-3))
            net.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
            result = net.evaluate(x_test, y_test, return_dict=True, verbose=0)
            scores.append((result["trainer_accuracy"], result["projection_accuracy"]))
        trainer, projection = np.asarray(scores).T
        decided = ", ".join(f"{name}: {'logits' if logits else 'probabilities'}" for name, logits in net.outputs_logits.items())
        rows.append((ending, decided, trainer, projection))
    return rows


def _forms(folder):
    def stack():
        return [keras_compact.ProjectionLayer(60, 12), keras.layers.Dense(10, activation="softmax")]

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), name="pixels")
    outputs = inputs
    for layer in stack():
        outputs = layer(outputs)
    functional = keras.Model(inputs, outputs)
    from_list = keras.Sequential([keras.Input((64,), name="pixels")] + stack())
    added = keras.Sequential()
    added.add(keras.Input((64,), name="pixels"))
    for layer in stack():
        added.add(layer)
    forms = {"from a list": from_list, "with `.add()`": added, "functional": functional}
    for model in (from_list, added):
        model.set_weights(functional.get_weights())
    for index, name in enumerate(list(forms)):
        path = folder / f"form{index}.keras"
        forms[name].save(path)
        forms[f"{name}, saved and reloaded"] = keras.models.load_model(path)
    return forms


def export_forms(x_test):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        for name, model in _forms(folder).items():
            start = time.perf_counter()
            _lowering.lowered_copy(model)
            copy_seconds = time.perf_counter() - start
            start = time.perf_counter()
            report = tflite_export.export(model, folder / "m.tflite", verify_with=x_test)
            seconds = time.perf_counter() - start
            rows.append((name, report.bytes, report.operators.get("LSH_PROJECTION", 0), report.top1_agreement,
                         seconds, copy_seconds))
    return rows


def write_results(stem, results):
    """`results`: `quick`, `repeats`, `epochs`, `seeds` and the rows of the three sections: `startup`, `logits`,
    `forms`."""
    startup, epochs, seeds = results["startup"], results["epochs"], results["seeds"]
    baseline, tensorflow = startup[0][1], startup[-1][1]
    lines = [
        "# The user's path",
        "",
        f"`benchmarks/user_path.py{reporting.flag(results['quick'])}` on {reporting.machine()}, "
        f"Python {platform.python_version()}, keras {keras.__version__}.",
        "",
        f"## CLI start-up (median of {results['repeats']} runs each, one process)",
        "",
        *reporting.table(["command", "seconds", "vs `python -c pass`", "vs importing TensorFlow"],
                         [[name, f"{s:.3f}", f"{s / baseline:.1f}x", f"{s / tensorflow:.2f}x"] for name, s in startup]),
        "",
        f"## ProjectionNet with the default `from_logits=None` (digits, {epochs} epochs, seeds {seeds})",
        "",
        "Before networks' last layers were read, the logits row trained to chance: 20% (trainer) and",
        "13% (projection) after 60 epochs, as reported in issue 11 (the default was `from_logits=False`;",
        "that setting on logits now raises before training, so this script cannot re-measure it).",
        "",
        *reporting.table(["networks end in", "read as", "trainer accuracy", "projection accuracy"], [
            [ending, decided, f"{trainer.mean():.2%} ± {trainer.std():.2%}",
             f"{projection.mean():.2%} ± {projection.std():.2%}"]
            for ending, decided, trainer, projection in results["logits"]]),
        "",
        "The two rows train the same function: the loss takes log_softmax of logits, and the log of",
        "softmax probabilities (clipped at 1e-7) is the same number, so with the same seeds they agree.",
        "",
        "## One projection network in every model form, exported (digits test split, 360 examples)",
        "",
        *reporting.table(["built", ".tflite bytes", "LSH_PROJECTION", "top-1 agreement", "export s", "lowered copy s"], [
            [name, f"{size:,}", count, f"{agreement:.2%}", f"{seconds:.2f}", f"{copy:.3f}"]
            for name, size, count, agreement, seconds, copy in results["forms"]]),
    ]
    path = reporting.write(stem, lines, end="\n")
    print(f"wrote {path.relative_to(ROOT)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats, epochs, seeds = (2, 2, [0]) if args.quick else (7, 30, [0, 1, 2])
    (x_train, y_train), (x_test, y_test) = keras_compact.datasets.load("digits")
    x_train, x_test = x_train.reshape(-1, 64), x_test.reshape(-1, 64)
    results = dict(quick=args.quick, repeats=repeats, epochs=epochs, seeds=seeds, startup=cli_startup(repeats),
                   logits=logits_versus_probabilities(((x_train, y_train), (x_test, y_test)), epochs, seeds),
                   forms=export_forms(x_test))
    write_results(f"user_path{'_quick' if args.quick else ''}", results)


if __name__ == "__main__":
    main()
