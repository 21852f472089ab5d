"""Channel pruning of the networks people ship: what can be pruned, MACs, bytes, LiteRT latency, accuracy.

1. The zoo (`keras.applications`, `weights=None`, 96x96 inputs, 10 classes) plus hand-built
   nets with a residual add, a concatenation and a squeeze-excite block: at channel pruning
   ratios 0.3 and 0.5 (`prune(model, ratio, granularity="channel")` then `shrink`), the
   fraction of convolution channels in prunable groups, parameters, MACs (from the layer
   shapes), `.tflite` bytes float32 and int8, LiteRT latency against the unpruned file timed
   in the same rounds, and the seconds to build the groups and to shrink.
2. ResNet50 at 224x224, uniform ratio 0.5: MACs against Torch-Pruning's published 4.12 -> 1.07 G.
3. MobileNetV2 (alpha 1.0) at 224x224 and 96x96, half the channels removed: LiteRT latency
   ratio, float32 and int8.
4. Sparse weights: a MobileNetV2 with its 1x1 convolutions weight-pruned to 70% and 90%,
   exported `sparse=True` (float32): does LiteRT run it faster than the dense file?
5. Accuracy on MNIST (8,000 train / 2,000 test of the shared 10k split, padded to 32x32 and
   repeated to 3 channels): MobileNetV2(alpha=0.5) and a small ResNet trained from scratch,
   then half of the channels removed by each criterion; without fine-tuning, with
   re-estimated BatchNormalization statistics, and after a short fine-tune; against the
   unpruned model and against the pruned widths trained from scratch for as many epochs.
6. MobileNetV2 trained with Targeted Dropout on every layer: accuracy before and after its
   BatchNormalization statistics are re-estimated.

    python benchmarks/structured_pruning.py           # full (about 25 min on 2 cores)
    python benchmarks/structured_pruning.py --quick   # smoke run

Writes benchmarks/results/structured_pruning.md and .png (or *_quick.*).
"""

import os
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np

import keras_compact
from keras_compact.pruning import channel_groups, macs, prune, recalibrate_batch_norm, shrink, strip, targeted
import common
import reporting
from pruning import litert_latency  # benchmarks/pruning.py's: the files timed in turn in every round
from tflite_export import export

ROOT = pathlib.Path(__file__).resolve().parents[1]
A = keras.applications
RATIOS = (0.3, 0.5)
CRITERIA = ("magnitude", "bn_scale", "onorm", "taylor")


def hand_built(shape=(96, 96, 3), classes=10):
    """A small CNN with a residual add, a concatenation and a squeeze-excite block."""
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    y = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(32, 3, padding="same")(y)
    x = keras.layers.Add()([x, y])
    a = keras.layers.Conv2D(24, 1, activation="relu")(x)
    b = keras.layers.Conv2D(40, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(keras.layers.Concatenate()([a, b]))
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(16, 1, activation="relu")(gate)
    gate = keras.layers.Conv2D(64, 1, activation="sigmoid")(gate)
    x = keras.layers.Multiply()([x, gate])
    x = keras.layers.Conv2D(96, 3, strides=2, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(classes)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="hand_built")


def hand_built_convolutions(shape=(96, 96, 3), classes=10):
    """Separable, grouped and transposed convolutions, with a residual add over the separable ones."""
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    y = keras.layers.SeparableConv2D(32, 3, padding="same", depth_multiplier=2, activation="relu")(x)
    x = keras.layers.Add()([x, keras.layers.SeparableConv2D(32, 3, padding="same")(y)])
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", groups=4, activation="relu")(x)
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(64, 1, groups=2)(x))
    x = keras.layers.Conv2DTranspose(48, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(96, 3, strides=2, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(classes)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="hand_built_convolutions")


def zoo(size):
    shape = (size, size, 3)
    return {
        "MobileNetV2 (alpha 1.0)": lambda: A.MobileNetV2(input_shape=shape, weights=None, classes=10),
        "MobileNetV2 (alpha 0.35)": lambda: A.MobileNetV2(alpha=0.35, input_shape=shape, weights=None, classes=10),
        "MobileNetV3Small": lambda: A.MobileNetV3Small(input_shape=shape, weights=None, classes=10),
        "EfficientNetB0": lambda: A.EfficientNetB0(input_shape=shape, weights=None, classes=10),
        "ResNet50": lambda: A.ResNet50(input_shape=shape, weights=None, classes=10),
        "DenseNet121": lambda: A.DenseNet121(input_shape=shape, weights=None, classes=10),
        "Xception": lambda: A.Xception(input_shape=shape, weights=None, classes=10),
        "NASNetMobile": lambda: A.NASNetMobile(input_shape=shape, weights=None, classes=10),
        "hand-built (add, concat, SE)": lambda: hand_built(shape),
        "hand-built (separable, grouped, transposed)": lambda: hand_built_convolutions(shape),
    }


def images(shape, count, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(count,) + tuple(shape)).astype("float32")


def exported(models, folder, calibration, int8=True):
    """`{(name, quantization): ExportReport}` of each model, float32 and (optionally) int8."""
    files = {}
    for name, model in models.items():
        for quantization in (None, "int8") if int8 else (None,):
            tag = f"{name}_{quantization or 'float32'}".replace(" ", "_").replace("/", "_")
            files[(name, quantization)] = export(
                model, folder / f"{tag}.tflite", verify_with=calibration[:8], quantization=quantization,
                representative_data=calibration if quantization else None, min_agreement=None, sparse=False)
    return files


def zoo_rows(size, quick):
    rows = []
    names = list(zoo(size))[:2] if quick else list(zoo(size))
    for name in names:
        keras.utils.set_random_seed(0)
        model = zoo(size)[name]()
        start = time.perf_counter()
        groups = channel_groups(model)
        group_seconds = time.perf_counter() - start
        variants, shrink_seconds = {"unpruned": model}, {}
        for ratio in RATIOS:
            report = prune(model, ratio, granularity="channel")
            start = time.perf_counter()
            variants[f"{ratio:.0%} channels"] = shrink(report.model)
            shrink_seconds[f"{ratio:.0%} channels"] = f"{time.perf_counter() - start:.1f}"
        calibration = images(model.input_shape[1:], 16 if quick else 64)
        with tempfile.TemporaryDirectory() as folder:
            files = exported(variants, pathlib.Path(folder), calibration)
            latency = {q: litert_latency({v: files[(v, q)].path for v in variants}, calibration[0],
                                         rounds=2 if quick else 5, runs=5 if quick else 20) for q in (None, "int8")}
        for variant, pruned in variants.items():
            rows.append({
                "model": name, "variant": variant, "prunable": groups.prunable_fraction,
                "groups": f"{len(groups.prunable)}/{len(groups)}", "params": pruned.count_params(),
                "macs": macs(pruned), "macs_ratio": macs(pruned) / macs(model),
                "float_bytes": files[(variant, None)].bytes, "int8_bytes": files[(variant, "int8")].bytes,
                "float_ms": latency[None][variant], "int8_ms": latency["int8"][variant],
                "float_ratio": latency[None][variant] / latency[None]["unpruned"],
                "int8_ratio": latency["int8"][variant] / latency["int8"]["unpruned"],
                "float_diff": files[(variant, None)].max_abs_diff,
                "group_s": group_seconds, "shrink_s": shrink_seconds.get(variant, ""),
            })
            print(rows[-1], flush=True)
    return rows


def resnet_224():
    keras.utils.set_random_seed(0)
    model = A.ResNet50(input_shape=(224, 224, 3), weights=None)
    smaller = shrink(prune(model, 0.5, granularity="channel").model)
    return {"before": macs(model), "after": macs(smaller), "params_before": model.count_params(),
            "params_after": smaller.count_params()}


def mobilenet_latency(quick):
    rows = {}
    for size in (96,) if quick else (224, 96):
        keras.utils.set_random_seed(0)
        model = A.MobileNetV2(input_shape=(size, size, 3), weights=None)
        variants = {"unpruned": model, "half the channels": shrink(prune(model, 0.5, granularity="channel").model)}
        calibration = images((size, size, 3), 16 if quick else 64)
        with tempfile.TemporaryDirectory() as folder:
            files = exported(variants, pathlib.Path(folder), calibration)
            for quantization in (None, "int8"):
                latency = litert_latency({v: files[(v, quantization)].path for v in variants}, calibration[0],
                                         rounds=2 if quick else 7, runs=5 if quick else 20)
                rows[(size, quantization or "float32")] = latency
                print("mobilenet", size, quantization, latency, flush=True)
    return rows


def sparse_rows(quick):
    """Weight-pruned 1x1 convolutions stored sparse (DENSIFY): LiteRT latency against the dense file."""
    keras.utils.set_random_seed(0)
    size = 96
    model = A.MobileNetV2(input_shape=(size, size, 3), weights=None)
    pointwise = [layer.name for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)]
    example = images((size, size, 3), 1)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        paths = {"dense": export(model, folder / "dense.tflite", verify_with=example, sparse=False).path}
        for sparsity in (0.7, 0.9):
            pruned = strip(prune(model, sparsity, scope="layer", layers=pointwise).model)
            report = export(pruned, folder / f"sparse_{sparsity}.tflite", verify_with=example, sparse=True)
            paths[f"{sparsity:.0%} sparse"] = report.path
            rows[f"{sparsity:.0%} sparse"] = {"bytes": report.bytes, "dense_bytes": report.dense_bytes,
                                               "densify": report.operators.get("DENSIFY", 0)}
        rows["dense"] = {"bytes": os.path.getsize(paths["dense"])}
        latency = litert_latency(paths, example[0], rounds=2 if quick else 7, runs=5 if quick else 20)
    for name in rows:
        rows[name]["ms"] = latency[name]
        rows[name]["ratio"] = latency[name] / latency["dense"]
    print("sparse", rows, flush=True)
    return rows


def mnist(data_dir, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("mnist", data_dir, with_info=True)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:300], y_test[:300]
        info = dict(info, split=info["split"] + "; quick run: 1,000 train / 300 test of those")

    def to_rgb(x):  # 28x28 in [0, 1] -> 32x32x3 in [-1, 1], as MobileNetV2 expects
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        return np.repeat(x[..., None] * 2.0 - 1.0, 3, axis=-1).astype("float32")

    return (to_rgb(x_train), y_train), (to_rgb(x_test), y_test), info


def small_resnet(shape=(32, 32, 3), classes=10, widths=(16, 32, 64), library=keras):
    """This package's residual CNN; `library` builds it with another Keras (tf_keras for tfmot)."""
    keras = library  # the same lines build the tf_keras twin
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for stage, width in enumerate(widths):
        strides = 1 if stage == 0 else 2
        shortcut = x
        if strides != 1 or x.shape[-1] != width:
            shortcut = keras.layers.BatchNormalization()(
                keras.layers.Conv2D(width, 1, strides=strides, use_bias=False)(x))
        y = keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False)(x)
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
        y = keras.layers.BatchNormalization()(keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(y))
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="small_resnet")


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def accuracy_rows(train, test, epochs, tune_epochs, quick):
    """Every accuracy is measured after `recalibrate_batch_norm` on 2,000 training images as well as
    without it: keras.applications' MobileNetV2 keeps its moving statistics with momentum 0.999, which a
    few hundred steps of training do not bring up to date."""
    (x, y), (x_test, y_test) = train, test
    calibration = x[:2000]
    nets = {"MobileNetV2 (alpha 0.5)": lambda: A.MobileNetV2(alpha=0.5, input_shape=(32, 32, 3), weights=None,
                                                              classes=10),
            "small ResNet": small_resnet}
    rows = {}
    for name, build in nets.items():
        keras.utils.set_random_seed(0)
        model = compiled(build())
        start = time.perf_counter()
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
        base = recalibrate_batch_norm(model, calibration)
        rows[(name, "unpruned")] = {"raw": accuracy(model, x_test, y_test), "accuracy": accuracy(base, x_test, y_test),
                                    "seconds": time.perf_counter() - start, "macs": macs(model)}
        print(name, rows[(name, "unpruned")], flush=True)
        for criterion in CRITERIA:
            data = (x[:1000], y[:1000]) if criterion in ("onorm", "taylor") else None
            compiled(base)  # taylor differentiates the compiled loss
            smaller = shrink(prune(base, 0.5, granularity="channel", criterion=criterion, data=data).model)
            fixed = recalibrate_batch_norm(smaller, calibration)
            row = {"macs": macs(smaller), "one shot": accuracy(smaller, x_test, y_test),
                   "BN re-estimated": accuracy(fixed, x_test, y_test)}
            tuned = compiled(fixed)
            tuned.fit(x, y, batch_size=64, epochs=tune_epochs, verbose=0)
            row["fine-tuned"] = accuracy(recalibrate_batch_norm(tuned, calibration), x_test, y_test)
            rows[(name, criterion)] = row
            print(name, criterion, row, flush=True)
        keras.utils.set_random_seed(0)
        scratch = compiled(keras.models.clone_model(smaller))  # the pruned widths, fresh weights
        scratch.fit(x, y, batch_size=64, epochs=epochs + tune_epochs, verbose=0)
        rows[(name, "scratch")] = {"accuracy": accuracy(recalibrate_batch_norm(scratch, calibration), x_test, y_test),
                                   "macs": macs(scratch)}
        print(name, "scratch", rows[(name, "scratch")], flush=True)
    return rows


def targeted_rows(train, test, epochs):
    """MobileNetV2 trained with Targeted Dropout on every layer (`targeted`): inference accuracy with
    the moving statistics gathered on dropped weights, and after `recalibrate_batch_norm`."""
    (x, y), (x_test, y_test) = train, test
    rows = {}
    for name, kwargs in (
        ("Dropout-free", None),
        ("Targeted Dropout (unit, 0.5 / 0.5)", dict(target_rate=0.5, drop_rate=0.5, granularity="unit")),
        ("Targeted Dropout (unit, 0.25 / 0.25)", dict(target_rate=0.25, drop_rate=0.25, granularity="unit")),
        ("Targeted Dropout (weight, 0.5 / 0.5)", dict(target_rate=0.5, drop_rate=0.5)),
    ):
        keras.utils.set_random_seed(0)
        model = A.MobileNetV2(alpha=0.5, input_shape=(32, 32, 3), weights=None, classes=10)
        model = compiled(targeted(model, **kwargs) if kwargs else model)
        history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
        plain = strip(model)
        rows[name] = {"train": history.history["accuracy"][-1], "raw": accuracy(plain, x_test, y_test),
                      "recalibrated": accuracy(recalibrate_batch_norm(plain, x[:2000]), x_test, y_test)}
        print("targeted", name, rows[name], flush=True)
    return rows


def write_results(stem, results):
    """`results`: `info`, `epochs`, `tune_epochs`, `quick` and each section's rows: `zoo_table`, `resnet`,
    `mobilenet`, `sparse`, `accuracies`, `targeted_table`."""
    lines = (zoo_section(results["zoo_table"], results["quick"]) + resnet_section(results["resnet"])
             + mobilenet_section(results["mobilenet"]) + sparse_section(results["sparse"])
             + accuracy_section(results) + targeted_section(results["targeted_table"], results["epochs"]))
    reporting.write(stem, lines, end="\n")
    plot(stem, results["zoo_table"])


def zoo_section(zoo_table, quick):
    return [
        "# Structured (channel) pruning of the networks people ship",
        "",
        f"`python benchmarks/structured_pruning.py{reporting.flag(quick)}`; Keras {keras.__version__} "
        f"on {keras.backend.backend()}, {reporting.machine()}. LiteRT latencies are the "
        "median single-example invoke, the files of one table timed in turn in every round; ratios are to the "
        "unpruned file of the same run.",
        "",
        "## 1. The zoo (`weights=None`, 96x96, 10 classes): prune by channel, then `shrink`",
        "",
        *reporting.table(["model", "variant", "prunable channels", "groups", "params", "MACs", "MACs ratio", "float32 KB",
                       "int8 KB", "float32 ms (ratio)", "int8 ms (ratio)", "groups s", "shrink s"], [
            [row["model"], row["variant"], f"{row['prunable']:.0%}", row["groups"], f"{row['params']:,}",
             f"{row['macs'] / 1e6:.1f} M", f"{row['macs_ratio']:.2f}x", f"{row['float_bytes'] / 1024:,.0f}",
             f"{row['int8_bytes'] / 1024:,.0f}", f"{row['float_ms']:.2f} ({row['float_ratio']:.2f}x)",
             f"{row['int8_ms']:.2f} ({row['int8_ratio']:.2f}x)", f"{row['group_s']:.2f}", row["shrink_s"]]
            for row in zoo_table]),
        "",
        "Before this engine `shrink` accepted 1 of MobileNetV2's 53 convolutions, none of MobileNetV3Small's "
        "(an `AttributeError`), 17 of EfficientNetB0's 82 and 16 of ResNet50's 54 (issue 20). Before separable "
        "convolutions were members, 1% of Xception's channels and none of NASNetMobile's were in prunable groups.",
        "",
    ]


def resnet_section(resnet):
    return [
        "## 2. ResNet50 at 224x224, uniform channel ratio 0.5",
        "",
        *reporting.table([None, "MACs before", "MACs after", "ratio", "params before", "params after"], [
            ["keras-compact", f"{resnet['before'] / 1e9:.2f} G", f"{resnet['after'] / 1e9:.2f} G",
             f"{resnet['after'] / resnet['before']:.2f}x", f"{resnet['params_before'] / 1e6:.1f} M",
             f"{resnet['params_after'] / 1e6:.1f} M"],
            ["Torch-Pruning (published, DepGraph)", "4.12 G", "1.07 G", "0.26x", "25.6 M", "-"]]),
        "",
        "Target: at most 0.30x. keras-compact counts the classifier and every convolution; the input's 3 "
        "channels and the 1,000 classes are kept whole.",
        "",
    ]


def mobilenet_section(mobilenet):
    return [
        "## 3. MobileNetV2 (alpha 1.0), half the channels removed: LiteRT latency",
        "",
        *reporting.table(["input", "file", "unpruned ms", "pruned ms", "ratio"], [
            [f"{size}x{size}", kind, f"{latency['unpruned']:.2f}", f"{latency['half the channels']:.2f}",
             f"{latency['half the channels'] / latency['unpruned']:.2f}x"]
            for (size, kind), latency in mobilenet.items()]),
        "",
        "Target: at most 0.5x, float32 and int8.",
        "",
    ]


def sparse_section(sparse):
    return [
        "## 4. Sparse weights: MobileNetV2 (96x96, float32) with its 1x1 convolutions weight-pruned",
        "",
        *reporting.table(["file", "bytes", "DENSIFY ops", "ms", "ratio to dense"], [
            [name, f"{row['bytes']:,}", row.get("densify", 0), f"{row['ms']:.2f}", f"{row['ratio']:.2f}x"]
            for name, row in sparse.items()]),
        "",
        "LiteRT's XNNPack sparse-inference path needs sparse 1x1 convolutions; the file is what the converter "
        "writes with `EXPERIMENTAL_SPARSITY` (`export(..., sparse=True)`), run by `ai_edge_litert`'s default "
        "interpreter.",
        "",
    ]


def accuracy_row(name, criterion, row):
    macs = f"{row['macs'] / 1e6:.1f} M"
    if criterion == "unpruned":
        return [name, "unpruned", macs, None, f"{row['accuracy']:.2%} ({row['raw']:.2%} raw)", None]
    if criterion == "scratch":
        return [name, "pruned widths from scratch", macs, None, None, f"{row['accuracy']:.2%}"]
    return [name, criterion, macs, f"{row['one shot']:.2%}", f"{row['BN re-estimated']:.2%}", f"{row['fine-tuned']:.2%}"]


def accuracy_section(results):
    info, epochs, tune_epochs = results["info"], results["epochs"], results["tune_epochs"]
    return [
        f"## 5. Accuracy on MNIST at 32x32x3 ({info['split']}; {info['source']})",
        "",
        f"Trained from scratch {epochs} epochs (Adam 1e-3, batch 64); the unpruned model's BatchNormalization "
        "statistics re-estimated on 2,000 training images (`recalibrate_batch_norm`; the raw figure in brackets: "
        "MobileNetV2 keeps them with momentum 0.999, which this short training does not bring up to date). Then "
        "half of every group's channels removed by each criterion and shrunk: accuracy one shot, after "
        f"re-estimating the statistics, and after fine-tuning {tune_epochs} epoch(s) from there (statistics "
        "re-estimated again). The scratch row trains the pruned widths from fresh weights for "
        f"{epochs + tune_epochs} epochs.",
        "",
        *reporting.table(["network", "criterion", "MACs", "one shot", "BN re-estimated", "fine-tuned"],
                      [accuracy_row(name, criterion, row) for (name, criterion), row in results["accuracies"].items()]),
        "",
    ]


def targeted_section(targeted_table, epochs):
    return [
        "## 6. BatchNormalization statistics after Targeted Dropout training",
        "",
        f"MobileNetV2 (alpha 0.5), the same MNIST data, {epochs} epochs; every Conv2D and DepthwiseConv2D "
        "wrapped by `targeted(model, ...)`; accuracy of the stripped model with the moving statistics as "
        "trained and after `recalibrate_batch_norm` on 2,000 training images.",
        "",
        *reporting.table(["training", "training accuracy, last epoch (with the drops)", "test, as trained",
                       "test, statistics re-estimated"],
                      [[name, f"{row['train']:.2%}", f"{row['raw']:.2%}", f"{row['recalibrated']:.2%}"]
                       for name, row in targeted_table.items()]),
    ]


def plot(stem, zoo_table):
    figure, axes = reporting.pyplot().subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(row["model"] for row in zoo_table):
        rows = [row for row in zoo_table if row["model"] == model]
        axes[0].plot([r["macs_ratio"] for r in rows], [r["float_ratio"] for r in rows], "o-", label=model)
        axes[1].plot([r["macs_ratio"] for r in rows], [r["int8_ratio"] for r in rows], "o-", label=model)
    for axis, kind in zip(axes, ("float32", "int8")):
        axis.plot([0, 1], [0, 1], ":", color="grey")
        axis.set_xlabel("MACs, pruned / unpruned")
        axis.set_ylabel(f"LiteRT latency, {kind}, pruned / unpruned")
        axis.set_title(f"Channel pruning 0 / 30 / 50%: {kind}")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    reporting.save(figure, stem)


def main(argv=None):
    parser = common.parser(__doc__, "two zoo models, small data, 1 epoch",
                           "training epochs before pruning (default 5; quick 1)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 5)
    tune_epochs = 1 if args.quick else 2
    train, test, info = mnist(args.data_dir, args.quick)
    results = dict(info=info, epochs=epochs, tune_epochs=tune_epochs, quick=args.quick,
                   zoo_table=zoo_rows(96, args.quick), resnet=resnet_224(), mobilenet=mobilenet_latency(args.quick),
                   sparse=sparse_rows(args.quick))
    results["accuracies"] = accuracy_rows(train, test, epochs, tune_epochs, args.quick)
    results["targeted_table"] = targeted_rows(train, test, epochs)
    write_results("structured_pruning_quick" if args.quick else "structured_pruning", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
