"""Where a quantization-aware EfficientNetB0's int8 file departs from the Keras model it came from.

`export` verifies a quantization-aware (QAT) model's int8 file against the model itself. On
EfficientNetB0 they agree on 88-95% of top-1 classes, not the 99% they do on ResNet50. This script
says where the difference comes from. It trains EfficientNetB0 (`keras.applications`, weights=None,
32x32x3, BatchNormalization momentum 0.9) as `quantization_aware.py` does, fine-tunes
`quantize_aware(model)` for a few epochs, exporting after each, and compares the last file with the
model `export` converts (the QAT model with its batch norms folded into the kernels), operator by
operator, in LiteRT with every tensor kept:

- *fed the file's inputs*: each layer computed in Keras from the file's own (dequantized) inputs,
  against the file's output. This is the difference that operator itself adds: rounding the same
  value differently (float fake quantization against LiteRT's fixed-point multipliers) moves an
  output by one step.
- *running free*: the Keras model run on its own, against the file. This is the difference as it
  has grown through the network.

Steps are the file tensor's quantization steps (its scale).

    python benchmarks/qat_parity.py           # 4,000 / 1,000 images, 3 float + 3 QAT epochs (about 10 min on 2 cores)
    python benchmarks/qat_parity.py --quick   # 1,000 / 300 images, 1 + 1 epochs

Writes benchmarks/results/qat_parity.md (or qat_parity_quick.md).
"""

import collections
import os
import sys
import tempfile
import time

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact.quantization import quantize_aware
import common
import reporting
from quantization_aware import build, fit
from structured_pruning import mnist
from tflite_export import export, predict, verify
from tflite_export._qat import folded
from tflite_export._quantization_report import layer_of


def file_tensors(model, path, x):
    """`{layer name: the file's dequantized output of that layer on x}`, for the model's quantized layers."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(path, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    names = {layer.name for layer in model.layers}
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    chosen = {}
    for tensor in interpreter.get_tensor_details():
        name = layer_of(tensor["name"], names, [model.layers[-1].name], scope=model.name)
        if name and tensor["dtype"] == np.int8 and tuple(tensor["shape"]) == (1, *shapes[name]):
            chosen[name] = tensor  # the last one a layer names is its output
    values = {name: [] for name in chosen}
    index = interpreter.get_input_details()[0]["index"]
    for example in x:
        interpreter.set_tensor(index, example[None].astype(np.float32))
        interpreter.invoke()
        for name, tensor in chosen.items():
            scale, zero = tensor["quantization"]
            values[name].append((interpreter.get_tensor(tensor["index"]).astype(np.float32) - zero) * scale)
    return {name: (np.concatenate(v), chosen[name]["quantization"][0]) for name, v in values.items()}


def nodes(model):
    """The model's nodes in the order they compute, its inputs left out."""
    return [node for node in _keras_private.nodes_in_order(model)
            if not isinstance(node.operation, keras.layers.InputLayer)]


def moved_to_quantizing_reader(model, found):
    """A convolution's file output is its batch norm's in Keras (folded to an Identity that rounds):
    name it by the layer that rounds it."""
    readers = collections.defaultdict(list)
    for node in nodes(model):
        for tensor in node.input_tensors:
            readers[id(tensor)].append(node.operation)
    for layer in model.layers:
        if layer.name in found and getattr(layer, "output_mode", None) is None:
            after = readers[id(layer.output)]
            if len(after) == 1 and after[0].output_mode is not None and after[0].name not in found:
                found[after[0].name] = found.pop(layer.name)
    return found


def compare(model, path, x):
    """Per quantized layer: (kind, steps off fed the file's inputs, steps off running free)."""
    found = moved_to_quantizing_reader(model, file_tensors(model, path, x))
    free, fed = {id(model.inputs[0]): x}, {id(model.inputs[0]): x}
    rows = []
    for node in nodes(model):
        layer, output = node.operation, node.output_tensors[0]
        outputs = []
        for values in (free, fed):
            args, kwargs = node.arguments.fill_in(values)
            outputs.append(np.asarray(layer(*args, **{**kwargs, "training": False})))
        free[id(output)], fed[id(output)] = outputs
        if layer.name in found:
            target, scale = found[layer.name]
            kind = type(layer.layer).__name__ + (f" ({layer.activation})" if layer.activation else "")
            if isinstance(layer.layer, keras.layers.Identity):  # where the batch norm was
                kind = "convolution + batch norm (folded)"
            rows.append((layer.name, kind, np.abs(outputs[1] - target) / scale, np.abs(outputs[0] - target) / scale))
            fed[id(output)] = target
    return rows


def kind_table(rows):
    by_kind = collections.defaultdict(list)
    for _, kind, fed, free in rows:
        by_kind[kind].append((fed, free))
    header = ["operator (Keras layer)", "count", "values off by a step, fed the file's inputs", "worst, fed",
              "RMS steps running free (mean)", "worst, running free"]
    return reporting.table(header, [
        [kind, len(pairs), f"{np.mean([np.mean(fed >= 0.5) for fed, _ in pairs]):.3%}",
         f"{max(fed.max() for fed, _ in pairs):.0f}", f"{np.mean([np.sqrt(np.mean(free ** 2)) for _, free in pairs]):.2f}",
         f"{max(free.max() for _, free in pairs):.0f}"]
        for kind, pairs in sorted(by_kind.items(), key=lambda item: -len(item[1]))])


def depth_table(rows):
    """Running free, the RMS steps at the last rounded output of each stage (stem, block1..7, top)."""
    last = {}
    for name, _, _, free in rows:
        last[name.split("_")[0].rstrip("abcdefg") if name.startswith("block") else name.split("_")[0]] = (name, free)
    return reporting.table(["stage", "its last rounded output", "RMS steps running free", "values off by a step"],
                           [[stage, f"`{name}`", f"{np.sqrt(np.mean(free ** 2)):.2f}", f"{np.mean(free >= 0.5):.1%}"]
                            for stage, (name, free) in last.items()])


def fine_tune(qat, train, test, tune_epochs, path):
    """Fine-tunes `qat` epoch by epoch, exporting it to `path` and verifying the file after each epoch; the
    agreement table's rows."""
    (x, y), (x_test, y_test) = train, test
    epoch_rows = []
    for epoch in range(1, tune_epochs + 1):
        fit(qat, x, y, 1, 1e-4)
        export(qat, path, quantization="int8", min_agreement=None)
        parity = verify(qat, path, x_test)
        keras_accuracy = np.mean(qat.predict(x_test, verbose=0).argmax(1) == y_test)
        file_accuracy = np.mean(predict(path, x_test).argmax(1) == y_test)
        margin = "n/a" if parity.disagreement_margin is None else f"{parity.disagreement_margin:.3f}"
        epoch_rows.append(reporting.row(epoch, f"{keras_accuracy:.2%}", f"{file_accuracy:.2%}",
                                        f"{parity.top1_agreement:.2%}", margin))
        print(epoch_rows[-1], flush=True)
    return epoch_rows


def write_results(stem, results):
    """`results`: `info`, `quick`, `epochs`, `train_size`, `test_size`, `probe`, the `epoch_rows` and the
    operator `rows`."""
    lines = [
        "# Where a quantization-aware EfficientNetB0's int8 file departs from its Keras model",
        "",
        f"`python benchmarks/qat_parity.py{reporting.flag(results['quick'])}`; Keras {keras.__version__}, "
        f"{reporting.machine()}, `ai_edge_litert`; measured {time.strftime('%Y-%m-%d')}. "
        f"Data: {results['info']['split']}; {results['train_size']:,} train / {results['test_size']:,} test images "
        f"at 32x32x3. {results['epochs']} float epochs (Adam 1e-3), then `quantize_aware` fine-tuned (Adam 1e-4), "
        "exported as int8 after each epoch.",
        "",
        "## Agreement as the fine-tune goes on", "",
        *reporting.table(["QAT epochs", "Keras QAT model accuracy", "file accuracy", "top-1 agreement",
                          "median lead where they differ"], results["epoch_rows"]), "",
        f"## Operator by operator (the last file, {results['probe']} test images)", "",
        "Fed the file's inputs: each layer computed in Keras from the file's own inputs. Running free: the "
        "Keras model on its own. Steps: the file tensor's quantization steps; a value off by a step is one "
        "rounded the other way.", "", *kind_table(results["rows"]), "", *depth_table(results["rows"]),
    ]
    reporting.write(stem, lines, end="\n")


def main(argv=None):
    args = common.parser(__doc__, "1,000 / 300 images, 1 float and 1 QAT epoch").parse_args(argv)
    train, test, info = mnist(args.data_dir, args.quick)
    (x, y), (x_test, y_test) = (train[0][:4000], train[1][:4000]), (test[0][:1000], test[1][:1000])
    epochs, tune_epochs, probe = (1, 1, 32) if args.quick else (3, 3, 64)
    keras.utils.set_random_seed(0)
    model = build("EfficientNetB0")
    fit(model, x, y, epochs, 1e-3)
    qat = quantize_aware(model)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "qat.tflite")
        epoch_rows = fine_tune(qat, (x, y), (x_test, y_test), tune_epochs, path)
        rows = compare(folded(qat), path, x_test[:probe])
    results = dict(info=info, quick=args.quick, epochs=epochs, train_size=len(x), test_size=len(x_test), probe=probe,
                   epoch_rows=epoch_rows, rows=rows)
    write_results("qat_parity_quick" if args.quick else "qat_parity", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
