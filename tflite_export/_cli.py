"""The `keras-compact` command line."""

import argparse
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
    args = parser.parse_args(argv)

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
