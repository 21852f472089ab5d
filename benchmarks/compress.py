"""Accuracy kept by channel pruning: one shot with least-squares reconstruction, and `compress` end to end.

MobileNetV2 (alpha 0.5) and the small ResNet of `structured_pruning.py`, trained on MNIST at
32x32x3 (8,000 train / 2,000 test of the shared 10k split) for 5 epochs, their
BatchNormalization statistics re-estimated.

1. One shot: 30% and 50% of every group's channels removed by each criterion, no fine-tuning:
   test accuracy pruned as is, with the statistics re-estimated (`recalibrate_batch_norm`, what
   the README recommended so far), and reconstructed on 1,000 training images
   (`prune(..., data=x, reconstruct=True)`), with the seconds reconstruction took; `"obs"`
   (layer-wise Optimal Brain Surgeon) chooses the channels the refit rebuilds best, `"dpp"` the
   most diverse ones (Mariet & Sra). Target
   (issue 42): 30% of channels removed, within 2 points of unpruned.
2. `tflite_export.compress(model, data, path, macs_ratio=0.5, epochs=2)` (criterion obs): against Torch-Pruning's
   default recipe reproduced here (the same uniform ratio by magnitude, no reconstruction, the
   same 2 epochs of plain fine-tuning, statistics re-estimated) and against the pruned widths
   trained from fresh weights for 7 epochs (5 + 2). Target: within 1 point of unpruned.

    python benchmarks/compress.py           # full (about 30 min on 2 cores)
    python benchmarks/compress.py --quick   # smoke run
    python benchmarks/compress.py --criteria dpp   # section 1 for these criteria only

Writes benchmarks/results/compress.md and .png (or *_quick.*; with --criteria
compress_criteria_<names>.md and .png, section 1 only).
"""

import sys
import tempfile
import time

import keras
import numpy as np

from keras_compact.pruning import macs, prune, recalibrate_batch_norm, shrink
import common
import reporting
from structured_pruning import A, RATIOS, accuracy, compiled, mnist, small_resnet
from tflite_export import compress

NETWORKS = {
    "MobileNetV2 (alpha 0.5)": lambda: A.MobileNetV2(alpha=0.5, input_shape=(32, 32, 3), weights=None, classes=10),
    "small ResNet": small_resnet,
}
CRITERIA = ("magnitude", "bn_scale", "onorm", "taylor", "obs", "dpp")
CALIBRATION = 1000  # training images the criteria and the reconstruction read
TUNE_EPOCHS = 2


def trained(train, epochs):
    """`{network: trained model}`, each compiled, its statistics re-estimated."""
    (x, y) = train
    found = {}
    for name, build in NETWORKS.items():
        keras.utils.set_random_seed(0)
        model = compiled(build())
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
        found[name] = compiled(recalibrate_batch_norm(model, x[:2000]))  # compiled: taylor differentiates its loss
    return found


def rows(bases, train, test, criteria):
    """`{(network, criterion, ratio): {...}}` and each network's unpruned accuracy under `(network, None, 0)`."""
    (x, y), (x_test, y_test) = train, test
    data = (x[:CALIBRATION], y[:CALIBRATION])
    found = {}
    for name, base in bases.items():
        found[(name, None, 0)] = {"accuracy": accuracy(base, x_test, y_test), "macs": macs(base)}
        print(name, found[(name, None, 0)], flush=True)
        for criterion in criteria:
            for ratio in RATIOS:
                needs = criterion in ("onorm", "taylor", "obs", "dpp")
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


def compress_rows(bases, train, test, epochs):
    """`{network: {way: {"accuracy", "macs", "seconds"}}}`: compress, Torch-Pruning's recipe, from scratch."""
    (x, y), (x_test, y_test) = train, test
    found = {}
    for name, base in bases.items():
        rows = found[name] = {}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            report = compress(base, (x, y), f"{folder}/compressed.tflite", macs_ratio=0.5,
                              validation_data=(x_test, y_test), epochs=TUNE_EPOCHS, verbose=0)
        seconds = time.perf_counter() - start
        for stage in report.stages:
            rows[f"compress: {stage.name}"] = {"accuracy": stage.accuracy, "macs": stage.macs,
                                               "seconds": stage.seconds}
        rows["compress: exported (seconds: the whole call)"] = {"accuracy": None, "macs": report.stages[-1].macs, "seconds": seconds,
                                      "agreement": report.export.top1_agreement, "bytes": report.export.bytes}
        # Torch-Pruning's default: the same uniform ratio by magnitude, then the same epochs of plain fine-tuning.
        start = time.perf_counter()
        plain = compiled(shrink(prune(base, report.ratio, granularity="channel").model))
        plain.fit(x, y, batch_size=64, epochs=TUNE_EPOCHS, verbose=0)
        plain = recalibrate_batch_norm(plain, x[:2000])
        rows["Torch-Pruning's recipe (magnitude, fine-tune)"] = {
            "accuracy": accuracy(plain, x_test, y_test), "macs": macs(plain), "seconds": time.perf_counter() - start}
        start = time.perf_counter()
        keras.utils.set_random_seed(0)
        scratch = compiled(keras.models.clone_model(plain))  # the pruned widths, fresh weights
        scratch.fit(x, y, batch_size=64, epochs=epochs + TUNE_EPOCHS, verbose=0)
        scratch = recalibrate_batch_norm(scratch, x[:2000])
        rows[f"pruned widths from scratch, {epochs + TUNE_EPOCHS} epochs"] = {
            "accuracy": accuracy(scratch, x_test, y_test), "macs": macs(scratch), "seconds": time.perf_counter() - start}
        print(name, {way: row["accuracy"] for way, row in rows.items()}, flush=True)
    return found


def compress_section(results):
    found = results["compress"]
    lines = ["", "## 2. `compress` at 0.5x the MACs, end to end", "",
             f"`tflite_export.compress(model, (x, y), path, macs_ratio=0.5, epochs={TUNE_EPOCHS})` on the models of "
             "section 1: the uniform channel ratio bisected to the budget, channels chosen by obs and reconstructed on "
             "2,048 training images, fine-tuned distilled from the unpruned model (half the loss on the labels, half "
             "the KL divergence at temperature 3), statistics re-estimated, exported float32 and verified in LiteRT. "
             "Against the same ratio by magnitude fine-tuned as long without reconstruction or distillation "
             "(Torch-Pruning's default recipe), and the pruned widths trained from fresh weights.", ""]
    table, verdicts = [], []
    for name, rows in found.items():
        unpruned = rows["compress: unpruned"]
        for way, row in rows.items():
            accuracy = "" if row["accuracy"] is None else reporting.percent(row["accuracy"])
            if "agreement" in row:
                accuracy = f"file: {row['bytes']:,} bytes, top-1 agreement {reporting.percent(row['agreement'])}"
            table.append([name, way, f"{row['macs'] / unpruned['macs']:.2f}x", accuracy, f"{row['seconds']:.0f}"])
        final = [row for way, row in rows.items() if way.startswith("compress:") and row["accuracy"] is not None][-1]
        verdicts.append(f"- {name}: {reporting.percent(final['accuracy'])} against {reporting.percent(unpruned['accuracy'])} "
                        f"unpruned {reporting.verdict(final['accuracy'] >= unpruned['accuracy'] - 0.01)}.")
    lines += reporting.table(["network", "stage or way", "MACs", "test accuracy", "seconds"], table)
    lines += ["", "Target (0.5x the MACs, 2 epochs, within 1 point of unpruned):"] + verdicts
    return lines


def write_results(stem, results):
    found, quick = results["rows"], results["quick"]
    lines = reporting.heading("Accuracy kept by channel pruning: reconstruction and compress", "compress.py", quick)
    lines += ["## 1. One shot, reconstructed by least squares", "",
              f"MNIST at 32x32x3: {results['info']['split']}. Each network trained {results['epochs']} epochs "
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
    if "compress" in results:
        lines += compress_section(results)
    reporting.write(stem, lines, end="\n")
    plot(stem, found)


def plot(stem, found):
    plt = reporting.pyplot()
    figure, axes = plt.subplots(1, len(NETWORKS), figsize=(13, 4.8), sharey=True)
    for axis, name in zip(axes, NETWORKS):
        keys = [key for key in found if key[0] == name and key[1] is not None]
        labels = [f"{criterion} {ratio:.0%}" for _, criterion, ratio in keys]
        positions = np.arange(len(keys))
        for offset, column in ((-0.2, "BN re-estimated"), (0.2, "reconstructed")):
            axis.bar(positions + offset, [found[key][column] * 100 for key in keys], 0.4, label=column)
        axis.axhline(found[(name, None, 0)]["accuracy"] * 100, color="black", linestyle="--", label="unpruned")
        axis.set_xticks(positions, labels, fontsize=8, rotation=45, ha="right")
        axis.set_title(name)
    axes[0].set_ylabel("test accuracy (%), one shot, no fine-tuning")
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="upper center", ncol=3, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    reporting.save(figure, stem)


def main(argv=None):
    parser = common.parser(__doc__, "small data, 1 epoch, magnitude only", "training epochs (default 5; quick 1)")
    parser.add_argument("--criteria", default=None,
                        help="comma-separated criteria: section 1 for these only (no compress section)")
    args = parser.parse_args(argv)
    criteria = CRITERIA[:1] if args.quick else CRITERIA
    if args.criteria:
        criteria = tuple(args.criteria.split(","))
        unknown = sorted(set(criteria) - set(CRITERIA))
        if unknown:
            parser.error(f"--criteria: {unknown} are not among {CRITERIA}")
    epochs = args.epochs or (1 if args.quick else 5)
    train, test, info = mnist(args.data_dir, args.quick)
    bases = trained(train, epochs)
    results = dict(info=info, epochs=epochs, quick=args.quick, rows=rows(bases, train, test, criteria))
    if args.criteria:
        write_results("compress_criteria_" + "_".join(criteria), results)
        return 0
    results["compress"] = compress_rows(bases, train, test, epochs)
    write_results("compress_quick" if args.quick else "compress", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
