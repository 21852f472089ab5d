"""What the benchmark scripts share: the repository root and their command line (`--quick`, `--epochs`,
`--data-dir`). How they write their results is `reporting.py`."""

import argparse
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def add_data_dir(parser):
    """`--data-dir`: the shared data sets, by default `$KERAS_COMPACT_DATA`, else `../shared/data`
    beside the repository (as a path relative to the working folder)."""
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_COMPACT_DATA",
                                                             os.path.relpath(ROOT.parent / "shared" / "data")),
                        help="the shared data sets (default: $KERAS_COMPACT_DATA, else ../shared/data)")


def parser(doc, quick, epochs=None, data=True):
    """The script's command line: `--quick` (`quick` is its help), `--epochs` where `epochs` (its help) is
    given, and `--data-dir` where `data`; the script adds its own arguments to it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    if epochs:
        parser.add_argument("--epochs", type=int, default=None, help=epochs)
    if data:
        add_data_dir(parser)
    return parser
