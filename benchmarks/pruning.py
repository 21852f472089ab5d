"""Pruning that pays, on real MNIST: speed of Targeted Dropout, gradual pruning against
tfmot, unit pruning by criterion with and without merging, a shrunk CNN in LiteRT, and
grow-and-prune.

Same data, MLP (784-300-100-10), optimizer, batch size and epochs as
`benchmarks/targeted_dropout.py`; tfmot runs as there (its `--tfmot-worker`, a
subprocess with `TF_USE_LEGACY_KERAS=1`). Speed is measured as ratios within this
run: models are timed epoch by epoch in turn, and the median epoch counts.

    python benchmarks/pruning.py            # full (about 10 min on 2 cores)
    python benchmarks/pruning.py --quick    # smoke run

Writes benchmarks/results/pruning.md and pruning.png (or *_quick.* for --quick).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

import keras_compact
from keras_compact.callbacks import GradualPruning, TargetedDropoutRamp
from keras_compact.layers import TargetedDropout
from keras_compact.pruning import grow, prunable, prune, shrink, strip
from keras_compact.regularizers import FanIn, FanOut
import common
import reporting
from targeted_dropout import run_tfmot_worker  # the tfmot rows are run as benchmarks/targeted_dropout.py runs them

HIDDEN = (300, 100)
GRADUAL_SPARSITIES = (0.9, 0.95)
UNIT_SPARSITIES = (0.25, 0.5, 0.75)
CRITERIA = ("magnitude", "onorm", "taylor", "similarity")


def load(data_dir, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("mnist", data_dir, with_info=True)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:300], y_test[:300]
        info = dict(info, split=info["split"] + "; quick run: 1,000 train / 300 test of those")
    return (x_train, y_train), (x_test, y_test), info


def flat(x):
    return x.reshape(len(x), -1)


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def mlp(wrap=None, dropout=False):
    """The MLP; `wrap(dense)` may wrap each Dense, `dropout` adds Dropout(0.5) after each."""
    layers = [keras.Input((784,), name="pixels")]
    for units, activation in ((HIDDEN[0], "relu"), (HIDDEN[1], "relu"), (10, "softmax")):
        dense = keras.layers.Dense(units, activation=activation)
        layers.append(wrap(dense) if wrap else dense)
        if dropout:
            layers.append(keras.layers.Dropout(0.5))
    return keras.Sequential(layers)


def cnn(wrap=None, dropout=False, filters=(32, 64)):
    """Conv2D-Conv2D-Dense on 28x28 images."""
    wrap = wrap or (lambda layer: layer)
    extra = (lambda: [keras.layers.Dropout(0.5)]) if dropout else (lambda: [])
    return keras.Sequential(
        [keras.Input((28, 28, 1), name="image"), wrap(keras.layers.Conv2D(filters[0], 3, activation="relu", name="conv1"))]
        + extra()
        + [wrap(keras.layers.Conv2D(filters[1], 3, activation="relu", name="conv2"))]
        + extra()
        + [keras.layers.MaxPooling2D(), keras.layers.Flatten(), wrap(keras.layers.Dense(10, activation="softmax", name="classes"))]
        + extra()
    )


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=512, verbose=0).argmax(-1) == y))


def epoch_times(models, x, y, rounds):
    """Median seconds per epoch of each model, the models trained one epoch each in turn."""
    for model in models.values():
        warm = 256 + len(x) % 64  # the last, partial batch traces too
        model.fit(x[:warm], y[:warm], batch_size=64, epochs=1, verbose=0)  # trace outside the timing
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def speed_rows(train, quick):
    """Targeted Dropout's training epoch against Dropout after each wrapped layer, and what it is made of."""
    x, y = flat(train[0]), train[1]
    keras.utils.set_random_seed(0)
    td = lambda **kw: (lambda layer: TargetedDropout(layer, 0.75, 0.66, **kw))  # noqa: E731
    mlps = {
        "dropout": compiled(mlp(dropout=True)),
        "plain": compiled(mlp()),
        "td": compiled(mlp(td())),
        "td_64": compiled(mlp(td(refresh_steps=64))),
        # Thresholds from the first step kept for good: the masking and the draws without any selection.
        "td_kept": compiled(mlp(td(refresh_steps=10**9))),
        "td_unit": compiled(mlp(lambda layer: TargetedDropout(layer, 0.5, 0.66, granularity="unit"))),
    }
    rows = {("mlp", name): seconds for name, seconds in epoch_times(mlps, x, y, 2 if quick else 7).items()}
    images = train[0][: 300 if quick else 2000]
    cnns = {"dropout": compiled(cnn(dropout=True)), "td": compiled(cnn(td()))}
    times = epoch_times(cnns, images, train[1][: len(images)], 2 if quick else 5)
    rows.update({("cnn", name): seconds for name, seconds in times.items()})
    print("speed", rows, flush=True)
    return rows


def jax_speed_rows(args):
    """`speed_rows` run again with Keras on JAX, in its own Python."""
    command = [sys.executable, __file__, "--speed-only", "--data-dir", args.data_dir] + (["--quick"] if args.quick else [])
    done = subprocess.run(command, env=dict(os.environ, KERAS_BACKEND="jax"), capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("SPEED "))
    return {tuple(key.split(" ", 1)): seconds for key, seconds in json.loads(line[len("SPEED "):]).items()}


RAMPS = {  # name: (final gamma, alpha), the ramps of benchmarks/targeted_dropout.py
    "ramp to 0.95, alpha 0.66": (0.95, 0.66),
    "ramp to the target 0.9, alpha 1": (0.9, 1.0),
}


def refresh_rows(train, test, epochs, seeds):
    """What keeping the thresholds for `refresh_steps` costs: ramped TD, pruned one shot to 90%."""
    x, y = flat(train[0]), train[1]
    rows = {}
    for name, (end, drop) in RAMPS.items():
        for refresh in (1, 64):
            runs = []
            for seed in seeds:
                keras.utils.set_random_seed(seed)
                model = compiled(mlp(lambda layer: TargetedDropout(layer, 0.0, drop, refresh_steps=refresh)))  # noqa: B023
                model.fit(x, y, batch_size=64, epochs=epochs, verbose=0,
                          callbacks=[TargetedDropoutRamp(target_rate=(0.0, end), drop_rate=drop)])
                runs.append((accuracy(model, flat(test[0]), test[1]), accuracy(prune(model, 0.9).model, flat(test[0]), test[1])))
            runs = np.asarray(runs)
            rows[(name, refresh)] = {"unpruned": float(runs[:, 0].mean()), "pruned": float(runs[:, 1].mean()),
                                     "std": float(runs[:, 1].std()), "pruned_seed_0": float(runs[0, 1])}
            print("refresh", name, refresh, rows[(name, refresh)], flush=True)
    return rows


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch; `median` leaves out the first, which traces the step."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)

    @property
    def median(self):
        return float(np.median(self.times[1:] or self.times))


def gradual_rows(train, test, epochs, seeds):
    """Keras 3 gradual pruning (with and without Targeted Dropout) at each sparsity and seed."""
    x, y = flat(train[0]), train[1]
    steps = epochs * int(np.ceil(len(x) / 64))
    end_step = int(0.7 * steps)
    frequency = max(1, min(100, end_step // 10))  # as the tfmot rows
    rows = {}
    keras.utils.set_random_seed(0)
    plain, timer = compiled(mlp()), EpochTimes()
    plain.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[timer])
    rows["plain"] = {"epoch_s": timer.median, "accuracy": accuracy(plain, flat(test[0]), test[1])}
    for sparsity in GRADUAL_SPARSITIES:
        for method in ("gradual", "td_gradual"):
            runs = []
            for seed in seeds:
                keras.utils.set_random_seed(seed)
                # Targeted Dropout aimed at the final pruned set from the start (gamma = s, alpha 0.5).
                wrap = (lambda layer: TargetedDropout(layer, sparsity, 0.5)) if method == "td_gradual" else None
                model = compiled(prunable(mlp(wrap)))
                schedule = GradualPruning(sparsity, begin_step=0, end_step=end_step, frequency=frequency)
                timer = EpochTimes()
                model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[schedule, timer])
                runs.append({"epoch_s": timer.median,
                             "accuracy": accuracy(strip(model), flat(test[0]), test[1]), "sparsity": schedule.reached()})
            rows[(method, sparsity)] = summary(runs)
            print(method, sparsity, rows[(method, sparsity)], flush=True)
    return rows


def summary(runs):
    """Mean epoch time, sparsity and accuracy over seeds, with the accuracies' spread."""
    accuracies = [run["accuracy"] for run in runs]
    return {"epoch_s": float(np.mean([run["epoch_s"] for run in runs])), "accuracy": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)), "sparsity": float(np.mean([run["sparsity"] for run in runs])),
            "runs": accuracies}


def tfmot_rows(epochs, data_dir, quick, seeds):
    rows = {}
    for sparsity in GRADUAL_SPARSITIES:
        runs = []
        for seed in seeds:
            run = run_tfmot_worker(sparsity, epochs, data_dir, quick, seed)
            runs.append(dict(run, epoch_s=run["median_epoch_s"]))
        rows[sparsity] = summary(runs)
        print("tfmot", sparsity, rows[sparsity], flush=True)
    return rows


def unit_rows(train, test, epochs):
    """One unregularised MLP, pruned one shot by each criterion, with and without merging."""
    x, y = flat(train[0]), train[1]
    keras.utils.set_random_seed(0)
    model = compiled(mlp())
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    rows = {"unpruned": accuracy(model, flat(test[0]), test[1])}
    for criterion in CRITERIA:
        for merge in (False, True):
            for sparsity in UNIT_SPARSITIES:
                data = (x, y) if merge or criterion in ("onorm", "taylor") else None
                start = time.perf_counter()
                pruned = prune(model, sparsity, "unit", criterion=criterion, data=data, merge=merge).model
                rows[(criterion, merge, sparsity)] = {
                    "accuracy": accuracy(pruned, flat(test[0]), test[1]), "seconds": time.perf_counter() - start}
            print(criterion, merge, {s: rows[(criterion, merge, s)]["accuracy"] for s in UNIT_SPARSITIES}, flush=True)
    return rows


def litert_latency(paths, example, rounds=5, runs=200, delegate=True):
    """Median LiteRT milliseconds per invoke of each file, files timed in turn (`delegate=False`:
    without the interpreter's default XNNPack delegate)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreters = {}
    for name, path in paths.items():
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], example[None].astype(detail["dtype"]))
        interpreter.invoke()  # the first invoke prepares the delegate: not timed
        interpreters[name] = interpreter
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, interpreter in interpreters.items():
            for _ in range(runs):
                start = time.perf_counter()
                interpreter.invoke()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(values)) for name, values in times.items()}


def cnn_rows(train, test, epochs, quick):
    """A CNN with half its filters removed: accuracy, `.tflite` bytes and LiteRT latency."""
    from tflite_export import export

    x, y = train[0][..., None], train[1]
    x_test, y_test = test[0][..., None], test[1]
    keras.utils.set_random_seed(0)
    model = compiled(cnn())
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    rows = {"unpruned": {"accuracy": accuracy(model, x_test, y_test)}}
    merge_data = (x[:2000], y[:2000])
    for name, criterion, merge in (("magnitude", "magnitude", False), ("magnitude + merge", "magnitude", True),
                                   ("taylor + merge", "taylor", True)):
        pruned = prune(model, 0.5, "unit", criterion=criterion, data=merge_data if merge or criterion == "taylor"
                       else None, merge=merge).model
        rows[name] = {"accuracy": accuracy(pruned, x_test, y_test), "model": pruned}
        print("cnn", name, rows[name]["accuracy"], flush=True)
    best = max((name for name in rows if name != "unpruned"), key=lambda name: rows[name]["accuracy"])
    pruned = rows[best]["model"]
    tuned = compiled(keras.models.clone_model(pruned))
    tuned.set_weights(pruned.get_weights())
    tuned.fit(x, y, batch_size=64, epochs=1, verbose=0)
    rows["fine-tuned"] = {"accuracy": accuracy(tuned, x_test, y_test), "from": best}
    smaller = shrink(tuned)
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        files = {
            "unpruned": export(model, folder / "unpruned.tflite", verify_with=x_test[:32]),
            "pruned, not shrunk": export(strip(tuned), folder / "masked.tflite", verify_with=x_test[:32]),
            "shrunk": export(smaller, folder / "shrunk.tflite", verify_with=x_test[:32]),
        }
        latency = litert_latency({name: report.path for name, report in files.items()}, x_test[0],
                                 rounds=2 if quick else 5)
    rows["files"] = {
        name: {"bytes": report.bytes, "latency_ms": latency[name], "max_abs_diff": report.max_abs_diff,
               "params": (model if name == "unpruned" else smaller if name == "shrunk" else strip(tuned)).count_params()}
        for name, report in files.items()
    }
    rows["shrunk_accuracy"] = accuracy(smaller, x_test, y_test)
    print("cnn files", rows["files"], flush=True)
    for name in list(rows):
        if isinstance(rows[name], dict):
            rows[name].pop("model", None)
    return rows


def one_hidden(width, penalty=0.0):
    regular = penalty > 0
    return compiled(keras.Sequential([
        keras.Input((784,), name="pixels"),
        keras.layers.Dense(width, activation="relu", name="hidden", kernel_regularizer=FanIn(penalty) if regular else None),
        keras.layers.Dense(10, activation="softmax", name="classes", kernel_regularizer=FanOut(penalty) if regular else None),
    ]))


def grow_and_prune(train, test, quick, start=16, step=32, penalty=1e-3, tolerance=0.05, epochs_per_round=2):
    """Non-parametric training (Philipp & Carbonell 2017): train with fan-in/fan-out
    penalties, remove units whose incoming weights fell below `tolerance`, grow by
    `step`, until the validation loss has not improved (by 0.002) for two rounds."""
    x, y = flat(train[0]), train[1]
    split = len(x) * 7 // 8
    (x_fit, y_fit), (x_val, y_val) = (x[:split], y[:split]), (x[split:], y[split:])
    keras.utils.set_random_seed(0)
    model, history, best, waited = one_hidden(start, penalty), [], None, 0
    for round_ in range(4 if quick else 12):
        model.fit(x_fit, y_fit, batch_size=64, epochs=epochs_per_round, verbose=0)
        loss = float(model.evaluate(x_val, y_val, verbose=0)[0])
        width = model.get_layer("hidden").units
        norms = np.linalg.norm(model.get_layer("hidden").kernel.numpy(), axis=0)
        dead = int(np.sum(norms < tolerance))
        history.append({"round": round_, "width": width, "val_loss": loss, "dead": dead})
        print("grow-and-prune", history[-1], flush=True)
        if best is None or loss < best["val_loss"] - 2e-3:
            best, waited = {"val_loss": loss, "width": width - dead, "round": round_}, 0
            best_model = model
        else:
            waited += 1
            if waited == 2:
                break
        if dead:
            model = shrink(prune(model, dead / width, "unit", layers=["hidden"]).model)
        model = compiled(grow(model, "hidden", step))  # the copies keep the penalties
    final = shrink(prune(best_model, float(np.mean(np.linalg.norm(best_model.get_layer("hidden").kernel.numpy(), axis=0)
                                                   < tolerance)), "unit", layers=["hidden"]).model)
    width = final.get_layer("hidden").units
    epochs = len(history) * epochs_per_round
    keras.utils.set_random_seed(0)
    fixed = one_hidden(width)
    fixed.fit(x_fit, y_fit, batch_size=64, epochs=epochs, verbose=0)
    return {
        "history": history,
        "width": width,
        "accuracy": accuracy(compiled(final), flat(test[0]), test[1]),
        "fixed_accuracy": accuracy(fixed, flat(test[0]), test[1]),
        "epochs": epochs,
        "settings": dict(start=start, step=step, penalty=penalty, tolerance=tolerance, epochs_per_round=epochs_per_round),
    }


def cell(row):
    """A gradual-pruning cell: mean accuracy ± its standard deviation [the sparsity reached]."""
    return f"{row['accuracy']:.2%} ± {row['std']:.2%} [{row['sparsity']:.1%}]"


def write_results(stem, results):
    """`results`: `info`, `epochs`, `seeds`, `quick` and each section's measurements: `speed`, `refresh`,
    `gradual`, `tfmot`, `units`, `cnn_result`, `nonparametric`."""
    lines = (header(results) + speed_section(results["speed"]) + refresh_section(results["refresh"], results["seeds"])
             + gradual_section(results["gradual"], results["tfmot"], results["seeds"]) + unit_section(results["units"])
             + cnn_section(results["cnn_result"]) + grow_section(stem, results["nonparametric"]))
    reporting.write(stem, lines)
    plot(stem, results)


def header(results):
    epochs = results["epochs"]
    return [
        *reporting.heading("Pruning that pays, on MNIST", "pruning.py", results["quick"]),
        f"Data: {results['info']['source']}; {results['info']['split']}.",
        f"MLP 784-{HIDDEN[0]}-{HIDDEN[1]}-10 and CNN Conv2D(32)-Conv2D(64)-MaxPool-Dense(10), Adam 1e-3, batch 64, "
        f"{epochs} epochs (CNN: {max(1, epochs // 3)}), seed 0. Times are wall-clock on a shared machine: compare "
        "the ratios, which are measured within this run.",
        "",
    ]


def speed_section(speed):
    ratio = {backend: {key: seconds / rows[(key[0], "dropout")] for key, seconds in rows.items()}
             for backend, rows in speed.items()}
    mlp_ratio, cnn_ratio = ratio["tensorflow"][("mlp", "td")], ratio["tensorflow"][("cnn", "td")]
    lines = [
        "## 1. Targeted Dropout's training cost",
        "",
        "Median epoch, models timed one epoch each in turn; the baseline has a standard `Dropout(0.5)` after each "
        "layer that Targeted Dropout wraps (all three). TD: gamma 0.75, alpha 0.66 (units: gamma 0.5). "
        "CNN: 2,000 images an epoch. The default selects exactly at every step (`refresh_steps=1`: counting passes "
        "from last step's thresholds, `search_thresholds`); 'thresholds kept' never selects again after the first "
        "step, so it is the masking and the draws alone, and the difference to the default is the selection alone.",
        "",
    ]
    names = [("plain", "no dropout"), ("dropout", "Dropout(0.5) after each layer"),
             ("td", "**TD, default (exact every step)**"), ("td_64", "TD, `refresh_steps=64`"),
             ("td_kept", "TD, thresholds kept (masking and draws only)"), ("td_unit", "TD, units")]
    rows = [[label, *(cell for backend in speed
                      for cell in (f"{speed[backend][(model, name)]:.3f}", f"{ratio[backend][(model, name)]:.2f}x"))]
            for model, labels in (("mlp", names), ("cnn", [("dropout", "CNN: Dropout"), ("td", "CNN: **TD, default**")]))
            for name, label in labels]
    parts = {backend: (r[("mlp", "td")] - r[("mlp", "td_kept")], r[("mlp", "td_kept")] - r[("mlp", "plain")])
             for backend, r in ratio.items()}
    return lines + reporting.table(["MLP", "TensorFlow s/epoch", "vs Dropout", "JAX s/epoch", "vs Dropout"], rows) + [
        "",
        "Of the MLP's TD epoch, in Dropout epochs: the selection alone (default - thresholds kept) "
        + "; ".join(f"{parts[backend][0]:+.2f} on {backend}" for backend in parts)
        + "; the masking and the draws (thresholds kept - no dropout) "
        + "; ".join(f"{parts[backend][1]:+.2f} on {backend}" for backend in parts) + ".",
        "",
        f"Targets (TD step at most 1.2x the Dropout step for the MLP, 1.1x for the CNN): MLP {mlp_ratio:.2f}x "
        f"{reporting.verdict(mlp_ratio <= 1.2)}, CNN {cnn_ratio:.2f}x {reporting.verdict(cnn_ratio <= 1.1)} on TensorFlow; "
        f"on JAX MLP {ratio['jax'][('mlp', 'td')]:.2f}x, CNN {ratio['jax'][('cnn', 'td')]:.2f}x; units "
        f"{ratio['tensorflow'][('mlp', 'td_unit')]:.2f}x (was 1.12x).",
        "",
    ]


def refresh_section(refresh, seeds):
    pct = reporting.percent
    lines = [
        "What selecting every step buys: the MLP with ramping Targeted Dropout on every layer (the ramps of "
        "`benchmarks/targeted_dropout.py`, per epoch), pruned one shot to 90% of the weights; mean over seeds "
        f"{list(seeds)} (± the pruned accuracy's standard deviation), and seed 0 alone.",
        "",
    ]
    rows = [[name, f"{steps}{' (default)' if steps == 1 else ''}", pct(row["unpruned"]),
             f"{pct(row['pruned'])} ± {pct(row['std'])}", pct(row["pruned_seed_0"]),
             f"{(row['unpruned'] - row['pruned']) * 100:.2f}"] for (name, steps), row in refresh.items()]
    lines += reporting.table(["ramp", "refresh_steps", "unpruned", "pruned to 90%", "seed 0 pruned", "drop (points)"], rows)
    recipe = refresh.get(("ramp to the target 0.9, alpha 1", 1))
    if recipe:
        lines += [
            "",
            f"Target (the README recipe, ramp to the target 0.9 with alpha 1, at least 94.5% at seed 0 with the "
            f"default settings): {pct(recipe['pruned_seed_0'])} {reporting.verdict(recipe['pruned_seed_0'] >= 0.945)}; "
            "the default is `refresh_steps=1` itself, so 'within 0.1 point of it' holds by construction.",
            "",
        ]
    return lines


def gradual_section(gradual, tfmot, seeds):
    pct, verdict = reporting.percent, reporting.verdict
    lines = [
        "## 2. Gradual magnitude pruning during training",
        "",
        "`prunable(model)` + `GradualPruning(s, end_step=70% of the steps)` with tfmot's frequency; tfmot: "
        "`prune_low_magnitude` + `PolynomialDecay(0 -> s)` on the same schedule (tf_keras, "
        "`TF_USE_LEGACY_KERAS=1`). Both rank each layer's weights together (`scope='layer'`). s/epoch: the median "
        "epoch after the first (which traces), mean over seeds; runs are timed one after another, so the "
        "machine's load moves these more than the other ratios. Test accuracy "
        f"of the stripped model, mean ± standard deviation over seeds {list(seeds)}; the sparsity reached in brackets.",
        "",
    ]
    rows = [["Keras 3, no pruning", f"{gradual['plain']['epoch_s']:.2f}", f"{pct(gradual['plain']['accuracy'])} (0%)", None]]
    for method, name in (("gradual", "keras-compact GradualPruning"),
                         ("td_gradual", "keras-compact Targeted Dropout (gamma = s, alpha 0.5) + GradualPruning")):
        seconds = np.mean([gradual[(method, s)]["epoch_s"] for s in GRADUAL_SPARSITIES])
        rows.append([name, f"{seconds:.2f}", *(cell(gradual[(method, s)]) for s in GRADUAL_SPARSITIES)])
    tfmot_epoch = np.mean([row["epoch_s"] for row in tfmot.values()])
    rows.append(["tfmot prune_low_magnitude", f"{tfmot_epoch:.2f}", *(cell(tfmot[s]) for s in GRADUAL_SPARSITIES)])
    lines += reporting.table(["method", "s/epoch", *(f"{s:.0%}" for s in GRADUAL_SPARSITIES)], rows)
    gradual_epoch = np.mean([gradual[("gradual", s)]["epoch_s"] for s in GRADUAL_SPARSITIES])
    return lines + [""] + [
        f"- At {s:.0%}: {pct(gradual[('gradual', s)]['accuracy'])} against tfmot's {pct(tfmot[s]['accuracy'])} "
        f"(means over {len(seeds)} seeds): target (at least as accurate) "
        f"{verdict(gradual[('gradual', s)]['accuracy'] >= tfmot[s]['accuracy'])}."
        for s in GRADUAL_SPARSITIES
    ] + [
        f"- Epoch: {gradual_epoch:.2f} s against tfmot's {tfmot_epoch:.2f} s ({gradual_epoch / tfmot_epoch:.2f}x): "
        f"target (at most 1.2x) {verdict(gradual_epoch <= 1.2 * tfmot_epoch)}.",
        "",
    ]


def unit_section(units):
    pct = reporting.percent
    lines = [
        "## 3. Unit pruning one shot, no fine-tuning, unregularised MLP",
        "",
        f"One MLP trained without regularisation ({pct(units['unpruned'])} unpruned); `prune(model, s, "
        "granularity='unit', criterion=..., merge=...)` removes s of the units of both hidden layers; `data` (for "
        "onorm, taylor and merging) is the 8,000 training images. Test accuracy of the pruned model.",
        "",
    ]
    rows = [[criterion, "yes" if merge else "no", *(pct(units[(criterion, merge, s)]["accuracy"]) for s in UNIT_SPARSITIES),
             f"{units[(criterion, merge, 0.5)]['seconds']:.1f}"] for criterion in CRITERIA for merge in (False, True)]
    lines += reporting.table(["criterion", "merge", *(f"{s:.0%}" for s in UNIT_SPARSITIES), "seconds to prune (50%)"], rows)
    best = max(((c, m) for c in CRITERIA for m in (False, True)), key=lambda k: units[(k[0], k[1], 0.5)]["accuracy"])
    best_accuracy = units[(best[0], best[1], 0.5)]["accuracy"]
    return lines + [
        "",
        f"Target (50% of hidden units, best criterion + merge, at least 94.5%): {best[0]}"
        f"{' + merge' if best[1] else ''} {pct(best_accuracy)} {reporting.verdict(best_accuracy >= 0.945 and best[1])} "
        f"(magnitude without merge, the old method: {pct(units[('magnitude', False, 0.5)]['accuracy'])}).",
        "",
    ]


def cnn_section(cnn_result):
    files = cnn_result["files"]
    latency_ratio = files["shrunk"]["latency_ms"] / files["unpruned"]["latency_ms"]
    names = ("unpruned", "magnitude", "magnitude + merge", "taylor + merge", "fine-tuned")
    return [
        "## 4. A CNN with half its filters removed",
        "",
        f"Conv2D(32)-Conv2D(64)-MaxPool-Flatten-Dense(10), 50% of the filters of both convolutions pruned one shot "
        f"(merge data: 2,000 training images), then the most accurate ({cnn_result['fine-tuned']['from']}) fine-tuned "
        "1 epoch, shrunk and exported. LiteRT: median ms per invoke (batch 1), files timed in turn.",
        "",
        *reporting.table(["model", "test accuracy"], [[name, reporting.percent(cnn_result[name]["accuracy"])] for name in names]
                      + [["shrunk (the fine-tuned one)", reporting.percent(cnn_result["shrunk_accuracy"])]]),
        "",
        *reporting.table(["`.tflite`", "parameters", "bytes", "LiteRT ms", "max diff to Keras"],
                      [[name, f"{row['params']:,}", f"{row['bytes']:,}", f"{row['latency_ms']:.3f}",
                        f"{row['max_abs_diff']:.1e}"] for name, row in files.items()]),
        "",
        f"Target (shrunk latency at most 0.6x the unshrunk): {latency_ratio:.2f}x {reporting.verdict(latency_ratio <= 0.6)}; "
        f"bytes {files['shrunk']['bytes'] / files['unpruned']['bytes']:.2f}x.",
        "",
    ]


def grow_section(stem, nonparametric):
    settings = nonparametric["settings"]
    return [
        "## 5. Grow and prune (non-parametric network)",
        "",
        f"MLP 784-h-10; settings {settings}: each round trains {settings['epochs_per_round']} "
        "epochs with `FanIn` on the hidden kernel and `FanOut` on the output kernel, removes the hidden units whose "
        "incoming norm is below the tolerance (`prune` + `shrink`) and grows the layer (`grow`), until the "
        "validation loss (last 1/8 of the training images) has not improved by 0.002 for two rounds.",
        "",
        *reporting.table(["round", "width", "validation loss", "units below tolerance"],
                      [[row["round"], row["width"], f"{row['val_loss']:.4f}", row["dead"]]
                       for row in nonparametric["history"]]),
        "",
        f"Settled width: {nonparametric['width']} units; test accuracy {reporting.percent(nonparametric['accuracy'])}, "
        f"against {reporting.percent(nonparametric['fixed_accuracy'])} for a fixed-width network of "
        f"{nonparametric['width']} units trained {nonparametric['epochs']} epochs without penalties.",
        "",
        f"![pruning]({stem}.png)",
        "",
    ]


def plot(stem, results):
    gradual, tfmot, units = results["gradual"], results["tfmot"], results["units"]
    files = results["cnn_result"]["files"]
    figure, axes = reporting.pyplot().subplots(1, 3, figsize=(16, 4.2))
    labels = [f"{s:.0%}" for s in GRADUAL_SPARSITIES]
    positions = np.arange(len(GRADUAL_SPARSITIES))
    for offset, (name, values) in zip((-0.27, 0, 0.27), (
        ("GradualPruning", [gradual[("gradual", s)]["accuracy"] for s in GRADUAL_SPARSITIES]),
        ("TD + GradualPruning", [gradual[("td_gradual", s)]["accuracy"] for s in GRADUAL_SPARSITIES]),
        ("tfmot", [tfmot[s]["accuracy"] for s in GRADUAL_SPARSITIES]),
    )):
        axes[0].bar(positions + offset, values, width=0.25, label=name)
    axes[0].set_xticks(positions, labels)
    axes[0].set_ylim(0.8, 1.0)
    axes[0].set_xlabel("weight sparsity")
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title("pruned during training")
    axes[0].legend(fontsize=8)
    for criterion in CRITERIA:
        for merge, style in ((True, "-"), (False, ":")):
            axes[1].plot([s * 100 for s in UNIT_SPARSITIES], [units[(criterion, merge, s)]["accuracy"] for s in UNIT_SPARSITIES],
                         style, marker="o", label=f"{criterion}{' + merge' if merge else ''}")
    axes[1].set_xlabel("hidden units removed (%)")
    axes[1].set_ylabel("test accuracy (no fine-tuning)")
    axes[1].set_title("unit pruning one shot")
    axes[1].legend(fontsize=7)
    axes[1].grid(True)
    names = list(files)
    axes[2].bar(names, [files[name]["latency_ms"] for name in names], color=["gray", "tab:orange", "tab:green"])
    axes[2].set_ylabel("LiteRT ms per image")
    axes[2].set_title("CNN, 50% of filters pruned")
    figure.tight_layout()
    reporting.save(figure, stem)


def main(argv=None):
    parser = common.parser(__doc__, "small data, 2 epochs", "default 10 (quick: 2)")
    parser.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)  # section 1, as JSON (for JAX)
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)
    train, test, info = load(args.data_dir, args.quick)
    if args.speed_only:
        print("SPEED " + json.dumps({f"{model} {name}": seconds for (model, name), seconds in speed_rows(train, args.quick).items()}))
        return 0
    seeds = (0,) if args.quick else (0, 1, 2)
    results = dict(info=info, epochs=epochs, seeds=seeds, quick=args.quick,
                   speed={"tensorflow": speed_rows(train, args.quick), "jax": jax_speed_rows(args)})
    results["refresh"] = refresh_rows(train, test, epochs, seeds)
    results["gradual"] = gradual_rows(train, test, epochs, seeds)
    results["tfmot"] = tfmot_rows(epochs, args.data_dir, args.quick, seeds)
    results["units"] = unit_rows(train, test, epochs)
    results["cnn_result"] = cnn_rows(train, test, max(1, epochs // 3), args.quick)
    results["nonparametric"] = grow_and_prune(train, test, args.quick)
    write_results("pruning_quick" if args.quick else "pruning", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
