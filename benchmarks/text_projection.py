"""Text ProjectionNet on real intent data: LSTM trainer vs projection networks vs bag of n-grams.

Data: SNIPS (7 intents) and ATIS from the shared data folder, official train/test
splits. Features: `TextFeaturizer(ngrams=2)` (word unigrams and bigrams, hashed).
Rows, per data set:

- the LSTM trainer alone (`keras_compact.models.lstm_trainer`, cross-entropy);
- ProjectionNet with (T, d) in {(10, 12), (60, 12), (80, 14)}: the projection
  network (`projection_network`: LSH projection + softmax layer) trained jointly with
  the same LSTM trainer (l1 = 1, l2 = 0.1, l3 = 1);
- a bag-of-n-grams logistic regression (scikit-learn) on the same feature ids,
  hashed into 2**18 columns.

precision@1 is top-1 accuracy on the test split. Bytes: the projection networks'
`.tflite` files (LSH_PROJECTION builtin, verified in LiteRT); the LSTM trainer and the
logistic model as float32 parameters. Latency: LiteRT, one sentence per invoke,
median; the featurizer (Python/Java) is not included.

    python benchmarks/text_projection.py            # full (about 8 min on 2 cores)
    python benchmarks/text_projection.py --quick    # smoke run

Writes benchmarks/results/text_projection.md (or text_projection_quick.md).
"""

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_compact
import tflite_export
from keras_compact import ProjectionNet, TextFeaturizer
from keras_compact.models import lstm_trainer, projection_network

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = [(10, 12), (60, 12), (80, 14)]
BATCH = 64
LOGISTIC_COLUMNS = 2**18


def batches(featurizer, x, y, shuffle):
    data = tf.data.Dataset.from_tensor_slices((x.astype(str), y))
    if shuffle:
        data = data.shuffle(len(x), seed=0)
    return data.batch(BATCH).map(lambda s, label: (tuple(featurizer(s)), label))


def accuracy(model, features, y):
    return float(np.mean(model.predict(features, batch_size=256, verbose=0).argmax(-1) == y))


def parameter_bytes(model):
    return int(sum(np.prod(w.shape) for w in model.weights) * 4)


def logistic_row(featurizer, train, test):
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    def matrix(x):
        ids, weights = featurizer(tf.constant(x.astype(str)))
        columns = np.mod(ids.flat_values.numpy(), LOGISTIC_COLUMNS)
        rows = np.repeat(np.arange(len(x)), ids.row_lengths().numpy())
        return csr_matrix((weights.flat_values.numpy(), (rows, columns)), shape=(len(x), LOGISTIC_COLUMNS))

    start = time.perf_counter()
    model = LogisticRegression(max_iter=2000).fit(matrix(train[0]), train[1])
    seconds = time.perf_counter() - start
    precision = float(np.mean(model.predict(matrix(test[0])) == test[1]))
    return dict(precision=precision, bytes=int(model.coef_.size + model.intercept_.size) * 4,
                latency_ms=None, train_s=seconds)


def run(dataset, data_dir, epochs, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load(dataset, data_dir, with_info=True)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:1500], y_train[:1500], x_test[:200], y_test[:200]
    num_classes = len(info["classes"])
    featurizer = TextFeaturizer(ngrams=2)
    test_features = list(featurizer(tf.constant(x_test.astype(str))))
    rows = {}

    keras.utils.set_random_seed(0)
    trainer = lstm_trainer(num_classes)
    trainer.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    start = time.perf_counter()
    trainer.fit(batches(featurizer, x_train, y_train, True), epochs=epochs, verbose=0)
    rows["LSTM trainer alone"] = dict(
        precision=accuracy(trainer, test_features, y_test), bytes=parameter_bytes(trainer), latency_ms=None,
        train_s=time.perf_counter() - start,
    )
    print(dataset, rows["LSTM trainer alone"], flush=True)

    for num_hashes, num_bits in CONFIGS:
        keras.utils.set_random_seed(0)
        net = ProjectionNet(lstm_trainer(num_classes), projection_network(num_classes, num_hashes, num_bits))
        net.compile(keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        net.fit(batches(featurizer, x_train, y_train, True), epochs=epochs, verbose=0)
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:
            report = tflite_export.export(net, os.path.join(folder, "projection.tflite"), verify_with=test_features)
        assert report.builtin_only and report.top1_agreement == 1.0, report
        rows[f"ProjectionNet T={num_hashes}, d={num_bits} ({num_hashes * num_bits} bits)"] = dict(
            precision=accuracy(net.projection, test_features, y_test),
            trainer_precision=accuracy(net.trainer, test_features, y_test),
            bytes=report.bytes, latency_ms=report.latency_ms, train_s=seconds,
        )
        print(dataset, num_hashes, num_bits, rows[list(rows)[-1]], flush=True)

    rows["bag-of-n-grams logistic regression"] = logistic_row(featurizer, (x_train, y_train), (x_test, y_test))
    return rows, info


def write_results(stem, results, epochs, quick):
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Text ProjectionNet on intent classification" + (" (quick smoke run)" if quick else ""),
        "",
        f"Written by `benchmarks/text_projection.py{' --quick' if quick else ''}` on {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__}.",
        "",
        "Features: `TextFeaturizer(ngrams=2)`. LSTM trainer: `lstm_trainer` (2**15 hashed buckets, embedding 64, "
        f"LSTM 64, softmax). Projection networks: `projection_network(T, d)` (LSH projection + softmax). "
        f"Adam 1e-3, batch {BATCH}, {epochs} epochs, seed 0; ProjectionNet l1=1, l2=0.1, l3=1, temperature 1. "
        "Bytes: `.tflite` for projection networks (builtin operators only, LiteRT top-1 agreement 100% on the "
        "test split), float32 parameters otherwise. Latency: LiteRT, one sentence per invoke, median, without "
        "the featurizer.",
        "",
    ]
    for dataset, (rows, info) in results.items():
        lstm = rows["LSTM trainer alone"]
        lines += [
            f"## {dataset.upper()}: {info['source']}; {info['split']}; {len(info['classes'])} classes "
            "(with UNK)",
            "",
            "| model | precision@1 | jointly trained LSTM trainer | bytes | LSTM bytes / bytes | LiteRT ms/sentence | train s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            trainer = f"{row['trainer_precision']:.2%}" if "trainer_precision" in row else "-"
            latency = f"{row['latency_ms']:.3f}" if row["latency_ms"] is not None else "-"
            lines.append(
                f"| {name} | {row['precision']:.2%} | {trainer} | {row['bytes']:,} | "
                f"{lstm['bytes'] / row['bytes']:.3g}x | {latency} | {row['train_s']:.0f} |"
            )
        target = rows["ProjectionNet T=60, d=12 (720 bits)"]
        gap = (lstm["precision"] - target["precision"]) * 100
        ratio = lstm["bytes"] / target["bytes"]
        lines += [
            "",
            f"Target (720 bits within 5 points of its LSTM trainer and at least 50x smaller): "
            f"{target['precision']:.2%} vs {lstm['precision']:.2%} ({gap:.2f} points), {ratio:.0f}x smaller: "
            + ("**met**." if gap <= 5 and ratio >= 50 else "**NOT met**."),
            "",
        ]
    (out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,500 training sentences, 1 epoch")
    parser.add_argument("--epochs", type=int, default=None, help="default 5 (quick: 1)")
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_COMPACT_DATA", os.path.relpath(ROOT.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 5)
    results = {dataset: run(dataset, args.data_dir, epochs, args.quick) for dataset in ("snips", "atis")}
    write_results("text_projection_quick" if args.quick else "text_projection", results, epochs, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
