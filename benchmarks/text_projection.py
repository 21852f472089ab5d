"""Text models on real intent data: accuracy per byte against the bag-of-n-grams classifier.

Data: SNIPS (7 intents) and ATIS from the shared data folder, official train/test
splits. Every model reads one `TextViews` dict: `"words"` (`TextFeaturizer(ngrams=2)`),
`"chars"` (`TextFeaturizer(ngrams=0, char_ngrams=(3, 5))`) and `"tokens"`
(`TokenBuckets(6144, 32)`). Rows, per data set:

- bag-of-n-grams logistic regression: scikit-learn on the word features hashed into
  2**18 columns (the reference), and `bag_of_ngrams` (the same model in Keras, 2**18
  buckets), which is also the trainer that the distilled rows learn from;
- the LSTM trainer alone (`lstm_trainer`);
- deployable networks, each trained on the labels alone and distilled by
  `ProjectionNet(bag_of_ngrams, network)` (l1 = 1, l2 = 0.1, l3 = 1; the 720-bit
  network also from its old LSTM trainer):
  - 720 bits: `projection_network(T=60, d=12)`;
  - 2,800 bits: `projection_network(T=200, d=14)`;
  - SGNN-style: 2,800 bits -> Dense(256) -> Dropout(0.2) -> softmax;
  - multi-view: words and chars, 2,800 bits each, concatenated -> softmax;
  - sequence: `sequence_network` (6,144 token buckets x 32, bidirectional QRNN 48).

Accuracy: top-1 on the test split, of the Keras model and of its int8 `.tflite` file in
LiteRT. Bytes: the float32 and int8 `.tflite` files (`quantization="int8"`, 200
training sentences as representative data; builtin operators only, checked); float32
parameters for the trainers. Latency: LiteRT, one sentence per invoke, median, without
the featurizer; the Java featurizer's time per sentence is measured separately when
`javac` and Guava are present. Training speed: the median epoch (after the first) of
the 2,800-bit network trained alone, as a ratio to the LSTM trainer's, in this run.

    python benchmarks/text_projection.py            # full (about 30 min on 2 cores)
    python benchmarks/text_projection.py --quick    # smoke run

Writes benchmarks/results/text_projection.md and text_projection.png (or *_quick).
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_compact
import tflite_export
from keras_compact import ProjectionNet
from keras_compact.layers import TextFeaturizer, TextViews, TokenBuckets
from keras_compact.models import bag_of_ngrams, lstm_trainer, projection_network, sequence_network
import common
import reporting
from pruning import EpochTimes  # wall time per epoch; its median leaves out the first (tracing)

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 64
LOGISTIC_COLUMNS = 2**18
TOKENS = dict(num_buckets=6144, max_length=32)
TARGET_BYTES = 300_000
# Java featurizer arguments of each view (FeaturizerMain), for its timing.
JAVA_VIEWS = {"words": ["2", "0", "0", "0", "true", "0"], "chars": ["0", "0", "3", "5", "true", "0"],
              "tokens": ["tokens", str(TOKENS["num_buckets"]), str(TOKENS["max_length"]), "true"]}
GUAVA = "/usr/share/java/guava.jar"


def views():
    return TextViews(
        {
            "words": TextFeaturizer(ngrams=2),
            "chars": TextFeaturizer(ngrams=0, char_ngrams=(3, 5)),
            "tokens": TokenBuckets(**TOKENS),
        }
    )


def networks(num_classes):
    """`{name: (builder, learning rate, distill from)}`: the deployable networks."""
    return {
        "720 bits (T=60, d=12)": (lambda: projection_network(num_classes, 60, 12, views="words"), 1e-3),
        "2,800 bits (T=200, d=14)": (lambda: projection_network(num_classes, 200, 14, views="words"), 1e-3),
        "SGNN-style: 2,800 bits, Dense 256": (
            lambda: projection_network(num_classes, 200, 14, hidden_units=(256,), dropout=0.2, views="words"), 1e-3,
        ),
        "multi-view: words + chars, 2 x 2,800 bits": (
            lambda: projection_network(num_classes, 200, 14, views=("words", "chars")), 1e-3,
        ),
        "sequence: 6,144 x 32 token table, biQRNN 48": (
            lambda: sequence_network(num_classes, embedding_dim=32, units=48, **TOKENS), 3e-3,
        ),
    }


def inputs_of(model, features):
    """The entries of a `TextViews` dict that `model` reads."""
    names = [tensor.name for tensor in model.inputs]
    return features[names[0]] if len(names) == 1 else {name: features[name] for name in names}


def accuracy(model, features, y):
    return float(np.mean(model.predict(inputs_of(model, features), batch_size=256, verbose=0).argmax(-1) == y))


def parameter_bytes(model):
    return int(sum(np.prod(w.shape) for w in model.weights) * 4)


def fit(model, data, epochs, learning_rate, trainer=None):
    """Trains `model` alone (labels) or with `ProjectionNet(trainer, model)`; returns (seconds, epoch times)."""
    times = EpochTimes()
    if trainer is None:
        model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
        data = data.map(lambda features, label: (inputs_of(model, features), label))
        fitted = model
    else:
        fitted = ProjectionNet(trainer, model)
        fitted.compile(keras.optimizers.Adam(learning_rate))
    start = time.perf_counter()
    fitted.fit(data, epochs=epochs, verbose=0, callbacks=[times])
    return time.perf_counter() - start, times


def exported(model, test, representative, y_test):
    """Float32 and int8 files: bytes, LiteRT latency, and the int8 file's accuracy on the test split."""
    row = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind, options in (("float32", {}), ("int8", dict(quantization="int8", representative_data=representative))):
            path = os.path.join(folder, f"{kind}.tflite")
            report = tflite_export.export(model, path, verify_with=test, **options)
            assert report.builtin_only, report
            if kind == "float32":
                assert report.top1_agreement == 1.0, report
            row[f"{kind}_bytes"] = report.bytes
            row[f"{kind}_ms"] = report.latency_ms
            row[f"{kind}_agreement"] = report.top1_agreement
        row["int8_precision"] = float(np.mean(tflite_export.predict(path, test).argmax(-1) == y_test))
    return row


def logistic_row(x_train, y_train, x_test, y_test):
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    featurizer = TextFeaturizer(ngrams=2)

    def matrix(x):
        ids, weights = featurizer(tf.constant(x.astype(str)))
        columns = np.mod(ids.flat_values.numpy(), LOGISTIC_COLUMNS)
        rows = np.repeat(np.arange(len(x)), ids.row_lengths().numpy())
        return csr_matrix((weights.flat_values.numpy(), (rows, columns)), shape=(len(x), LOGISTIC_COLUMNS))

    start = time.perf_counter()
    model = LogisticRegression(max_iter=2000).fit(matrix(x_train), y_train)
    seconds = time.perf_counter() - start
    precision = float(np.mean(model.predict(matrix(x_test)) == y_test))
    return dict(precision=precision, params_bytes=int(model.coef_.size + model.intercept_.size) * 4, train_s=seconds)


def java_microseconds(sentences):
    """Median microseconds per sentence of the Java featurizer, per view; None without javac and Guava."""
    if shutil.which("javac") is None or not os.path.isfile(GUAVA):
        return None
    sources = sorted(str(p) for p in (ROOT / "tutorials" / "android" / "featurizer" / "src" / "com" / "kerascompact").glob("*.java"))
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run(["javac", "-cp", GUAVA, "-d", classes, *sources], check=True, capture_output=True)
        payload = "".join(s.encode().hex() + "\n" for s in sentences)
        return {
            view: float(subprocess.run(
                ["java", "-cp", f"{GUAVA}:{classes}", "com.kerascompact.FeaturizerMain", *arguments, "--time"],
                input=payload, capture_output=True, text=True, check=True,
            ).stdout.split()[0])
            for view, arguments in JAVA_VIEWS.items()
        }


def run(dataset, data_dir, epochs, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load(dataset, data_dir, with_info=True)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:1500], y_train[:1500], x_test[:200], y_test[:200]
    num_classes = len(info["classes"])
    featurize = views()
    data = (
        tf.data.Dataset.from_tensor_slices((x_train.astype(str), y_train))
        .shuffle(len(x_train), seed=0, reshuffle_each_iteration=True)
        .batch(BATCH)
        .map(lambda text, label: (featurize(text), label))
    )
    test = featurize(tf.constant(x_test.astype(str)))
    representative = featurize(tf.constant(x_train[:200].astype(str)))
    rows, speed = [], {}

    def trainer_row(name, make, learning_rate):
        keras.utils.set_random_seed(0)
        model = make()
        seconds, times = fit(model, data, epochs, learning_rate)
        row = dict(model=name, distilled="-", precision=accuracy(model, test, y_test), params_bytes=parameter_bytes(model),
                   train_s=seconds)
        rows.append(row)
        print(dataset, row, flush=True)
        return times

    rows.append(dict(model="bag-of-n-grams logistic regression (scikit-learn)", distilled="-",
                     **logistic_row(x_train, y_train, x_test, y_test)))
    print(dataset, rows[-1], flush=True)
    trainer_row("bag_of_ngrams (Keras), the trainer", lambda: bag_of_ngrams(num_classes, view="words"), 3e-3)
    speed["lstm"] = trainer_row("LSTM trainer", lambda: lstm_trainer(num_classes, view="words"), 1e-3).median

    trainers = {"bag_of_ngrams": lambda: bag_of_ngrams(num_classes, view="words")}
    for name, (make, learning_rate) in networks(num_classes).items():
        sources = [None, "bag_of_ngrams"] + (["LSTM"] if name.startswith("720") else [])
        for source in sources:
            keras.utils.set_random_seed(0)
            model = make()
            trainer = None if source is None else (trainers.get(source) or (lambda: lstm_trainer(num_classes, view="words")))()
            seconds, times = fit(model, data, epochs, learning_rate, trainer)
            if source is None and name.startswith("2,800"):
                speed["projection"] = times.median
            row = dict(model=name, distilled=source or "-", precision=accuracy(model, test, y_test),
                       params_bytes=parameter_bytes(model), train_s=seconds,
                       **exported(model, test, representative, y_test))
            rows.append(row)
            print(dataset, row, flush=True)
    return rows, info, speed


def best_compact(rows):
    """The most accurate row whose int8 file is at most TARGET_BYTES (by its int8 accuracy in LiteRT)."""
    small = [row for row in rows if row.get("int8_bytes", np.inf) <= TARGET_BYTES]
    return max(small, key=lambda row: row["int8_precision"], default=None)


def write_results(stem, results):
    """`results`: `epochs`, `quick`, the `datasets`' `(rows, info, speed)` and the `java` featurizer's
    microseconds per sentence (None where it was not timed)."""
    lines = header(results)
    for dataset, (rows, info, speed) in results["datasets"].items():
        lines += dataset_section(dataset, rows, info) + speed_lines(speed)
    lines += java_section(results["java"])
    reporting.write(stem, lines)
    plot(stem, results["datasets"])


def header(results):
    return [
        *reporting.heading("Text models on intent classification: accuracy per byte", "text_projection.py",
                           results["quick"]),
        "Inputs: one `TextViews` dict per batch: words (`TextFeaturizer(ngrams=2)`), chars "
        "(`TextFeaturizer(ngrams=0, char_ngrams=(3, 5))`), tokens (`TokenBuckets(6144, 32)`). "
        f"Adam, batch {BATCH}, {results['epochs']} epochs, seed 0, a fresh shuffle each epoch; distilled rows: "
        "`ProjectionNet(trainer, network)`, l1=1, l2=0.1, l3=1, temperature 1, the trainer trained jointly. "
        "Accuracy: top-1 on the test split, of the Keras model and of the int8 `.tflite` file in LiteRT. "
        "Bytes: `.tflite` files (builtin operators only; the float32 file agrees with Keras on 100% of the "
        "test split), float32 parameters for trainers. Latency: LiteRT, one sentence per invoke, median, "
        "without the featurizer. Train s: the whole fit, trainer included for distilled rows.",
        "",
    ]


def model_row(row):
    if "float32_bytes" in row:
        files = [f"{row['int8_precision']:.2%}", f"{row['float32_bytes']:,}", f"{row['int8_bytes']:,}",
                 f"{row['float32_ms']:.3f} / {row['int8_ms']:.3f}"]
    else:
        files = ["-", f"{row['params_bytes']:,} (parameters)", "-", "-"]
    return [row["model"], row["distilled"], f"{row['precision']:.2%}", *files, f"{row['train_s']:.0f}"]


def dataset_section(dataset, rows, info):
    reference = rows[0]["precision"]
    lines = [
        f"## {dataset.upper()}: {info['source']}; {info['split']}; {len(info['classes'])} classes (with UNK)",
        "",
        *reporting.table(["model", "distilled from", "accuracy", "int8 file accuracy", "float32 bytes", "int8 bytes",
                       "LiteRT ms float32 / int8", "train s"], [model_row(row) for row in rows]),
        "",
    ]
    target = (f"Target (a file of at most {TARGET_BYTES:,} bytes at least as accurate as the logistic regression, "
              f"{reference:.2%}): ")
    best = best_compact(rows)
    if best is None:
        return lines + [target + "**NOT met**: no int8 file is that small."]
    source = "trained on the labels alone" if best["distilled"] == "-" else f"distilled from {best['distilled']}"
    return lines + [target + f"best such file: {best['model']}, {source}, int8, {best['int8_bytes']:,} bytes, "
                    f"{best['int8_precision']:.2%}: " + ("**met**." if best["int8_precision"] >= reference else "**NOT met**.")]


def speed_lines(speed):
    ratio = speed["projection"] / speed["lstm"]
    return [
        "",
        f"Training speed (median epoch after the first, this run): 2,800-bit network trained alone "
        f"{speed['projection']:.2f} s, LSTM trainer {speed['lstm']:.2f} s: {ratio:.2f}x (target at most 1.5x: "
        + ("**met**)." if ratio <= 1.5 else "**NOT met**)."),
        "",
    ]


def java_section(java):
    if java is None:
        return ["Java featurizer: not timed (no javac and Guava here).", ""]
    return [
        "## Java featurizer",
        "",
        "`tutorials/android/featurizer` on this machine's JVM (not a phone), median over 20 passes of the "
        "SNIPS test sentences: " + ", ".join(f"{view} {micros:.1f} µs" for view, micros in java.items()) + " per sentence.",
        "",
    ]


def plot(stem, datasets):
    figure, axes = reporting.pyplot().subplots(1, len(datasets), figsize=(6.5 * len(datasets), 5))
    for axis, (dataset, (rows, _, _)) in zip(np.atleast_1d(axes), datasets.items()):
        for row in rows:
            distilled = row["distilled"] != "-"
            if "int8_bytes" in row:
                points = [(row["int8_bytes"], row["int8_precision"], "o"), (row["float32_bytes"], row["precision"], "s")]
            else:
                points = [(row["params_bytes"], row["precision"], "^")]
            for size, value, marker in points:
                axis.scatter(size, value * 100, marker=marker, color="tab:orange" if distilled else "tab:blue", alpha=0.8)
            label = row["model"].split(":")[0].split(" (")[0] + (f" <- {row['distilled']}" if distilled else "")
            axis.annotate(label, (points[0][0], points[0][1] * 100), fontsize=6, xytext=(3, 2), textcoords="offset points")
        axis.axhline(rows[0]["precision"] * 100, color="gray", linestyle="--", linewidth=0.8)
        axis.axvline(TARGET_BYTES, color="gray", linestyle=":", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("bytes (.tflite; parameters for trainers)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{dataset.upper()}: o int8 file, s float32 file, ^ trainer; orange: distilled")
        axis.title.set_fontsize(8)
    figure.tight_layout()
    reporting.save(figure, stem, dpi=110)


def main(argv=None):
    parser = common.parser(__doc__, "1,500 training sentences, 1 epoch", "default 10 (quick: 2)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)
    datasets = {dataset: run(dataset, args.data_dir, epochs, args.quick) for dataset in ("snips", "atis")}
    x_test = keras_compact.datasets.load("snips", args.data_dir)[1][0]
    java = java_microseconds([str(s) for s in x_test])
    results = dict(datasets=datasets, epochs=epochs, quick=args.quick, java=java)
    write_results("text_projection_quick" if args.quick else "text_projection", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
