import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SHARED_DATA

TUTORIALS = sorted((pathlib.Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.name)
def test_tutorial_runs_in_quick_mode_and_draws_its_plots(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_COMPACT_QUICK", "1")
    monkeypatch.setenv("KERAS_COMPACT_DATA", str(SHARED_DATA))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    # execute() raises CellExecutionError, with the cell and its traceback, if any cell fails.
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2, "the tutorial's plots did not render"
