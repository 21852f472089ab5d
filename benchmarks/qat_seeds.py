"""Quantization-aware training, ours against tfmot's, over several seeds and from the same float weights.

One run of `quantization_aware.py` compares one seed, and each library trains its own float model first:
on MobileNetV2 our QAT file was 2.55 points below tfmot's in one run, with float models already 3.65
points apart, and tied in the run before. This script takes that question apart. For each seed it
trains the float network once (Keras 3: 3 epochs, Adam 1e-3, batch 64, BatchNormalization momentum 0.9,
as that benchmark), then fine-tunes it quantization-aware for 1 epoch (Adam 1e-4) with each library:
ours, and tfmot's `quantize_model` on the tf_keras twin of the network loaded with the same float
weights. It reports each int8 QAT file's test accuracy in LiteRT (MNIST 8,000 / 2,000 at 32x32x3), the
mean and standard deviation over the seeds, and the mean of the paired differences (ours minus tfmot's).

    python benchmarks/qat_seeds.py                          # MobileNetV2, CNN and MLP, seeds 0-4 (about 40 min)
    python benchmarks/qat_seeds.py --nets MLP --seeds 0,1   # a subset

Writes benchmarks/results/qat_seeds.md.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np

from common import add_data_dir
import reporting
from quantization_aware import NETS, TEXT, ours, peer
from structured_pruning import mnist

EPOCHS, TUNE_EPOCHS = 3, 1


def run(net, train, test, seeds):
    """`[(seed, float32, our QAT int8, tfmot's QAT int8)]` for `net`, both QATs from the seed's float weights."""
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            mine = ours(net, train, test, EPOCHS, TUNE_EPOCHS, pathlib.Path(folder), seed=seed, post_training=False)
        with tempfile.TemporaryDirectory() as folder:
            theirs = peer(net, train, test, EPOCHS, TUNE_EPOCHS, pathlib.Path(folder), seed=seed,
                          weights=mine["float weights"])
        rows.append((seed, mine["float32"].get("accuracy", np.nan),
                     mine["int8 (quantization-aware)"].get("accuracy", np.nan), theirs.get("qat int8", np.nan)))
        print(f"{net} seed {seed}: " + ", ".join(f"{value:.2%}" for value in rows[-1][1:]), flush=True)
    return rows


def section(title, rows):
    lines = [f"## {title}", "", *reporting.table(
        ["seed", "float32", "int8 QAT, ours", "int8 QAT, tfmot", "QAT, ours minus tfmot (points)"],
        [[seed, *(f"{value:.2%}" for value in values), f"{100 * (values[1] - values[2]):+.2f}"] for seed, *values in rows])]
    values = 100 * np.array([row[1:] for row in rows])
    differences = values[:, 1] - values[:, 2]
    sd = (lambda column: column.std(ddof=1)) if len(rows) > 1 else (lambda column: 0.0)
    lines.append(reporting.row("mean (sd)", *(f"{column.mean():.2f}% ({sd(column):.2f})" for column in values.T),
                               f"{differences.mean():+.2f} ({sd(differences):.2f})"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="MobileNetV2,CNN,MLP",
                        help=f"comma-separated, of {', '.join(name for name, (_, net) in NETS.items() if net != TEXT)}")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated integers")
    add_data_dir(parser)
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.nets.split(",")]
    unknown = [name for name in names if name not in NETS or NETS[name][1] == TEXT]
    if unknown:
        parser.error(f"--nets: {', '.join(unknown)} unknown; one or more of the image networks of quantization_aware")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers. Received: {args.seeds!r}")
    train, test, info = mnist(args.data_dir, False)
    train = (train[0][:8000], train[1][:8000])
    lines = [
        "# Quantization-aware training over seeds: ours and tfmot's",
        "",
        f"`python benchmarks/qat_seeds.py --nets {','.join(names)} --seeds {args.seeds}`; Keras {keras.__version__}, "
        f"{reporting.machine()}, {time.strftime('%Y-%m-%d')}. Data: {info['split']}, 32x32x3. "
        f"Per seed: {EPOCHS} epochs of float training in Keras 3 (Adam 1e-3, batch 64, BatchNormalization momentum "
        f"0.9), then from those weights {TUNE_EPOCHS} epoch of quantization-aware fine-tuning (Adam 1e-4) by each "
        "library (tfmot on the tf_keras twin, the weights copied). Accuracy of the float32 file and of each int8 "
        "QAT `.tflite` file in LiteRT on the 2,000 test images; the seed sets the initial weights and the "
        "shuffling (the fine-tunes' shuffling differs between the libraries).",
    ]
    for name in names:
        title, net = NETS[name]
        lines += [""] + section(title, run(net, train, test, seeds))
        reporting.write("qat_seeds", lines, end="\n", echo=False)  # after each network: a cut run keeps its part
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
