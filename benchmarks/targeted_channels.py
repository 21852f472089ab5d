"""Targeted Dropout by channel (`targeted(model, granularity="channel")` + `TargetedChannels`) before channel pruning.

MobileNetV2 (alpha 0.5) and the small ResNet of `structured_pruning.py`, trained from scratch on
MNIST (8,000 train / 2,000 test of the shared 10k split, 32x32x3) for 5 epochs: without dropout,
with Targeted Dropout of whole channel groups at constant rates (0.5 / 0.5), and with the targeted
fraction ramped 0 -> 0.5 over the epochs (`TargetedDropoutRamp`). Then half of every group's
channels removed (`prune(..., granularity="channel")` + `shrink`, magnitude criterion), with the
BatchNormalization statistics re-estimated on 2,000 training images (`recalibrate_batch_norm`),
without fine-tuning and after one epoch of it. Gomez et al.'s claim, by channel: a network trained
with Targeted Dropout loses less to pruning the channels it was dropping. Seconds per epoch are
the median after the first (which traces), all in one run.

    python benchmarks/targeted_channels.py           # full (about 20 min on 2 cores)
    python benchmarks/targeted_channels.py --quick   # smoke run
    KERAS_BACKEND=jax python benchmarks/targeted_channels.py --times   # seconds per epoch only

Writes benchmarks/results/targeted_channels.md (or targeted_channels_quick.md; with --times
targeted_channels_times_<backend>.md: 4 epochs on 4,000 images, the median after the first).
"""

import sys
import time

import keras
import numpy as np

from keras_compact.callbacks import TargetedChannels, TargetedDropoutRamp
from keras_compact.pruning import macs, prune, recalibrate_batch_norm, shrink, strip, targeted
import common
import reporting
from structured_pruning import A, ROOT, accuracy, compiled, mnist, small_resnet

NETS = {
    "MobileNetV2 (alpha 0.5)": lambda: A.MobileNetV2(alpha=0.5, input_shape=(32, 32, 3), weights=None, classes=10),
    "small ResNet": small_resnet,
}
TRAININGS = {
    "no dropout": None,
    "Targeted Dropout by channel, 0.5 / 0.5": dict(target_rate=0.5, drop_rate=0.5),
    "Targeted Dropout by channel, ramped 0 -> 0.5 / 0.5": dict(target_rate=0.0, drop_rate=0.5, ramp=(0.0, 0.5)),
}


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def trained(build, options, x, y, epochs):
    """`(model, history, median seconds per epoch after the first)`."""
    keras.utils.set_random_seed(0)
    model, callbacks = build(), [EpochTimes()]
    if options is not None:
        options = dict(options)
        ramp = options.pop("ramp", None)
        model = targeted(model, granularity="channel", **options)
        callbacks = ([TargetedDropoutRamp(target_rate=ramp)] if ramp else []) + [TargetedChannels(seed=0)] + callbacks
    history = compiled(model).fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)
    return model, history, float(np.median(callbacks[-1].seconds[1:] or callbacks[-1].seconds))


def run(build, options, train, test, epochs):
    (x, y), (x_test, y_test) = train, test
    calibration = x[:2000]
    model, history, seconds = trained(build, options, x, y, epochs)
    plain = recalibrate_batch_norm(strip(model), calibration)
    row = {"train": history.history["accuracy"][-1], "test": accuracy(plain, x_test, y_test), "epoch s": seconds}
    smaller = recalibrate_batch_norm(shrink(prune(plain, 0.5, granularity="channel").model), calibration)
    row["macs"] = macs(smaller) / macs(plain)
    row["pruned"] = accuracy(smaller, x_test, y_test)
    tuned = compiled(smaller)
    tuned.fit(x, y, batch_size=64, epochs=1, verbose=0)
    row["fine-tuned"] = accuracy(recalibrate_batch_norm(tuned, calibration), x_test, y_test)
    return row


def write_results(stem, results):
    """`results`: `info`, `epochs` and the `rows` per (network, training)."""
    rows = results["rows"]
    lines = [
        "# Targeted Dropout by channel, then channel pruning",
        "",
        f"`python benchmarks/targeted_channels.py`; Keras {keras.__version__} on {keras.backend.backend()}, "
        f"{reporting.machine()}. Data: {results['info']['split']}. {results['epochs']} epochs of training (Adam "
        "1e-3, batch 64), then half of every group's channels removed (`prune(..., granularity=\"channel\")`, "
        "magnitude, + `shrink`); accuracies after `recalibrate_batch_norm` on 2,000 training images; "
        "\"fine-tuned\": one more epoch of the shrunk model. Seconds per epoch: median after the first.",
        "",
        *reporting.table(["network", "training", "training accuracy, last epoch", "test", "s / epoch (ratio)",
                       "50% of channels pruned (MACs ratio)", "+ 1 epoch fine-tune"], [
            [net, training, f"{row['train']:.2%}", f"{row['test']:.2%}",
             f"{row['epoch s']:.1f} ({row['epoch s'] / rows[(net, 'no dropout')]['epoch s']:.2f}x)",
             f"{row['pruned']:.2%} ({row['macs']:.2f}x)", f"{row['fine-tuned']:.2%}"]
            for (net, training), row in rows.items()]),
    ]
    path = reporting.write(stem, lines, end="\n")
    print("wrote", path.relative_to(ROOT))


def write_times(stem, info, seconds):
    """`seconds`: the median seconds per epoch per (network, training)."""
    lines = [
        f"# Targeted Dropout by channel: seconds per epoch on {keras.backend.backend()}",
        "",
        f"`python benchmarks/targeted_channels.py --times`; Keras {keras.__version__} on "
        f"{keras.backend.backend()}, {reporting.machine()}. {info['split']}; the first 4,000 training images, "
        "4 epochs (Adam 1e-3, batch 64), the median of the last 3; the drops drawn inside the training step.",
        "",
        *reporting.table(["network", "training", "s / epoch", "ratio to no dropout"], [
            [net, training, f"{value:.2f}", f"{value / seconds[(net, 'no dropout')]:.2f}x"]
            for (net, training), value in seconds.items()]),
    ]
    path = reporting.write(stem, lines, end="\n")
    print("wrote", path.relative_to(ROOT))


def main(argv=None):
    parser = common.parser(__doc__, "small data, 2 epochs")
    parser.add_argument("--times", action="store_true", help="seconds per epoch only (4 epochs on 4,000 images)")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else 5
    train, test, info = mnist(args.data_dir, args.quick)
    if args.times:
        (x, y), seconds = train, {}
        for net, build in NETS.items():
            for training, options in TRAININGS.items():
                seconds[(net, training)] = trained(build, options, x[:4000], y[:4000], 4)[2]
                print(net, training, f"{seconds[(net, training)]:.2f} s / epoch", flush=True)
        write_times(f"targeted_channels_times_{keras.backend.backend()}", info, seconds)
        return 0
    rows = {}
    for net, build in NETS.items():
        for training, options in TRAININGS.items():
            rows[(net, training)] = run(build, options, train, test, epochs)
            print(net, training, rows[(net, training)], flush=True)
    write_results("targeted_channels_quick" if args.quick else "targeted_channels",
                  dict(info=info, epochs=epochs, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
