"""int8 that keeps the model: post-training int8, int16x8 and quantization-aware training, with tfmot beside.

EfficientNetB0, MobileNetV2 (alpha 0.5) and ResNet50 (`keras.applications`, weights=None) at 32x32x3,
plus this package's MLP (300-100, ReLU) and residual CNN (`structured_pruning.small_resnet`), trained from scratch on MNIST (8,000 train / 2,000 test of the shared 10k split, padded to 32x32,
channels repeated) for 3 epochs (Adam 1e-3, batch 64; BatchNormalization momentum 0.9 in every
network, for both libraries: keras.applications' 0.999 does not settle in 375 steps), and this package's
text sequence network (`sequence_network`: a 6,144 x 32 token table and a bidirectional QRNN 48) on
SNIPS (13,084 train / 700 test, `TokenBuckets(6144, 32)`) for 5 epochs (Adam 3e-3), then:

- post-training int8 (`export(..., quantization="int8")`, 200 training images calibrating), int16x8, and
  int8 with the 3 layers `quantization_report` ranks worst (32 test images) kept in float32 (`float_layers`);
- quantization-aware training: `quantize_aware(model)` fine-tuned 1 epoch (Adam 1e-4), exported as int8
  from its learned ranges (no representative data; the sequence network's file has 200 training
  sentences calibrate the inside of its QRNN, which trains in float);
- the peer: tfmot's `quantize_model` on the same network built by `tf_keras.applications`
  (`TF_USE_LEGACY_KERAS=1`, in a subprocess), the same data, epochs, optimizer and momentum, converted
  by the TFLite converter. Not run for the sequence network: its QRNN is a Keras 3 layer of this
  package, which tf_keras cannot build.

Accuracy is the `.tflite` file's, run in LiteRT on the 2,000 test images; agreement is the file's top-1
agreement with the Keras model it was exported from (the float model for post-training, the
quantization-aware model for QAT), counted as `export` counts it (where the Keras model's rounded
outputs tie, the file choosing any tied class agrees), for tfmot's files too; latency is LiteRT's per example (one thread, XNNPack) in this run.

    python benchmarks/quantization_aware.py           # full (about 90 min on 2 cores, ResNet50 most of it)
    python benchmarks/quantization_aware.py --quick   # MobileNetV2 on 1,000 / 300, 1 epoch
    python benchmarks/quantization_aware.py --nets ResNet50,MLP   # only these; the file keeps the others
    python benchmarks/quantization_aware.py --nets Sequence       # the text network alone (a few minutes)

Writes benchmarks/results/quantization_aware.md (or quantization_aware_quick.md). With --nets, the
sections of the networks not run are kept from the file as it was, each with the date it was measured.
"""

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
from keras_compact.layers import TokenBuckets
from keras_compact.models import sequence_network
from keras_compact.quantization import quantize_aware
import common
import reporting
from structured_pruning import ROOT, mnist, small_resnet
from tflite_export import export, predict, quantization_report

NETS = {  # --nets name: (section title, keras.applications name or a builder below)
    "EfficientNetB0": ("EfficientNetB0", "EfficientNetB0"),
    "MobileNetV2": ("MobileNetV2 (alpha 0.5)", "MobileNetV2"),
    "ResNet50": ("ResNet50", "ResNet50"),
    "MLP": ("this package's MLP (300-100, ReLU)", "mlp"),
    "CNN": ("this package's residual CNN (small_resnet)", "small_resnet"),
    "Sequence": ("this package's text sequence network (SNIPS)", "sequence_network"),
}
TEXT = "sequence_network"  # the one network on text: its own data, schedule and no tfmot twin
TOKENS = dict(num_buckets=6144, max_length=32)
TEXT_EPOCHS, TEXT_RATE = 5, 3e-3
MOMENTUM = 0.9
SELECTIVE = 3  # the post-training file with the report's worst layers in float32
SELECTIVE_ROW = f"int8, the report's {SELECTIVE} worst layers float32"

# The peer, run with TF_USE_LEGACY_KERAS=1: argv[1] is the work folder (data.npz, options.json).
_TFMOT = r"""
import json, os, sys, time
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from ai_edge_litert.interpreter import Interpreter
work = sys.argv[1]
options = json.load(open(os.path.join(work, "options.json")))
data = np.load(os.path.join(work, "data.npz"))
x, y, x_test, y_test = data["x"], data["y"], data["x_test"], data["y_test"]
sys.path.insert(0, options["benchmarks"])
from quantization_aware import build
from tflite_export._compare import compare
tf.keras.utils.set_random_seed(options.get("seed", 0))
model = build(options["net"], tf.keras)
def fit(model, epochs, rate):
    model.compile(tf.keras.optimizers.Adam(rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return (time.perf_counter() - start) / epochs
result = {}
if options.get("weights"):  # start from the float weights given (qat_seeds.py), trained by the other library
    given = np.load(options["weights"])
    model.set_weights([given[f"w{i}"] for i in range(len(given.files))])
else:
    result["float epoch s"] = fit(model, options["epochs"], 1e-3)
result["float"] = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
try:
    qat = tfmot.quantization.keras.quantize_model(model)
    result["qat epoch s"] = fit(qat, options["tune_epochs"], 1e-4)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    model_bytes = converter.convert()
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    entry, exit_ = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs, start = [], time.perf_counter()
    for example in x_test:
        interpreter.set_tensor(entry["index"], example[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(exit_["index"])[0])
    result["latency ms"] = (time.perf_counter() - start) * 1000 / len(x_test)
    outputs = np.array(outputs)
    keras_outputs = qat.predict(x_test, verbose=0)
    result["qat int8"] = float(np.mean(outputs.argmax(1) == y_test))
    # As export counts it, ties included.
    result["agreement"] = compare([keras_outputs], [outputs], ["output"], ["classes"])[0].agreement
    result["bytes"] = len(model_bytes)
except Exception as error:
    result["refused"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
json.dump(result, open(os.path.join(work, "result.json"), "w"))
"""


def mlp(library=keras):
    """This package's MLP (the pruning benchmarks' 300-100), on the 32x32x3 images flattened."""
    return library.Sequential([library.Input((32, 32, 3)), library.layers.Flatten(),
                               library.layers.Dense(300, activation="relu"),
                               library.layers.Dense(100, activation="relu"),
                               library.layers.Dense(10, activation="softmax")], name="mlp")


def snips(data_dir, quick):
    """SNIPS as `TokenBuckets` ids: `(x, y), (x_test, y_test), info`."""
    ((x, y), (x_test, y_test)), info = keras_compact.datasets.load("snips", data_dir, with_info=True)
    if quick:
        x, y, x_test, y_test = x[:1500], y[:1500], x_test[:200], y_test[:200]
    tokens = TokenBuckets(**TOKENS)
    ids = [keras.ops.convert_to_numpy(tokens(sentences.astype(str))).astype("int32") for sentences in (x, x_test)]
    return (ids[0], y), (ids[1], y_test), info


def build(net, library=keras):
    """`net` (a `NETS` value) built with `library` (Keras 3, or tf_keras for tfmot), BN momentum MOMENTUM."""
    if net == TEXT:
        return sequence_network(8, embedding_dim=32, units=48, **TOKENS)  # SNIPS: 7 intents and UNK
    if net == "mlp":
        model = mlp(library)
    elif net == "small_resnet":
        model = small_resnet(library=library)
    else:
        kwargs = {"alpha": 0.5} if net == "MobileNetV2" else {}
        model = getattr(library.applications, net)(weights=None, input_shape=(32, 32, 3), classes=10, **kwargs)
    for layer in model.layers:
        if isinstance(layer, library.layers.BatchNormalization):
            layer.momentum = MOMENTUM
    return model


def fit(model, x, y, epochs, rate):
    model.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return (time.perf_counter() - start) / epochs


def file_row(model, path, x_test, y_test, **options):
    """Exports `model` to `path` with `options`; the file's accuracy, agreement, bytes and latency."""
    try:
        report = export(model, path, verify_with=x_test, min_agreement=None, **options)
    except ValueError as error:
        return {"refused": str(error).split(". ")[0][:160]}
    outputs = predict(path, x_test)
    return {"accuracy": float(np.mean(outputs.argmax(1) == y_test)), "agreement": report.top1_agreement,
            "bytes": report.bytes, "latency ms": report.latency_ms,
            "dequantize": report.operators.get("DEQUANTIZE", 0) + report.operators.get("QUANTIZE", 0) - 2}


def ours(net, train, test, epochs, tune_epochs, folder, *, seed=0, post_training=True):
    """This package's rows for `net`: float32, then (with `post_training`) int8, int16x8 and selective, then QAT."""
    (x, y), (x_test, y_test) = train, test
    keras.utils.set_random_seed(seed)
    model = build(net)
    rows = {"float epoch s": fit(model, x, y, *((TEXT_EPOCHS, TEXT_RATE) if net == TEXT else (epochs, 1e-3)))}
    rows["float32"] = file_row(model, folder / "float.tflite", x_test, y_test)
    rows["float weights"] = model.get_weights()  # where qat_seeds.py starts tfmot's QAT
    if post_training:
        rows.update(_post_training(model, x, x_test, y_test, folder))
    qat = quantize_aware(model)
    rows["qat epoch s"] = fit(qat, x, y, tune_epochs, 1e-4)
    calibration = {}
    if net == TEXT:  # the inside of its QRNN trains in float: calibrated
        calibration = dict(representative_data=x[:200])
        rows["note"] = (f"Data: SNIPS as `TokenBuckets(6144, 32)` ids ({len(x):,} train / {len(x_test):,} test), "
                        f"{TEXT_EPOCHS} epochs of float training (Adam {TEXT_RATE:g}, batch 64); the "
                        "quantization-aware file calibrated inside its QRNN on 200 training sentences.")
    rows["int8 (quantization-aware)"] = file_row(qat, folder / "qat.tflite", x_test, y_test, quantization="int8",
                                                 **calibration)
    return rows


def _post_training(model, x, x_test, y_test, folder):
    rows = {}
    rows["int8 (post-training)"] = file_row(model, folder / "int8.tflite", x_test, y_test, quantization="int8",
                                            representative_data=x[:200])
    rows["int16x8 (post-training)"] = file_row(model, folder / "int16x8.tflite", x_test, y_test,
                                               quantization="int16x8", representative_data=x[:200])
    worst = quantization_report(model, x[:200], debug_data=x_test[:32]).worst(SELECTIVE)
    rows[SELECTIVE_ROW] = dict(file_row(model, folder / "selective.tflite", x_test, y_test, quantization="int8",
                                        representative_data=x[:200], float_layers=worst), layers=worst)
    return rows


def peer(net, train, test, epochs, tune_epochs, folder, *, seed=0, weights=None):
    """tfmot's float and QAT int8 results for `net`, from a tf_keras subprocess; with `weights` (a Keras 3
    model's `get_weights()`), its QAT starts from those float weights instead of training its own."""
    if net == TEXT:
        return {"not run": "its QRNN is a Keras 3 layer of this package, which tf_keras cannot build"}
    (x, y), (x_test, y_test) = train, test
    np.savez(folder / "data.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    if weights is not None:
        np.savez(folder / "weights.npz", **{f"w{i}": value for i, value in enumerate(weights)})
    (folder / "options.json").write_text(json.dumps(
        {"net": net, "epochs": epochs, "tune_epochs": tune_epochs, "benchmarks": str(ROOT / "benchmarks"),
         "seed": seed, "weights": str(folder / "weights.npz") if weights is not None else None}))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.run([sys.executable, "-c", _TFMOT, str(folder)], env=env, capture_output=True, text=True)
    if not (folder / "result.json").exists():
        return {"refused": f"tfmot run exited {process.returncode}: {process.stderr.strip().splitlines()[-1][:200]}"}
    return json.loads((folder / "result.json").read_text())


def section(name, mine, theirs):
    """The markdown section of one network: its files, tfmot's, and the seconds per epoch."""
    lines = [f"## {name}", "", f"Measured {time.strftime('%Y-%m-%d')}. {mine.get('note', '')}".rstrip(), "",
             "| file | test accuracy | agreement | bytes | extra (DE)QUANTIZE | latency ms |",
             "|---|---|---|---|---|---|"]
    variants = ("float32", "int8 (post-training)", "int16x8 (post-training)", SELECTIVE_ROW,
                "int8 (quantization-aware)")
    for variant in (variant for variant in variants if variant in mine):
        row = mine[variant]
        if "refused" in row:
            lines.append(f"| {variant} | refused: {row['refused']} | | | | |")
            continue
        lines.append(f"| {variant} | {row['accuracy']:.2%} | {row['agreement']:.2%} | {row['bytes']:,} | "
                     f"{max(row['dequantize'], 0)} | {row['latency ms']:.3f} |")
    if "not run" in theirs:
        lines.append(f"| tfmot | not run: {theirs['not run']} | | | | |")
    else:
        lines.append(f"| tfmot, float32 (Keras) | {theirs.get('float', float('nan')):.2%} | | | | |")
    if "refused" in theirs:
        lines.append(f"| tfmot, int8 (quantization-aware) | refused: {theirs['refused']} | | | | |")
    elif "qat int8" in theirs:
        lines.append(f"| tfmot, int8 (quantization-aware) | {theirs['qat int8']:.2%} | {theirs['agreement']:.2%} | "
                     f"{theirs['bytes']:,} | | {theirs['latency ms']:.3f} |")
    seconds = f"Seconds per epoch: float {mine['float epoch s']:.0f}, quantization-aware {mine['qat epoch s']:.0f}"
    if "float epoch s" in theirs:
        seconds += f"; tfmot float {theirs['float epoch s']:.0f}"
        if "qat epoch s" in theirs:
            seconds += f", tfmot quantization-aware {theirs['qat epoch s']:.0f}"
    lines += ["", seconds + " (the first epoch includes tracing)."]
    if SELECTIVE_ROW in mine:
        lines += ["", f"The report's {SELECTIVE} worst layers (kept in float32): "
                      + ", ".join(f"`{name}`" for name in mine[SELECTIVE_ROW].get("layers", ()))]
    return lines


def kept_sections(path, names):
    """`{title: text}` of the sections of the results file at `path` whose title is not in `names`."""
    if not path.exists():
        return {}
    parts = path.read_text(encoding="utf-8").split("\n## ")[1:]
    sections = {part.split("\n", 1)[0]: "## " + part.rstrip("\n") for part in parts}
    return {title: text for title, text in sections.items() if title not in names}


def write_results(stem, results):
    """Writes `stem`.md from `results`: `info`, `epochs`, `tune_epochs`, `quick`, the run's `networks`
    (`{title: (ours, tfmot's)}`), and with `keep` the file's other networks as they were."""
    lines = [
        "# int8 that keeps the model: post-training, int16x8, quantization-aware (ours and tfmot's)",
        "",
        f"`python benchmarks/quantization_aware.py{reporting.flag(results['quick'])}`; Keras {keras.__version__}, "
        f"{reporting.machine()}, `ai_edge_litert`. Data: {results['info']['split']}, 32x32x3. "
        f"{results['epochs']} epochs of float training (Adam 1e-3, batch 64, BatchNormalization momentum {MOMENTUM}), "
        f"then {results['tune_epochs']} epoch(s) of quantization-aware fine-tuning (Adam 1e-4). Accuracy: the "
        "`.tflite` file in LiteRT on the test images. Agreement: top-1 agreement of the file with the Keras model it "
        "was exported from, as `export` counts it (where the model's rounded outputs tie, any tied class agrees). "
        "Extra (DE)QUANTIZE: operators beyond the input's QUANTIZE and the output's DEQUANTIZE, i.e. "
        "parts left in float. tfmot: `quantize_model` on the same network built in tf_keras, same data and "
        "schedule. Each network's section says when it was measured (`--nets` reruns some).",
    ]
    networks = results["networks"]
    kept = kept_sections(reporting.RESULTS / f"{stem}.md", set(networks)) if results["keep"] else {}
    for title, _ in NETS.values():
        if title in networks:
            lines += [""] + section(title, *networks[title])
        elif title in kept:
            lines += ["", kept[title]]
    reporting.write(stem, lines, end="\n")


def main(argv=None):
    parser = common.parser(__doc__, "MobileNetV2 only, 1,000 / 300 examples, 1 epoch")
    parser.add_argument("--nets", help=f"comma-separated, of {', '.join(NETS)} (default: all); the results "
                                       "file keeps the sections of the others")
    args = parser.parse_args(argv)
    names = ["MobileNetV2"] if args.quick else list(NETS)
    if args.nets:
        names = [name.strip() for name in args.nets.split(",")]
        unknown = [name for name in names if name not in NETS]
        if unknown:
            parser.error(f"--nets: {', '.join(unknown)} unknown; one or more of {', '.join(NETS)}")
    train, test, info = mnist(args.data_dir, args.quick)
    train = (train[0][:8000], train[1][:8000])
    epochs, tune_epochs = (1, 1) if args.quick else (3, 1)
    networks = {}
    for name in names:
        title, net = NETS[name]
        data = snips(args.data_dir, args.quick)[:2] if net == TEXT else (train, test)
        with tempfile.TemporaryDirectory() as folder:
            mine = ours(net, *data, epochs, tune_epochs, pathlib.Path(folder))
        with tempfile.TemporaryDirectory() as folder:
            theirs = peer(net, *data, epochs, tune_epochs, pathlib.Path(folder))
        networks[title] = (mine, theirs)
        # After each network, so that a long run interrupted keeps what it measured.
        write_results("quantization_aware_quick" if args.quick else "quantization_aware",
                      dict(info=info, networks=networks, epochs=epochs, tune_epochs=tune_epochs, quick=args.quick,
                           keep=bool(args.nets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
