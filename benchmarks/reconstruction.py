"""Channel pruning one shot, with and without least-squares reconstruction (`reconstruct=True`).

MobileNetV2 (alpha 0.5) and the small ResNet of `structured_pruning.py`, trained on MNIST at
32x32x3 (8,000 train / 2,000 test of the shared 10k split) for 5 epochs, their
BatchNormalization statistics re-estimated. Then 30% and 50% of every group's channels removed
by each criterion, no fine-tuning: test accuracy pruned as is, with the statistics re-estimated
(`recalibrate_batch_norm`, what the README recommended so far), and reconstructed on 1,000
training images (`prune(..., data=x, reconstruct=True)`), with the seconds reconstruction took.
Target (issue 42): one shot with 30% of channels removed, within 2 points of unpruned.

    python benchmarks/reconstruction.py           # full (about 15 min on 2 cores)
    python benchmarks/reconstruction.py --quick   # smoke run

Writes benchmarks/results/reconstruction.md and .png (or *_quick.*).
"""

import sys
import time

import keras
import numpy as np

from keras_compact.pruning import macs, prune, recalibrate_batch_norm, shrink
import common
import reporting
from structured_pruning import A, CRITERIA, RATIOS, accuracy, compiled, mnist, small_resnet

NETWORKS = {
    "MobileNetV2 (alpha 0.5)": lambda: A.MobileNetV2(alpha=0.5, input_shape=(32, 32, 3), weights=None, classes=10),
    "small ResNet": small_resnet,
}
CALIBRATION = 1000  # training images the criteria and the reconstruction read


def rows(train, test, epochs, quick):
    """`{(network, criterion, ratio): {...}}` and each network's unpruned accuracy under `(network, None, 0)`."""
    (x, y), (x_test, y_test) = train, test
    data = (x[:CALIBRATION], y[:CALIBRATION])
    found = {}
    for name, build in NETWORKS.items():
        keras.utils.set_random_seed(0)
        model = compiled(build())
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
        base = compiled(recalibrate_batch_norm(model, x[:2000]))  # compiled: taylor differentiates its loss
        found[(name, None, 0)] = {"accuracy": accuracy(base, x_test, y_test), "macs": macs(base)}
        print(name, found[(name, None, 0)], flush=True)
        for criterion in CRITERIA[:1] if quick else CRITERIA:
            for ratio in RATIOS:
                needs = criterion in ("onorm", "taylor")
                plain = shrink(prune(base, ratio, granularity="channel", criterion=criterion,
                                     data=data if needs else None).model)
                start = time.perf_counter()
                rebuilt = prune(base, ratio, granularity="channel", criterion=criterion, data=data, reconstruct=True)
                seconds = time.perf_counter() - start
                row = {"macs": macs(plain), "one shot": accuracy(plain, x_test, y_test),
                       "BN re-estimated": accuracy(recalibrate_batch_norm(plain, x[:2000]), x_test, y_test),
                       "reconstructed": accuracy(shrink(rebuilt.model), x_test, y_test), "seconds": seconds}
                found[(name, criterion, ratio)] = row
                print(name, criterion, ratio, row, flush=True)
    return found


def write_results(stem, results):
    found, quick = results["rows"], results["quick"]
    lines = reporting.heading("Channel pruning one shot, reconstructed by least squares", "reconstruction.py", quick)
    lines += [f"MNIST at 32x32x3: {results['info']['split']}. Each network trained {results['epochs']} epochs "
              "(Adam 1e-3, batch 64), its BatchNormalization statistics re-estimated on 2,000 training images. "
              "Then `prune(model, ratio, granularity='channel', criterion=...)` one shot, shrunk, no fine-tuning: "
              "test accuracy as pruned, with the statistics re-estimated, and with every reader refit on "
              f"{CALIBRATION:,} training images (`data=x, reconstruct=True`, which also feed onorm and taylor).", ""]
    table, met = [], []
    for name in NETWORKS:
        unpruned = found[(name, None, 0)]
        table.append([name, "unpruned", "", f"{unpruned['macs'] / 1e6:.1f} M", reporting.percent(unpruned["accuracy"]),
                      "", "", ""])
        for (network, criterion, ratio), row in found.items():
            if network != name or criterion is None:
                continue
            table.append([name, criterion, f"{ratio:.0%}", f"{row['macs'] / 1e6:.1f} M",
                          reporting.percent(row["one shot"]), reporting.percent(row["BN re-estimated"]),
                          f"**{reporting.percent(row['reconstructed'])}**", f"{row['seconds']:.0f}"])
            if ratio == 0.3:
                met.append((name, criterion, unpruned["accuracy"] - row["reconstructed"]))
    lines += reporting.table(["network", "criterion", "channels removed", "MACs", "one shot", "BN re-estimated",
                              "reconstructed", "seconds to reconstruct"], table)
    lines += ["", "Target (30% of channels removed, one shot, within 2 points of unpruned):"]
    for name in NETWORKS:
        best = min((gap, criterion) for network, criterion, gap in met if network == name)
        lines.append(f"- {name}: best {best[1]}, {best[0] * 100:.2f} points under unpruned "
                     f"{reporting.verdict(best[0] <= 0.02)}.")
    reporting.write(stem, lines, end="\n")
    plot(stem, found)


def plot(stem, found):
    plt = reporting.pyplot()
    figure, axes = plt.subplots(1, len(NETWORKS), figsize=(11, 4), sharey=True)
    for axis, name in zip(axes, NETWORKS):
        keys = [key for key in found if key[0] == name and key[1] is not None]
        labels = [f"{criterion}\n{ratio:.0%}" for _, criterion, ratio in keys]
        positions = np.arange(len(keys))
        for offset, column in ((-0.2, "BN re-estimated"), (0.2, "reconstructed")):
            axis.bar(positions + offset, [found[key][column] * 100 for key in keys], 0.4, label=column)
        axis.axhline(found[(name, None, 0)]["accuracy"] * 100, color="black", linestyle="--", label="unpruned")
        axis.set_xticks(positions, labels, fontsize=8)
        axis.set_title(name)
    axes[0].set_ylabel("test accuracy (%), no fine-tuning")
    axes[0].legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    reporting.save(figure, stem)


def main(argv=None):
    parser = common.parser(__doc__, "small data, 1 epoch, magnitude only", "training epochs (default 5; quick 1)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 5)
    train, test, info = mnist(args.data_dir, args.quick)
    results = dict(info=info, epochs=epochs, quick=args.quick, rows=rows(train, test, epochs, args.quick))
    write_results("reconstruction_quick" if args.quick else "reconstruction", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
