"""Every docstring example runs (`doctest`), apart from lines marked `# doctest: +SKIP`."""

import doctest
import importlib
import pathlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact
import tflite_export

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules():
    names = []
    for package in (keras_compact, tflite_export):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(names)


def _examples(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module.__name__) if test.examples]


MODULES = [name for name in _modules() if _examples(importlib.import_module(name))]


def test_the_packages_have_docstring_examples():
    assert {"keras_compact.layers.projection_layer", "tflite_export._export"} <= set(MODULES)


_TENSORFLOW_ONLY = {
    "keras_compact.layers.feature_buckets",
    "keras_compact.layers.text_featurizer",
    "keras_compact.layers.text_views",
    "keras_compact.layers.token_buckets",
    "keras_compact.models.text",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[pytest.mark.tensorflow_backend("strings and ragged ids")] if name in _TENSORFLOW_ONLY else [])
        for name in MODULES
    ],
)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that export write their files here
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    context = {"keras": keras, "np": np, "tf": tf, "keras_compact": keras_compact, "tflite_export": tflite_export}
    report = []
    for test in _examples(module):
        test.globs = {**context, **vars(module), **test.globs}
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)[-4000:]
