"""Issue 21, part 4: the package installs where the README and the tutorials say it does.

keras-compact is not on a package index. `python -m build` makes the sdist and
the wheel (the wheel built from the sdist, so the sdist holds what a build
needs), and the installed wheel runs the quick start's demo. Each tutorial's
first cell installs the package from the repository the notebook sits in, or
from `KERAS_COMPACT_SOURCE` (a git URL or an uploaded wheel) on Colab.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

pytestmark = pytest.mark.tensorflow_backend("packaging does not depend on the backend: it runs once, in the TensorFlow pass")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def _install_cell(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return "".join(next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")["source"])


def test_every_tutorial_starts_with_the_same_install_cell():
    cells = {path.name: _install_cell(path) for path in TUTORIALS}
    reference = cells["projection_net.ipynb"]
    assert "KERAS_COMPACT_SOURCE" in reference and "%pip" not in reference
    for name, cell in cells.items():
        assert cell.startswith(reference), name  # jax_backend.ipynb installs jax after it


def _run_install_cell(monkeypatch, cwd, source=None):
    """The cell as a fresh Colab kernel runs it: keras_compact missing; returns what pip was asked."""
    calls = []
    monkeypatch.chdir(cwd)
    if source is None:
        monkeypatch.delenv("KERAS_COMPACT_SOURCE", raising=False)
    else:
        monkeypatch.setenv("KERAS_COMPACT_SOURCE", source)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "keras_compact" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append(command))
    exec(compile(_install_cell(TUTORIALS[0]), "install cell", "exec"), {})
    return calls


def test_the_install_cell_installs_the_clone_it_sits_in(monkeypatch):
    [command] = _run_install_cell(monkeypatch, ROOT / "tutorials")
    assert command == [sys.executable, "-m", "pip", "install", "-q", f"{ROOT}[notebooks]"]


@pytest.mark.parametrize(
    "source, requirement",
    [
        ("git+https://github.com/owner/keras-compact.git", "keras-compact[notebooks] @ git+https://github.com/owner/keras-compact.git"),
        ("/content/keras_compact-0.1.0-py3-none-any.whl", "/content/keras_compact-0.1.0-py3-none-any.whl[notebooks]"),
    ],
)
def test_on_colab_the_install_cell_takes_keras_compact_source(monkeypatch, tmp_path, source, requirement):
    [command] = _run_install_cell(monkeypatch, tmp_path, source)
    assert command[-1] == requirement


def test_without_a_clone_or_a_source_the_install_cell_says_what_to_set(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match=r"not on a package index. Set KERAS_COMPACT_SOURCE to a git URL"):
        _run_install_cell(monkeypatch, tmp_path)


def test_build_makes_an_sdist_and_a_wheel_that_install_and_run_the_demo(tmp_path):
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout.strip():
        for name in tracked.stdout.splitlines():  # a clean checkout, as CI builds it
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    else:
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", ".git"))
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [sdist], [wheel] = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.cfg", "pyproject.toml", "README.md", "keras_compact/__init__.py", "tflite_export/_cli.py"} <= names
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "keras_compact/pruning/_groups.py" in names and "tflite_export/_verify.py" in names
    assert "keras-compact = tflite_export._cli:main" in entry_points
    assert not any(name.startswith("tests/") for name in names)

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                                "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "0"}  # --quiet must silence them itself
    env.pop("KERAS_COMPACT_DATA", None)
    code = ("import tflite_export, sys; assert tflite_export.__file__.startswith(sys.argv[1]), tflite_export.__file__; "
            "from tflite_export import _cli; sys.exit(_cli.main(sys.argv[2:]))")
    demo = subprocess.run([sys.executable, "-c", code, str(site), "demo", "--quiet", "--epochs", "1",
                           "--num-hashes", "10", "--output-dir", str(run_dir)],
                          cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    # The quiet demo prints its table alone, naming both files (this is also the command line's test of it).
    assert "Epoch" not in demo.stdout and "━" not in demo.stdout
    assert str(run_dir / "trainer.tflite") in demo.stdout and str(run_dir / "projection.tflite") in demo.stdout
    assert (run_dir / "projection.tflite").is_file()
    assert "W0000" not in demo.stderr and "I0000" not in demo.stderr
