import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SHARED_DATA, needs_shared_data

pytestmark = pytest.mark.tensorflow_backend("the tutorials are run on TensorFlow, as on Colab")

TUTORIALS = sorted((pathlib.Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))
# Tutorials whose data has no offline stand-in: SNIPS is only in ../shared/data (or downloaded).
NEEDS = {"text_projection.ipynb": "snips"}


def _run(path, tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("KERAS_COMPACT_QUICK", "1")
    monkeypatch.setenv("KERAS_COMPACT_DATA", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    # execute() raises CellExecutionError, with the cell and its traceback, if any cell fails.
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return notebook


def _images(notebook):
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.name)
def test_tutorial_runs_in_quick_mode_and_draws_its_plots(path, tmp_path, monkeypatch):
    if path.name in NEEDS:
        needs_shared_data(NEEDS[path.name])
    # Without ../shared/data the MNIST tutorials fall back to scikit-learn's digits.
    data_dir = SHARED_DATA if SHARED_DATA.is_dir() else tmp_path / "no_data"
    notebook = _run(path, tmp_path, monkeypatch, data_dir)
    assert len(_images(notebook)) >= 2, "the tutorial's plots did not render"


def test_projection_tutorial_falls_back_to_digits_without_mnist(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    notebook = _run(TUTORIALS[[p.name for p in TUTORIALS].index("projection_net.ipynb")], tmp_path, monkeypatch,
                    tmp_path / "empty")
    printed = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "using scikit-learn's digits instead" in printed and len(_images(notebook)) >= 2
