"""How the benchmark scripts write what they measured: markdown and figures under `benchmarks/results`.

Each script gathers its measurements in one results dict; its `write_results(stem, results)` joins
sections of markdown lines made with these helpers and hands them to `write`, which writes
`benchmarks/results/<stem>.md` and prints it. Figures go beside it as `<stem>.png` (`pyplot`, `save`).

    lines = reporting.heading("Export", "export.py", quick)
    lines += reporting.table(["model", "bytes"], [[name, f"{size:,}"] for name, size in sizes.items()])
    reporting.write("export_quick" if quick else "export", lines)
"""

import os
import platform
import time

from common import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def percent(value):
    """`0.9731` -> `'97.31%'`."""
    return f"{value:.2%}"


def verdict(ok):
    """How a results file says whether a target was reached."""
    return "**met**" if ok else "**NOT met**"


def flag(quick):
    """The command line's `--quick`, as the results file quotes it."""
    return " --quick" if quick else ""


def title(text, quick):
    """The file's first line: `# text`, marked as a smoke run for `--quick`."""
    return f"# {text}" + (" (quick smoke run)" if quick else "")


def machine():
    """`'x86_64, 2 cores'`: where the figures were measured."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def written_by(script, quick, versions=None):
    """The line under the title: the command, the date, the machine and the versions (default: Keras's)."""
    if versions is None:
        import keras

        versions = f"Keras {keras.__version__}"
    return f"Written by `benchmarks/{script}{flag(quick)}` on {time.strftime('%Y-%m-%d')}, {machine()}, {versions}."


def heading(text, script, quick, versions=None):
    """The file's first lines: its `title`, and under it the line `written_by` says."""
    return [title(text, quick), "", written_by(script, quick, versions), ""]


def row(*cells):
    """One markdown table row of the cells as text; a `None` cell, one left empty, is written `| |`."""
    return "|" + "|".join(" " if cell is None else f" {cell} " for cell in cells) + "|"


def table(header, rows=()):
    """A markdown table: the header, its rule, then `rows` (each a list of cells for `row`, or a row already
    written)."""
    return [row(*header), "|" + "---|" * len(header)] + [r if isinstance(r, str) else row(*r) for r in rows]


def write(stem, lines, end="", echo=True):
    """Writes `lines` to `benchmarks/results/<stem>.md` (joined by newlines, then `end`), prints them unless
    `echo` is false, and returns the path."""
    path = RESULTS / f"{stem}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    if echo:
        print("\n".join(lines))
    return path


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (imported on first use: the scripts' workers never plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, stem, dpi=100):
    """Saves `figure` as `benchmarks/results/<stem>.png`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(RESULTS / f"{stem}.png", dpi=dpi)
