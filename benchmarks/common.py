"""What the benchmark scripts share: the repository root and the `--data-dir` argument."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def add_data_dir(parser):
    """`--data-dir`: the shared data sets, by default `$KERAS_COMPACT_DATA`, else `../shared/data`
    beside the repository (as a path relative to the working folder)."""
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_COMPACT_DATA",
                                                             os.path.relpath(ROOT.parent / "shared" / "data")),
                        help="the shared data sets (default: $KERAS_COMPACT_DATA, else ../shared/data)")
