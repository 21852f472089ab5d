"""The `keras-compact` command line."""

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-compact",
        description="Small, fast on-device networks for Keras 3, shipped as .tflite files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a ProjectionNet, export its projection network to .tflite, verify it in LiteRT",
    )
    demo.add_argument("--data", choices=("digits", "mnist"), default="digits")
    demo.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MNIST IDX files (default: $KERAS_COMPACT_DATA, else ../shared/data)",
    )
    demo.add_argument("--num-hashes", type=int, default=60, help="T, hash functions (default 60)")
    demo.add_argument("--num-bits", type=int, default=12, help="d, bits per function (default 12)")
    demo.add_argument("--epochs", type=int, default=None, help="default: 30 for digits, 10 for mnist")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--output-dir", default="demo_output", help="where the .tflite files go")
    demo.add_argument("--seed", type=int, default=0)

    export = commands.add_parser("export", help="convert a .keras model to a verified .tflite file")
    export.add_argument("model", help="the .keras file")
    export.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    export.add_argument("--quantize", choices=("dynamic", "float16", "int8", "int8_io"), default=None)
    export.add_argument(
        "--representative",
        default=None,
        help=".npz with calibration inputs (one array, or one per input name); needed by int8",
    )
    export.add_argument("--verify", default=None, help=".npz with examples to compare on (default: random)")
    export.add_argument("--min-agreement", type=float, default=0.95, help="default 0.95; below it nothing is written")
    export.add_argument("--labels", default=None, help="text file with one class name per line, stored as metadata")
    export.add_argument("--projection-lowering", choices=("builtin", "matrix"), default="builtin")

    inspect = commands.add_parser("inspect", help="operators, inputs/outputs and weights of a .tflite file")
    inspect.add_argument("tflite")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            return _export(args)
        if args.command == "inspect":
            return _inspect(args)
    except (ValueError, TypeError, FileNotFoundError, OSError, KeyError) as error:
        message = str(error).strip().split("\n")[0] or type(error).__name__
        print(f"keras-compact: error: {message}", file=sys.stderr)
        return 2

    from tflite_export import _demo  # TensorFlow loads only once the arguments parse

    data_dir = args.data_dir if args.data_dir is not None else _demo.default_data_dir()
    try:
        _demo.run_demo(
            data=args.data,
            data_dir=data_dir,
            num_hashes=args.num_hashes,
            num_bits=args.num_bits,
            epochs=args.epochs,
            batch_size=args.batch_size,
            output_dir=args.output_dir,
            seed=args.seed,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"keras-compact: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _load_npz(path, what):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such {what} file: {path}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if not arrays:
        raise ValueError(f"{path} holds no arrays.")
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def _export(args):
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"No such model file: {args.model}")
    import keras

    import keras_compact  # noqa: F401  (registers the package's layers for load_model)
    from tflite_export import export

    try:
        model = keras.models.load_model(args.model)
    except Exception as error:  # Keras raises many types for unreadable or unknown content
        raise ValueError(f"cannot load {args.model} as a Keras model: {str(error).strip().splitlines()[0]}") from error
    report = export(
        model,
        args.output,
        verify_with=None if args.verify is None else _load_npz(args.verify, "verification"),
        quantization=args.quantize,
        representative_data=None if args.representative is None else _load_npz(args.representative, "representative data"),
        min_agreement=args.min_agreement,
        projection_lowering=args.projection_lowering,
        labels=None if args.labels is None else _read_labels(args.labels),
    )
    print(report)
    return 0


def _read_labels(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such labels file: {path}")
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream if line.strip()]


def _inspect(args):
    from tflite_export import inspect

    report = inspect(args.tflite)
    print(report.to_json() if args.json else report)
    return 0
