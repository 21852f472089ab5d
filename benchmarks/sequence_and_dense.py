"""Transformers, recurrent networks and a U-Net, trained from scratch, pruned by heads, units and channels.

On the data we have: (a) a small ViT (patches of 4, 4 blocks, 4 heads, width 64) on MNIST 32x32 (8,000 train /
2,000 test of the shared 10k split); (b) a 2-block text transformer on SNIPS; (c) an LSTM text classifier on
SNIPS; (d) a small U-Net segmenting MNIST digits (each digit's ink labelled with its class, the background a
class of its own: per-pixel accuracy and mean IoU). For each: float accuracy; half the heads and half the MLP
units (or the channels and units) removed by `prune(..., granularity="channel")` and `shrink`, one shot and after
a 2-epoch fine-tune (plain, or distilled from the unpruned model by `keras.distillation`); MACs
(`keras_compact.pruning.macs`) and LiteRT latency ratios of the float files; the int8 post-training file's
accuracy, agreement with the float model and bytes; quantization-aware training's int8 file (every network
here; a layer `quantize_aware` refused would be named in the table).

    python benchmarks/sequence_and_dense.py           # full (about 20 min on 2 cores)
    python benchmarks/sequence_and_dense.py --quick   # smoke run

Writes benchmarks/results/sequence_and_dense.md and .png (or *_quick.*).
"""

import pathlib
import re
import tempfile

import keras
import numpy as np

import keras_compact
from keras_compact.pruning import macs, prune, shrink
from keras_compact.quantization import quantize_aware
import common
import reporting
from pruning import litert_latency  # benchmarks/pruning.py's: the files timed in turn in every round
from tflite_export import export, predict

SPARSITY = {"heads": 0.5, "channels": 0.5}
FINE_TUNE_EPOCHS = 2
TEXT_LENGTH = 24
VOCABULARY = 4000


def mnist(data_dir, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("mnist", data_dir, with_info=True)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:800], y_train[:800], x_test[:200], y_test[:200]
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None].astype("float32")  # noqa: E731
    return (pad(x_train), y_train), (pad(x_test), y_test), info


def snips(data_dir, quick):
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("snips", data_dir, with_info=True)
    if quick:
        x_train, y_train, x_test, y_test = x_train[:1500], y_train[:1500], x_test[:200], y_test[:200]
    vectorize = keras.layers.TextVectorization(VOCABULARY, output_sequence_length=TEXT_LENGTH)
    vectorize.adapt(x_train.astype(str))
    ids = lambda x: keras.ops.convert_to_numpy(vectorize(x.astype(str))).astype("int32")  # noqa: E731
    return (ids(x_train), y_train), (ids(x_test), y_test), info


def with_positions(x):
    """`x` plus fixed sinusoidal position encodings (Vaswani et al.): a constant, so a raw `keras.ops` add that
    quantization-aware training leaves in float and `export` calibrates."""
    length, width = x.shape[1], x.shape[2]
    angles = np.arange(length)[:, None] / 10000 ** (2 * (np.arange(width)[None, :] // 2) / width)
    table = np.where(np.arange(width) % 2 == 0, np.sin(angles), np.cos(angles)).astype("float32")
    return x + table


def block(x, heads, width, hidden, name):
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm_1")(x)
    y = keras.layers.MultiHeadAttention(heads, width // heads, name=f"{name}_attention")(y, y)
    x = keras.layers.Add(name=f"{name}_residual_1")([x, y])
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm_2")(x)
    y = keras.layers.Dense(hidden, activation="gelu", name=f"{name}_mlp_in")(y)
    y = keras.layers.Dense(width, name=f"{name}_mlp_out")(y)
    return keras.layers.Add(name=f"{name}_residual_2")([x, y])


def vit(blocks=4, heads=4, width=64, hidden=128):
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(width, 4, strides=4, name="patches")(inputs)
    x = with_positions(keras.layers.Reshape((64, width))(x))
    for index in range(blocks):
        x = block(x, heads, width, hidden, f"block_{index}")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(epsilon=1e-6)(x))
    return keras.Model(inputs, keras.layers.Dense(10, name="classes")(x), name="vit")


def text_transformer(classes, blocks=2, heads=4, width=64, hidden=128):
    inputs = keras.Input((TEXT_LENGTH,), dtype="int32")
    x = with_positions(keras.layers.Embedding(VOCABULARY, width, name="embed")(inputs))
    for index in range(blocks):
        x = block(x, heads, width, hidden, f"block_{index}")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(epsilon=1e-6)(x))
    return keras.Model(inputs, keras.layers.Dense(classes, name="classes")(x), name="text_transformer")


def lstm(classes, width=64, units=64):
    return keras.Sequential([
        keras.Input((TEXT_LENGTH,), dtype="int32"),
        keras.layers.Embedding(VOCABULARY, width, name="embed"),
        keras.layers.LSTM(units, name="lstm"),
        keras.layers.Dense(classes, name="classes"),
    ], name="lstm")


def unet(classes=11, widths=(16, 32, 64)):
    inputs = keras.Input((32, 32, 1))
    x, skips = inputs, []
    for index, width in enumerate(widths[:-1]):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"down_{index}_a")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"down_{index}_b")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(widths[-1], 3, padding="same", activation="relu", name="bottom")(x)
    for index, width in reversed(list(enumerate(widths[:-1]))):
        x = keras.layers.Conv2DTranspose(width, 2, strides=2, activation="relu", name=f"up_{index}")(x)
        x = keras.layers.Concatenate()([x, skips[index]])
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"up_{index}_conv")(x)
    return keras.Model(inputs, keras.layers.Conv2D(classes, 1, name="pixels")(x), name="unet")


def segmentation(x, y):
    """Each digit's ink (pixels above 0.5) labelled with its class, the background class 10."""
    return np.where(x[..., 0] > 0.5, y[:, None, None], 10).astype("int32")


def compiled(model, learning_rate=1e-3):
    model.compile(keras.optimizers.AdamW(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def scores(outputs, y, segmenting):
    """Accuracy (per pixel for the U-Net) and, segmenting, mean IoU over the classes present."""
    predicted = np.asarray(outputs).argmax(-1)
    found = {"accuracy": float(np.mean(predicted == y))}
    if segmenting:
        ious = []
        for cls in np.unique(y):
            union = np.sum((predicted == cls) | (y == cls))
            ious.append(np.sum((predicted == cls) & (y == cls)) / union)
        found["mean_iou"] = float(np.mean(ious))
    return found


def run(name, make, train, test, epochs, batch, segmenting=False, learning_rate=1e-3, sparsity=SPARSITY):
    print(name, "training", flush=True)
    keras.utils.set_random_seed(0)
    model = compiled(make(), learning_rate)
    model.fit(*train, epochs=epochs, batch_size=batch, verbose=2)
    x_test, y_test = test
    rows = {"float": scores(model.predict(x_test, verbose=0), y_test, segmenting)}
    report = prune(model, sparsity, granularity="channel")
    pruned = compiled(report.model, learning_rate)  # fine-tuned as trained, as structured_pruning.py does
    rows["pruned, one shot"] = scores(pruned.predict(x_test, verbose=0), y_test, segmenting)
    pruned.fit(*train, epochs=FINE_TUNE_EPOCHS, batch_size=batch, verbose=2)
    small = shrink(pruned)
    rows[f"pruned, {FINE_TUNE_EPOCHS}-epoch fine-tune"] = scores(small.predict(x_test, verbose=0), y_test, segmenting)
    # The same one-shot cut fine-tuned as long, distilled from the unpruned model (Keras's own Distiller). The
    # loss is given as a KLDivergence instance: LogitsDistillation's default, the string "kl_divergence", becomes
    # a function, which its isinstance check misses, and it then takes the KL of the scaled logits themselves
    # (no softmax; Keras 3.15.1): the losses go negative and the student learns worse (ViT 82% instead of 90%).
    distiller = keras.distillation.Distiller(
        teacher=model, student=prune(model, sparsity, granularity="channel").model,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=3.0, loss=keras.losses.KLDivergence()),
        student_loss_weight=0.5)
    distiller.compile(keras.optimizers.AdamW(learning_rate),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    distiller.fit(*train, epochs=FINE_TUNE_EPOCHS, batch_size=batch, verbose=2)
    rows[f"pruned, {FINE_TUNE_EPOCHS}-epoch distilled fine-tune"] = scores(
        shrink(distiller.student).predict(x_test, verbose=0), y_test, segmenting)
    result = {"rows": rows, "groups": [(g.producers, g.size, g.pruned) for g in report.groups],
              "macs": (macs(model), macs(small))}
    folder = pathlib.Path(tempfile.mkdtemp())
    files = {"float": folder / "float.tflite", "pruned": folder / "pruned.tflite"}
    representative = train[0][:200]
    export(model, files["float"], verify_with=x_test[:50])
    export(small, files["pruned"], verify_with=x_test[:50])
    result["latency"] = litert_latency(files, x_test[0], rounds=3, runs=50)
    int8 = {}
    for label, source in (("float", model), ("pruned", small)):
        path = folder / f"{label}_int8.tflite"
        report_int8 = export(source, path, quantization="int8", representative_data=representative,
                             verify_with=x_test[:200], min_agreement=None)  # measured and reported
        outputs = predict(path, x_test)
        int8[label] = {**scores(outputs, y_test, segmenting), "bytes": report_int8.bytes,
                       "agreement": report_int8.top1_agreement}
    result["int8"] = int8
    try:
        qat = compiled(quantize_aware(small), learning_rate / 10)
    except ValueError as error:  # the types it names, once each
        result["qat"] = ", ".join(dict.fromkeys(re.findall(r"(\w+) '[^']+' has weights", str(error))))
    else:
        qat.fit(*train, epochs=FINE_TUNE_EPOCHS, batch_size=batch, verbose=2)
        path = folder / "qat_int8.tflite"
        report_qat = export(qat, path, quantization="int8", verify_with=x_test[:200], min_agreement=None,
                            representative_data=representative)  # the position encodings' add
        result["qat"] = {**scores(predict(path, x_test), y_test, segmenting), "bytes": report_qat.bytes,
                         "agreement": report_qat.top1_agreement,
                         "float": scores(qat.predict(x_test, verbose=0), y_test, segmenting)}
    print(name, result, flush=True)
    return result


NETWORKS = ("vit", "text_transformer", "lstm", "unet")


def main():
    parser = common.parser(__doc__, "a few hundred examples, one epoch: checks the script runs")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS),
                        help="measure only these (their results go to sequence_and_dense_<names>.md)")
    args = parser.parse_args()
    quick = args.quick
    (x, y), (x_test, y_test), _ = mnist(args.data_dir, quick)
    (t, ty), (t_test, ty_test), info = snips(args.data_dir, quick)
    classes = len(info["classes"])
    epochs = (lambda full: 1 if quick else full)
    measured = {
        "vit": ("ViT on MNIST", lambda: run("vit", vit, (x, y), (x_test, y_test), epochs(20), 64)),
        "text_transformer": ("text transformer on SNIPS", lambda: run(
            "text transformer", lambda: text_transformer(classes), (t, ty), (t_test, ty_test), epochs(8), 64)),
        "lstm": ("LSTM on SNIPS", lambda: run("lstm", lambda: lstm(classes), (t, ty), (t_test, ty_test), epochs(8),
                                              64, sparsity=0.5)),
        "unet": ("U-Net segmenting MNIST", lambda: run(
            "unet", unet, (x, segmentation(x, y)), (x_test, segmentation(x_test, y_test)), epochs(6), 32,
            segmenting=True, sparsity=0.5)),
    }
    results = {measured[key][0]: measured[key][1]() for key in NETWORKS if key in args.networks}
    stem = "sequence_and_dense" + ("" if set(args.networks) == set(NETWORKS) else "_" + "_".join(args.networks))
    write_results(stem + ("_quick" if quick else ""), results, quick)


def metric(found):
    text = reporting.percent(found["accuracy"])
    return text + (f" (mIoU {reporting.percent(found['mean_iou'])})" if "mean_iou" in found else "")


def write_results(stem, results, quick):
    lines = reporting.heading("Transformers, recurrent networks and a U-Net: heads, units and channels pruned",
                              "sequence_and_dense.py", quick)
    lines += [f"Pruned with `prune(model, {SPARSITY}, granularity=\"channel\")` (the transformers; the LSTM and "
              "the U-Net with `0.5`), then `shrink`; the fine-tune is "
              f"{FINE_TUNE_EPOCHS} epochs at the training's learning rate, plain or distilled from the unpruned "
              "model (`keras.distillation.Distiller`, logits at temperature 3, half the loss each; the "
              "quantization-aware rows start from the plain one) (quantization-aware training: "
              f"{FINE_TUNE_EPOCHS} epochs from the fine-tuned weights at a tenth of it). MACs by `keras_compact.pruning.macs`; "
              "latency of the float files in LiteRT (XNNPack, one example, median of 3 rounds of 50 invokes, timed "
              "in turn). int8: post-training quantization with 200 training examples as representative data; "
              "agreement is `export`'s on 200 test examples.", ""]
    rows = []
    for name, result in results.items():
        before, after = result["macs"]
        latency = result["latency"]
        for label, found in result["rows"].items():
            rows.append([name, label, metric(found),
                         f"{after / before:.2f}x ({after:,} MACs)" if label != "float" else f"{before:,} MACs",
                         f"{latency['pruned'] / latency['float']:.2f}x" if label != "float" else
                         f"{latency['float']:.3f} ms"])
    lines += ["## Accuracy, MACs, latency", ""]
    lines += reporting.table(["network", "model", "test accuracy", "MACs", "LiteRT latency"], rows)
    lines += ["", "## What was removed", ""]
    lines += reporting.table(["network", "group (producers)", "size", "pruned"], [
        [name, ", ".join(producers), size, pruned] for name, result in results.items()
        for producers, size, pruned in result["groups"]])
    lines += ["", "## int8", ""]
    rows = []
    for name, result in results.items():
        for label, found in result["int8"].items():
            rows.append([name, f"post-training, {label}", metric(found), reporting.percent(found["agreement"]),
                         f"{found['bytes']:,}"])
        qat = result["qat"]
        if isinstance(qat, str):
            rows.append([name, "quantization-aware, pruned", f"refused ({qat})", "", ""])
        else:
            rows.append([name, "quantization-aware, pruned", f"{metric(qat)} (its float model {metric(qat['float'])})",
                         reporting.percent(qat["agreement"]), f"{qat['bytes']:,}"])
    lines += reporting.table(["network", "file", "test accuracy", "agreement", "bytes"], rows)
    lines += ["", "## Targets", ""]
    if "ViT on MNIST" in results:
        vit = results["ViT on MNIST"]
        ratio = vit["macs"][1] / vit["macs"][0]
        lines.append(f"- The ViT with half its heads and MLP at most 0.6x the MACs: {ratio:.2f}x, "
                     f"{reporting.verdict(ratio <= 0.6)}.")
        for kind in ("fine-tune", "distilled fine-tune"):
            drop = (vit["rows"]["float"]["accuracy"]
                    - vit["rows"][f"pruned, {FINE_TUNE_EPOCHS}-epoch {kind}"]["accuracy"])
            lines.append(f"- ... and within 1 point of unpruned after the {kind}: {100 * drop:+.2f} points lost, "
                         f"{reporting.verdict(drop <= 0.01)}.")
    for name, result in results.items():
        if not isinstance(result["qat"], str):
            key = "mean_iou" if "mean_iou" in result["qat"] else "accuracy"
            gap = result["qat"]["float"][key] - result["qat"][key]
            lines.append(f"- {name}: the QAT int8 file within 1 point of its float model ({key}): "
                         f"{100 * gap:+.2f} points, {reporting.verdict(gap <= 0.01)}.")
    if "LSTM on SNIPS" in results:
        lstm_int8 = results["LSTM on SNIPS"]["int8"]["pruned"]
        lstm_float = results["LSTM on SNIPS"]["rows"][f"pruned, {FINE_TUNE_EPOCHS}-epoch fine-tune"]["accuracy"]
        lines.append(f"- The recurrent classifier's int8 file written and within 1 point: "
                     f"{100 * (lstm_float - lstm_int8['accuracy']):+.2f} points, "
                     f"{reporting.verdict(lstm_float - lstm_int8['accuracy'] <= 0.01)}.")
    reporting.write(stem, lines, end="\n")
    plot(stem, results)


def plot(stem, results):
    plt = reporting.pyplot()
    figure, axis = plt.subplots(figsize=(8, 4))
    labels = list(next(iter(results.values()))["rows"])
    width = 0.8 / len(labels)
    for index, label in enumerate(labels):
        values = [result["rows"][label]["accuracy"] for result in results.values()]
        axis.bar(np.arange(len(results)) + (index - (len(labels) - 1) / 2) * width, values, width, label=label)
    names = [f"{name}\n{result['macs'][1] / result['macs'][0]:.2f}x the MACs" for name, result in results.items()]
    axis.set_xticks(np.arange(len(results)), names, fontsize=8)
    axis.set_ylabel("test accuracy (per pixel for the U-Net)")
    axis.set_ylim(0, 1)
    axis.set_title("half the heads, units and channels removed")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    reporting.save(figure, stem)


if __name__ == "__main__":
    main()
