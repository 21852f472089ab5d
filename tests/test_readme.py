"""The README's Python snippets run in order, as written, in a fresh Python (as a user would paste them)."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.tensorflow_backend("the README's snippets include ragged text features and the TensorFlow-only parts")

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# Not shown in the README: with KERAS_COMPACT_QUICK=1 every fit runs at most 2 epochs (and at most
# 40 batches of a tf.data.Dataset), so the snippets' real epoch counts stay in the text. 40, not
# fewer: after 2 x 10 batches the sequence network's outputs are near ties, and its int8 file agreed
# with it on only 95.0-97.5% of the calibration sentences (export requires 95%); after 2 x 40, 99.5-100%.
# NumPy arrays train on their first 512 examples (1,024 cost the two MobileNetV2 snippets 28 s more, and
# every snippet passes with 512).
_QUICK = '''
import functools
import os
import keras
import numpy as np
import tensorflow as tf

if os.environ.get("KERAS_COMPACT_QUICK") == "1":
    _fit = keras.Model.fit

    def _head(value, count=512):
        """The first `count` examples of NumPy arrays (or a list/dict of them); None otherwise."""
        leaves = keras.tree.flatten(value)
        if not leaves or not all(isinstance(leaf, np.ndarray) for leaf in leaves):
            return None
        return keras.tree.map_structure(lambda leaf: leaf[:count], value)

    @functools.wraps(_fit)  # keeps fit's signature, which models that check fit's arguments read
    def _quick_fit(self, x=None, *args, **kwargs):
        kwargs["epochs"] = min(kwargs.get("epochs", 1), 2)
        if isinstance(x, tf.data.Dataset):
            x = x.take(40)
        labels = args[0] if args else kwargs.get("y")
        if _head(x) is not None and (labels is None or _head(labels) is not None):
            x = _head(x)  # arrays: their first 512 examples
            if args:
                args = (_head(args[0]),) + args[1:]
            elif "y" in kwargs:
                kwargs["y"] = _head(kwargs["y"])
        return _fit(self, x, *args, **kwargs)

    keras.Model.fit = _quick_fit

# The snippets share one namespace of their own, as one session of a user's would.
def _run(code, line, namespace={}):
    print(f"README.md line {line}", flush=True)
    exec(compile(code, f"README.md:{line}", "exec"), namespace)
'''


def snippets():
    """`(first line, code)` of every ```python block of the README, in order."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        found.append((text[: match.start()].count("\n") + 2, match.group(1)))
    return found


def test_the_readme_has_python_snippets():
    assert len(snippets()) >= 6


def _names(code):
    """`(names the snippet binds, names it reads)`."""
    bound, read = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return bound, read


def test_readme_snippets_run_in_order_as_written(tmp_path):
    runnable, skipped, missing = [], [], set()
    for line, code in snippets():
        bound, read = _names(code)
        needs_snips = re.search(r"load\(\"(snips|atis)\"", code) or (read - bound) & missing
        if needs_snips and not (SHARED_DATA / "snips").is_dir():
            # The intent sets download otherwise, and CI has no network; the snippets that read what a
            # skipped one made are skipped with it.
            skipped.append(line)
            missing |= bound
            continue
        missing -= bound
        runnable.append(f"_run({code!r}, {line})")
    script = _QUICK + "\n".join(runnable) + '\nprint("README OK")\n'
    env = {**os.environ, "KERAS_COMPACT_QUICK": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if SHARED_DATA.is_dir():
        env["KERAS_COMPACT_DATA"] = str(SHARED_DATA)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0 and "README OK" in result.stdout, (
        result.stdout[-1500:] + "\n" + result.stderr[result.stderr.rfind("Traceback") :][-3000:]
    )
    if skipped:
        pytest.skip(f"ran every snippet but those at README lines {skipped}: they need ../shared/data/snips")
