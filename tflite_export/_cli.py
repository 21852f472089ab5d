"""The `keras-compact` command line.

Arguments are parsed before anything imports TensorFlow, so `--help`,
`--version` and argument errors answer at once; the commands import what they
need. Errors are one line on stderr, naming flags, with exit status 2.
"""

import argparse
import contextlib
import importlib.metadata
import os
import pathlib
import re
import sys

# Python argument names in the library's messages -> the flags that set them here.
_FLAGS = {
    "min_agreement": "--min-agreement",
    "min_snr": "--min-snr",
    "allow_non_finite": "--allow-non-finite",
    "representative_data": "--representative",
    "float_layers": "--float-layers",
    "verify_with": "--verify",
    "quantization": "--quantize",
    "projection_lowering": "--projection-lowering",
    "labels": "--labels",
    "num_hashes": "--num-hashes",
    "num_bits": "--num-bits",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "data_dir": "--data-dir",
    "macs_ratio": "--macs-ratio",
    "validation_data": "--validation",
    "temperature": "--temperature",
}


def main(argv=None, prog="keras-compact"):
    args = _parser(prog).parse_args(argv)
    # The converter needs TensorFlow; a .keras file saved on any backend loads on it.
    # (Only where Keras is not imported yet: the command line, not a caller's process.)
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    commands = {"demo": _demo, "export": _export, "inspect": _inspect, "compress": _compress}
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, OSError, KeyError, RuntimeError) as error:  # RuntimeError: ConverterCrashed
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2


def version():
    """The installed distribution's version (the source tree's when not installed)."""
    try:
        return importlib.metadata.version("keras-compact")
    except importlib.metadata.PackageNotFoundError:
        source = pathlib.Path(__file__).resolve().parents[1] / "keras_compact" / "__init__.py"
        found = re.search(r'__version__ = "([^"]+)"', source.read_text())
        return found.group(1) if found else "unknown"


def _parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog, description="Small, fast on-device networks for Keras 3, shipped as .tflite files."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_export(commands)
    _add_compress(commands)
    inspect = commands.add_parser("inspect", help="operators, inputs/outputs and weights of a .tflite file")
    inspect.add_argument("tflite")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _add_demo(commands):
    demo = commands.add_parser(
        "demo",
        help="train a ProjectionNet, export both networks to .tflite, verify them in LiteRT",
        description="Trains a trainer MLP and a ProjectionNet, writes trainer.tflite and projection.tflite "
        "to --output-dir, verifies both in LiteRT and prints one table.",
    )
    demo.add_argument("--data", choices=("digits", "mnist"), default="digits")
    demo.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MNIST IDX files (default: $KERAS_COMPACT_DATA, else ../shared/data)",
    )
    demo.add_argument("--num-hashes", type=_integer(1), default=60, help="T, hash functions (default 60)")
    demo.add_argument("--num-bits", type=_integer(1, 32), default=12, help="d, bits per function, 1..32 (default 12)")
    demo.add_argument("--epochs", type=_integer(1), default=None, help="default: 30 for digits, 10 for mnist")
    demo.add_argument("--batch-size", type=_integer(1), default=32)
    demo.add_argument("--output-dir", default="demo_output", help="where trainer.tflite and projection.tflite go")
    demo.add_argument("--seed", type=_integer(0), default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars or TensorFlow logs: only the table")


def _add_export(commands):
    export = commands.add_parser("export", help="convert a .keras model to a verified .tflite file")
    export.add_argument("model", help="the .keras file")
    export.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    export.add_argument("--quantize", choices=("dynamic", "float16", "int8", "int8_io", "int16x8"), default=None)
    export.add_argument(
        "--representative",
        default=None,
        help=".npz with calibration inputs (one array, or one per input name); needed by int8, int8_io and int16x8",
    )
    export.add_argument("--verify", default=None, help=".npz with examples to compare on (default: random)")
    export.add_argument(
        "--min-agreement", type=_fraction, default=0.95, help="0..1 or none (accept any agreement), default 0.95; below it nothing is written"
    )
    export.add_argument(
        "--min-snr", type=_decibels, default=20.0,
        help="dB or none: the least signal-to-noise ratio of every output that holds values (default 20)",
    )
    export.add_argument(
        "--allow-non-finite", action="store_true",
        help="write the file even when the model's outputs are NaN or infinite (refused by default)",
    )
    export.add_argument("--labels", default=None, help="text file with one class name per line, stored as metadata")
    export.add_argument(
        "--float-layers", default=None, type=lambda text: [name for name in text.split(",") if name],
        help="with --quantize int8: comma-separated layer names to keep in float32",
    )
    export.add_argument("--projection-lowering", choices=("builtin", "matrix"), default="builtin")


def _add_compress(commands):
    compress = commands.add_parser(
        "compress", help="prune to a MACs budget, reconstruct, fine-tune by distillation, export verified")
    compress.add_argument("model", help="the trained .keras classifier (compiled with its loss, or pass --loss)")
    compress.add_argument("--data", required=True, help=".npz with the training arrays x and y")
    compress.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    compress.add_argument("--macs-ratio", type=float, default=0.5, help="the MACs budget, a fraction (default 0.5)")
    compress.add_argument("--criterion", default="obs",  # keras_compact.pruning._channel.CRITERIA (tested)
                          choices=("magnitude", "bn_scale", "onorm", "taylor", "obs", "dpp"))
    compress.add_argument("--validation", default=None, help=".npz with x and y each stage's accuracy is measured on")
    compress.add_argument("--epochs", type=_integer(0), default=2, help="distilled fine-tuning epochs (default 2)")
    compress.add_argument("--batch-size", type=_integer(1), default=64)
    compress.add_argument("--loss", default=None, help="the training loss by name (default: the model's compiled loss)")
    compress.add_argument("--temperature", type=float, default=3.0, help="of the distillation (default 3)")
    compress.add_argument("--quantize", choices=("int8", "qat"), default=None,
                          help="int8 after calibration, or after one epoch of quantization-aware training")
    compress.add_argument("--quiet", action="store_true", help="no progress bars: only the report")


def _integer(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            accepted = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {accepted}, got {value}")
        return value

    return parse


def _fraction(text):
    if text.lower() == "none":  # what the library's `min_agreement=None` is here
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1 or 'none', got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def _decibels(text):
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB or 'none', got {text!r}") from None


def _one_line(error):
    """The error's first line, with library argument names replaced by this command's flags."""
    message = str(error).strip().split("\n")[0] or type(error).__name__
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w.-]){name}=True\b", flag, message)  # a switch: the flag alone
        message = re.sub(rf"(?<![\w.-]){name}=", f"{flag} ", message)
        # Not inside a dotted name (keras_compact.quantization.quantize_aware is no flag).
        message = re.sub(rf"(?<![\w.-]){name}\b(?![=.])", flag, message)
    return message


def _demo(args):
    with _silenced_stderr(args.quiet):
        from tflite_export import _demo  # TensorFlow loads only once the arguments parse

        data_dir = args.data_dir if args.data_dir is not None else _demo.default_data_dir()
        options = {name: getattr(args, name)
                   for name in ("data", "num_hashes", "num_bits", "epochs", "batch_size", "output_dir", "seed")}
        _demo.run_demo(data_dir=data_dir, verbose=0 if args.quiet else 1, **options)
    return 0


@contextlib.contextmanager
def _silenced_stderr(quiet):
    """With `quiet`, the process's stderr goes to /dev/null: TensorFlow and LiteRT log from C++.

    Errors are printed by `main` after this returns, so they still reach the user.
    """
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _check_archive(path, what, not_archive):
    """`path` is a file and a zip archive (.npz and .keras files both are); else the error, `not_archive` saying
    what the file should have been."""
    import zipfile

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such {what} file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(not_archive)


def _load_npz(path, what):
    import numpy as np

    _check_archive(path, what, f"cannot read {path} as an .npz file of arrays: it is not an .npz archive (write one "
                               "with numpy.savez(path, name=array, ...))")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError) as error:
        raise ValueError(f"cannot read {path} as an .npz file of arrays: {_one_line(error)}") from error
    if not arrays:
        raise ValueError(f"{path} holds no arrays.")
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def _load_model(path):
    _check_archive(path, "model", f"cannot load {path} as a Keras model: the file exists but is not a .keras file "
                                  "(a .keras file is a zip archive; this one is not)")
    import keras

    import keras_compact  # noqa: F401  (registers the package's layers for load_model)

    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for unreadable or unknown content
        raise ValueError(f"cannot load {path} as a Keras model: {_one_line(error)}") from error


def _export(args):
    # Every file is read before the model, whose loading imports TensorFlow (seconds): a wrong path fails at once.
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"No such model file: {args.model}")
    verify_with = None if args.verify is None else _load_npz(args.verify, "verification")
    representative = None if args.representative is None else _load_npz(args.representative, "representative data")
    labels = None if args.labels is None else _read_labels(args.labels)
    model = _load_model(args.model)
    from tflite_export import export

    report = export(
        model,
        args.output,
        verify_with=verify_with,
        quantization=args.quantize,
        representative_data=representative,
        min_agreement=args.min_agreement,
        min_snr=args.min_snr,
        allow_non_finite=args.allow_non_finite,
        projection_lowering=args.projection_lowering,
        labels=labels,
        float_layers=args.float_layers,
    )
    print(report)
    return 0


def _compress(args):
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"No such model file: {args.model}")
    data = _pair(args.data, "training data", "--data")
    validation = None if args.validation is None else _pair(args.validation, "validation", "--validation")
    model = _load_model(args.model)
    from tflite_export import compress

    report = compress(model, data, args.output, macs_ratio=args.macs_ratio, criterion=args.criterion,
                      validation_data=validation, epochs=args.epochs, batch_size=args.batch_size, loss=args.loss,
                      temperature=args.temperature, quantization=args.quantize, verbose=0 if args.quiet else "auto")
    print(report)
    return 0


def _pair(path, what, flag):
    arrays = _load_npz(path, what)
    if not isinstance(arrays, dict) or set(arrays) != {"x", "y"}:
        names = sorted(arrays) if isinstance(arrays, dict) else ["one unnamed array"]
        raise ValueError(f"{flag} {path} must hold two arrays named x and y (numpy.savez(path, x=..., y=...)); "
                         f"it holds {names}.")
    return arrays["x"], arrays["y"]


def _read_labels(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such labels file: {path}")
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream if line.strip()]


def _inspect(args):
    if not os.path.isfile(args.tflite):  # before TensorFlow loads
        raise FileNotFoundError(f"No such .tflite file: {args.tflite}")
    from tflite_export import inspect

    report = inspect(args.tflite)
    print(report.to_json() if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m tflite_export._cli"))
