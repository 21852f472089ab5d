"""Targeted Dropout on real MNIST: accuracy after one-shot pruning, against tfmot.

Trains the MLP 784-300-100-10 once per method (no regularisation, standard dropout,
targeted dropout, ramping targeted dropout), prunes each trained network one shot
(no fine-tuning) with `keras_compact.pruning.prune` at every weight and unit
sparsity, and compares with tfmot's `prune_low_magnitude` + `PolynomialDecay`
(0 -> s over 70% of the steps), trained once per sparsity on the equivalent tf_keras
model in a subprocess started with `TF_USE_LEGACY_KERAS=1`. Same data, epochs,
batch size and optimizer for every row.

    python benchmarks/targeted_dropout.py            # full (about 6 min on 2 cores)
    python benchmarks/targeted_dropout.py --quick    # smoke run

Writes benchmarks/results/targeted_dropout.md and targeted_dropout.png
(or *_quick.* for --quick).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import keras
import numpy as np

import keras_compact
from keras_compact.callbacks import TargetedDropoutRamp
from keras_compact.layers import TargetedDropout
from keras_compact.pruning import prune

import common
import reporting

WEIGHT_SPARSITIES = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99]
UNIT_SPARSITIES = [0.0, 0.25, 0.5, 0.75]
HIDDEN = (300, 100)
# Gomez et al.'s recommended targeted dropout: alpha = 0.66, gamma = 0.75; the ramp
# raises gamma from 0 to 0.95 over training. Standard dropout at rate 0.5.
TARGET_RATE, DROP_RATE, RAMP_END = 0.75, 0.66, 0.95
UNIT_TARGET_RATE = 0.5
# A second ramp: gamma 0 -> the pruning target (0.9; units 0.5) with alpha = 1, so that in
# the last epoch the network trains as the pruned network (re-selected every step).
HARD_END, HARD_UNIT_END = 0.9, 0.5


def load(data_dir, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("mnist", data_dir, with_info=True)
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:300], y_test[:300]
        info = dict(info, split=info["split"] + "; quick run: 1,000 train / 300 test of those")
    return (x_train, y_train), (x_test, y_test), info


def build(method, granularity):
    """The MLP; with targeted dropout on every layer that `prune` prunes at this granularity."""
    layers = [keras.Input((784,), name="pixels")]
    dense_layers = [keras.layers.Dense(units, activation="relu") for units in HIDDEN]
    dense_layers.append(keras.layers.Dense(10, activation="softmax"))
    for index, dense in enumerate(dense_layers):
        is_output = index == len(dense_layers) - 1
        # Unit pruning keeps the output units (the classes), so they are not targeted either.
        if method in ("targeted", "ramp", "ramp_hard") and not (granularity == "unit" and is_output):
            rate = TARGET_RATE if granularity == "weight" else UNIT_TARGET_RATE
            drop = 1.0 if method == "ramp_hard" else DROP_RATE
            dense = TargetedDropout(dense, rate if method == "targeted" else 0.0, drop, granularity, seed=index)
        layers.append(dense)
        if method == "dropout" and not is_output:
            layers.append(keras.layers.Dropout(0.5))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=512, verbose=0).argmax(-1) == y))


def keras_rows(train, test, epochs):
    """Per (method, granularity): seconds per epoch and accuracy after one-shot pruning."""
    rows = {}
    for method in NAMES:
        trained_once = None
        for granularity in ("weight", "unit"):
            if trained_once is None or method in ("targeted", "ramp", "ramp_hard"):
                keras.utils.set_random_seed(0)
                model = build(method, granularity)
                callbacks = []
                if method == "ramp":
                    end = RAMP_END if granularity == "weight" else UNIT_TARGET_RATE
                    callbacks.append(TargetedDropoutRamp(target_rate=(0.0, end), drop_rate=DROP_RATE))
                if method == "ramp_hard":
                    end = HARD_END if granularity == "weight" else HARD_UNIT_END
                    callbacks.append(TargetedDropoutRamp(target_rate=(0.0, end), drop_rate=1.0))
                start = time.perf_counter()
                model.fit(*train, epochs=epochs, batch_size=64, verbose=2, callbacks=callbacks)
                trained_once = (model, model.get_weights(), (time.perf_counter() - start) / epochs)
            model, weights, seconds = trained_once
            accuracies = {}
            for sparsity in WEIGHT_SPARSITIES if granularity == "weight" else UNIT_SPARSITIES:
                model.set_weights(weights)  # prune() writes its zeros into the shared kernels
                pruned = prune(model, sparsity, granularity).model
                accuracies[sparsity] = accuracy(pruned, *test)
            model.set_weights(weights)
            rows[(method, granularity)] = {"epoch_s": seconds, "accuracy": accuracies}
            print(method, granularity, accuracies, flush=True)
    return rows


def tfmot_worker(sparsity, epochs, data_dir, quick, seed=0):
    """Runs in a TF_USE_LEGACY_KERAS=1 process: tfmot on the equivalent tf_keras MLP."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    train, test, _ = load(data_dir, quick)
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential(
        [tf_keras.Input((784,))]
        + [tf_keras.layers.Dense(units, activation="relu") for units in HIDDEN]
        + [tf_keras.layers.Dense(10, activation="softmax")]
    )
    steps = epochs * int(np.ceil(len(train[0]) / 64))
    callbacks = []
    if sparsity:
        end_step = int(0.7 * steps)
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=sparsity,
            begin_step=0,
            end_step=end_step,
            frequency=max(1, min(100, end_step // 10)),  # tfmot's default 100, fewer on small runs
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    model.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    epoch_times = []
    callbacks.append(tf_keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch_times.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_times.append(time.perf_counter() - epoch_times.pop())))
    start = time.perf_counter()
    model.fit(*train, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks)
    seconds = (time.perf_counter() - start) / epochs
    # The median epoch after the first (which traces the step): what benchmarks/pruning.py compares.
    median_epoch = float(np.median(epoch_times[1:] or epoch_times))
    if sparsity:
        model = tfmot.sparsity.keras.strip_pruning(model)
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
    achieved = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    predictions = model.predict(test[0], batch_size=512, verbose=0).argmax(-1)
    print(json.dumps({"accuracy": float(np.mean(predictions == test[1])), "sparsity": achieved, "epoch_s": seconds,
                      "median_epoch_s": median_epoch}))


def run_tfmot_worker(sparsity, epochs, data_dir, quick, seed=0):
    """One tfmot training in a `TF_USE_LEGACY_KERAS=1` subprocess; its JSON result as a dict."""
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--tfmot-worker", str(sparsity),
               "--epochs", str(epochs), "--data-dir", data_dir, "--seed", str(seed)]
    result = subprocess.run(
        command + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the tfmot worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tfmot_rows(epochs, data_dir, quick):
    rows = {}
    for sparsity in WEIGHT_SPARSITIES:
        rows[sparsity] = run_tfmot_worker(sparsity, epochs, data_dir, quick)
        print("tfmot", sparsity, rows[sparsity], flush=True)
    return rows


NAMES = {
    "none": "no regularisation",
    "dropout": "standard dropout (0.5)",
    "targeted": f"targeted dropout (gamma {TARGET_RATE}, alpha {DROP_RATE}; units: gamma {UNIT_TARGET_RATE})",
    "ramp": f"ramping targeted dropout (gamma 0 -> {RAMP_END}, alpha {DROP_RATE}; units: 0 -> {UNIT_TARGET_RATE})",
    "ramp_hard": f"ramping targeted dropout to the target (gamma 0 -> {HARD_END}, alpha 1; units: 0 -> {HARD_UNIT_END})",
}


def write_results(stem, results):
    """`results`: `info`, `epochs`, `quick`, the Keras 3 `rows` per (method, granularity) and the `tfmot` rows
    per sparsity."""
    rows, tfmot = results["rows"], results["tfmot"]
    reporting.write(stem, header(results) + weight_section(rows, tfmot) + unit_section(rows)
                 + target_section(stem, rows, tfmot))
    plot(stem, rows, tfmot)


def header(results):
    return [
        *reporting.heading("Targeted Dropout on MNIST", "targeted_dropout.py", results["quick"]),
        f"Data: {results['info']['source']}; {results['info']['split']}. CIFAR-10 is not available offline, so "
        "there is no CNN row.",
        f"Model: MLP 784-{HIDDEN[0]}-{HIDDEN[1]}-10, Adam 1e-3, batch 64, {results['epochs']} epochs, seed 0, for "
        "every row.",
        "Keras-3 rows: trained once, then pruned one shot (no fine-tuning) by `keras_compact.pruning.prune`",
        "(per layer, every Dense layer; unit pruning leaves the 10 output units). tfmot rows: `prune_low_magnitude`",
        "with `PolynomialDecay(0 -> s)` over the first 70% of the steps, one training per sparsity, tf_keras",
        "in a subprocess with `TF_USE_LEGACY_KERAS=1`; the sparsity it reached is in brackets.",
        "Targeted dropout wraps every layer that is pruned (all three for weights, the two hidden ones for",
        "units). s/epoch: wall time of one training epoch (tfmot: mean over its runs).",
        "",
    ]


def weight_section(rows, tfmot):
    table = [[name, f"{rows[(method, 'weight')]['epoch_s']:.2f}",
              *(reporting.percent(rows[(method, "weight")]["accuracy"][s]) for s in WEIGHT_SPARSITIES)]
             for method, name in NAMES.items()]
    table.append(["tfmot prune_low_magnitude (PolynomialDecay)", f"{np.mean([r['epoch_s'] for r in tfmot.values()]):.2f}",
                  *(f"{reporting.percent(tfmot[s]['accuracy'])} [{tfmot[s]['sparsity']:.1%}]" for s in WEIGHT_SPARSITIES)])
    return ["## Test accuracy at weight sparsity", "",
            *reporting.table(["method", "s/epoch", *(f"{s:.0%}" for s in WEIGHT_SPARSITIES)], table)]


def unit_section(rows):
    table = [[name, *(reporting.percent(rows[(method, "unit")]["accuracy"][s]) for s in UNIT_SPARSITIES)]
             for method, name in NAMES.items()]
    table.append(["tfmot", *("n/a (weights only)" for _ in UNIT_SPARSITIES)])
    return ["", "## Test accuracy at unit sparsity (hidden units removed)", "",
            *reporting.table(["method", *(f"{s:.0%}" for s in UNIT_SPARSITIES)], table)]


def target_section(stem, rows, tfmot):
    percent = reporting.percent
    lines = ["", "## Targets", ""]
    for method in ("ramp", "ramp_hard"):
        ramp = rows[(method, "weight")]["accuracy"]
        drop = ramp[0.0] - ramp[0.9]
        lines += [
            f"- {NAMES[method]}, pruned one shot to 90% weight sparsity: {percent(ramp[0.9])} against its own "
            f"unpruned {percent(ramp[0.0])}, a drop of {drop * 100:.2f} points: target (within 1 point) "
            + ("**met**." if drop <= 0.01 else "**NOT met**."),
            f"  Against tfmot at 90%: {percent(ramp[0.9])} vs {percent(tfmot[0.9]['accuracy'])}: target (at least "
            "as accurate) " + ("**met**." if ramp[0.9] >= tfmot[0.9]["accuracy"] else "**NOT met**."),
        ]
    return lines + [
        f"- Unregularised network pruned one shot to 90%: {percent(rows[('none', 'weight')]['accuracy'][0.9])} "
        f"(99%: {percent(rows[('none', 'weight')]['accuracy'][0.99])}).",
        "",
        f"![accuracy against sparsity]({stem}.png)",
        "",
    ]


def plot(stem, rows, tfmot):
    figure, axes = reporting.pyplot().subplots(1, 2, figsize=(11, 4))
    for method, name in NAMES.items():
        for axis, granularity, sparsities in ((axes[0], "weight", WEIGHT_SPARSITIES), (axes[1], "unit", UNIT_SPARSITIES)):
            axis.plot([s * 100 for s in sparsities], [rows[(method, granularity)]["accuracy"][s] for s in sparsities],
                      marker="o", label=name.split(" (")[0])
    axes[0].plot([s * 100 for s in WEIGHT_SPARSITIES], [tfmot[s]["accuracy"] for s in WEIGHT_SPARSITIES],
                 marker="s", linestyle="--", label="tfmot (trained per sparsity)")
    for axis, title in ((axes[0], "weight sparsity (%)"), (axes[1], "unit sparsity (%)")):
        axis.set_xlabel(title)
        axis.set_ylabel("test accuracy")
        axis.grid(True)
    axes[0].legend(fontsize=8)
    figure.suptitle("MNIST MLP pruned one shot after training (tfmot: pruned during training)")
    figure.tight_layout()
    reporting.save(figure, stem)


def main(argv=None):
    parser = common.parser(__doc__, "small data, 2 epochs", "default 10 (quick: 2)")
    parser.add_argument("--tfmot-worker", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)
    if args.tfmot_worker is not None:
        tfmot_worker(args.tfmot_worker, epochs, args.data_dir, args.quick, args.seed)
        return 0
    train, test, info = load(args.data_dir, args.quick)
    rows = keras_rows(train, test, epochs)
    tfmot = tfmot_rows(epochs, args.data_dir, args.quick)
    results = dict(info=info, epochs=epochs, rows=rows, tfmot=tfmot, quick=args.quick)
    write_results("targeted_dropout_quick" if args.quick else "targeted_dropout", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
