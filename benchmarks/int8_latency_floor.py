"""Why half of MobileNetV2's channels buy less int8 latency than float32 latency here.

`benchmarks/structured_pruning.py` measures MobileNetV2 (alpha 1.0) with half of every channel group
removed at 0.29-0.37x the float32 latency of the unpruned file but only 0.57-0.65x in int8 (issue 20's
target: 0.5x). This script asks whether that is the pruning or the runtime: it times, in the same rounds,
the unpruned network, the pruned one (also with its widths rounded to multiples of 8 and 16, what int8
kernels tile by), and Google's own narrow designs of the same graph (`alpha=0.5`, `alpha=0.35`), float32
and int8, with `ai_edge_litert`'s default interpreter (XNNPack) and without its default delegate.

    python benchmarks/int8_latency_floor.py           # 96x96 and 224x224 (about 5 min on 2 cores)
    python benchmarks/int8_latency_floor.py --quick   # 96x96, fewer rounds

Writes benchmarks/results/int8_latency_floor.md (or *_quick.md).
"""

import argparse
import pathlib
import sys
import tempfile

import keras
import numpy as np

from keras_compact.pruning import macs, prune, shrink
import reporting
from pruning import litert_latency  # benchmarks/pruning.py's: the files timed in turn in every round
from tflite_export import export

A = keras.applications


def variants(size):
    shape = (size, size, 3)
    keras.utils.set_random_seed(0)
    full = A.MobileNetV2(input_shape=shape, weights=None)
    found = {"alpha 1.0": full}
    for round_to in (None, 8, 16):
        name = "alpha 1.0, half the channels" + (f", round_to={round_to}" if round_to else "")
        found[name] = shrink(prune(full, 0.5, granularity="channel", round_to=round_to).model)
    for alpha in (0.5, 0.35):
        keras.utils.set_random_seed(0)
        found[f"alpha {alpha} (keras.applications)"] = A.MobileNetV2(alpha=alpha, input_shape=shape, weights=None)
    return found


def rows_for(size, quick):
    models = variants(size)
    calibration = np.random.default_rng(0).uniform(0, 255, size=(32, size, size, 3)).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, model in models.items():
            for quantization in (None, "int8"):
                tag = f"{len(paths)}_{quantization or 'float32'}"
                report = export(model, pathlib.Path(folder) / f"{tag}.tflite", verify_with=calibration[:4],
                                quantization=quantization, representative_data=calibration if quantization else None,
                                min_agreement=None, sparse=False)
                paths[(name, quantization or "float32")] = report.path
        timed = {}
        for delegate in (True, False):
            for kind in ("float32", "int8"):
                files = {name: paths[(name, kind)] for name in models}
                timed[(kind, delegate)] = litert_latency(files, calibration[0], rounds=2 if quick else 5,
                                                         runs=10 if quick else 40, delegate=delegate)
                print(size, kind, "XNNPack" if delegate else "builtin", timed[(kind, delegate)], flush=True)
    base = macs(models["alpha 1.0"])
    for name, model in models.items():
        row = {"size": size, "model": name, "macs": macs(model), "macs_ratio": macs(model) / base}
        for (kind, delegate), values in timed.items():
            key = f"{kind} {'XNNPack' if delegate else 'builtin'}"
            row[key] = values[name]
            row[key + " ratio"] = values[name] / values["alpha 1.0"]
        rows.append(row)
    return rows


def write_results(stem, results):
    """`results`: `quick` and the measured `rows`, one per (input size, network)."""
    kinds = ["float32 XNNPack", "int8 XNNPack", "float32 builtin", "int8 builtin"]
    lines = [
        "# MobileNetV2's int8 latency floor",
        "",
        f"`python benchmarks/int8_latency_floor.py{reporting.flag(results['quick'])}`; Keras {keras.__version__}, "
        f"{reporting.machine()}, `ai_edge_litert`. Median single-example invoke in ms "
        "(ratio to the unpruned alpha 1.0 file timed in the same rounds); `weights=None`, 1,000 classes. "
        "XNNPack: the interpreter's default; builtin: `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`.",
        "",
        *reporting.table(["input", "network", "MACs", *kinds], [
            [f"{row['size']}x{row['size']}", row["model"], f"{row['macs'] / 1e6:.0f} M ({row['macs_ratio']:.2f}x)",
             *(f"{row[k]:.2f} ({row[k + ' ratio']:.2f}x)" for k in kinds)] for row in results["rows"]]),
    ]
    reporting.write(stem, lines, end="\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="96x96 only, fewer rounds")
    args = parser.parse_args(argv)
    rows = []
    for size in (96,) if args.quick else (96, 224):
        rows += rows_for(size, args.quick)
    write_results("int8_latency_floor_quick" if args.quick else "int8_latency_floor", dict(rows=rows, quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
