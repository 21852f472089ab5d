"""benchmarks/reporting.py: how every benchmark writes its results file."""

import pathlib
import sys

import pytest

# benchmarks/ is not a package (its scripts import each other by name): on the path only for this import,
# so that its export.py, pruning.py, ... never stand in for anything else.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    import reporting
finally:
    del sys.path[0]


def test_a_table_is_its_header_its_rule_and_its_rows():
    lines = reporting.table(["model", "bytes", "note"], [["mlp", "1,024", None], "| written | already | |"])
    assert lines == ["| model | bytes | note |", "|---|---|---|", "| mlp | 1,024 | |", "| written | already | |"]


def test_cells_are_written_as_text_and_none_leaves_one_empty():
    assert reporting.row(1, 0.5, "", None) == "| 1 | 0.5 |  | |"


def test_the_heading_names_the_command_and_marks_a_quick_run():
    lines = reporting.heading("Export", "export.py", True, versions="Keras 3")
    assert lines[0] == "# Export (quick smoke run)" and lines[1] == lines[3] == ""
    assert lines[2].startswith("Written by `benchmarks/export.py --quick` on ") and lines[2].endswith(", Keras 3.")
    assert reporting.heading("Export", "export.py", False, versions="Keras 3")[0] == "# Export"


@pytest.mark.parametrize("ok, said", [(True, "**met**"), (False, "**NOT met**")])
def test_a_verdict_says_met_or_not(ok, said):
    assert reporting.verdict(ok) == said


def test_write_puts_the_lines_in_the_results_folder_and_prints_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reporting, "RESULTS", tmp_path / "results")
    path = reporting.write("example_quick", ["# Example", "", "text"], end="\n")
    assert path == tmp_path / "results" / "example_quick.md"
    assert path.read_text(encoding="utf-8") == "# Example\n\ntext\n"
    assert capsys.readouterr().out == "# Example\n\ntext\n"
    reporting.write("quiet", ["x"], echo=False)
    assert capsys.readouterr().out == ""
