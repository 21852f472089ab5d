import gzip
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compact import datasets


def test_digits_are_the_real_bundled_digits_split_stratified():
    ((x_train, y_train), (x_test, y_test)), info = datasets.load("digits", with_info=True)
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_test).min() >= 35  # every class in the test split
    assert "1,437 train / 360 test" in info["split"]


def test_mnist_test_split_is_divided_8000_2000_with_fixed_permutation(shared_data):
    ((x_train, y_train), (x_test, y_test)), info = datasets.load("mnist", shared_data, with_info=True)
    assert x_train.shape == (8000, 28, 28) and x_test.shape == (2000, 28, 28)
    counts = np.bincount(np.concatenate([y_train, y_test]))
    np.testing.assert_array_equal(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert "default_rng(0).permutation(10000)" in info["split"]
    again = datasets.load("mnist", shared_data / "mnist")
    np.testing.assert_array_equal(again[1][1], y_test)


def test_mnist_reads_the_folder_from_environment(shared_data, monkeypatch):
    monkeypatch.setenv("KERAS_COMPACT_DATA", str(shared_data))
    (x_train, _), _ = datasets.load("mnist")
    assert x_train.shape == (8000, 28, 28)


def test_missing_mnist_files_error_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mnist")):
        datasets.load("mnist", tmp_path)


def test_corrupt_idx_file_is_reported(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as stream:
            stream.write(b"\x00\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic 2049, expected 2051"):
        datasets.load("mnist", tmp_path)


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="name='cifar'"):
        datasets.load("cifar")


def test_offline_intent_download_says_how_to_give_the_files(monkeypatch, tmp_path):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv("KERAS_COMPACT_DATA", raising=False)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(FileNotFoundError, match=r"Could not download snips.*pass data_dir= \(or set \$KERAS_COMPACT_DATA to\)"):
        datasets.load("snips")


@pytest.mark.tensorflow_backend("which tests skip without the data does not depend on the backend")
def test_data_tests_skip_with_the_reason_without_shared_data(tmp_path):
    tests = pathlib.Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         str(tests / "test_datasets.py"), str(tests / "test_text_projection.py"),
         "-k", "mnist or snips or atis or text_projection"],
        cwd=tests.parent, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_COMPACT_SHARED_DATA": str(tmp_path / "absent"), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0 and "failed" not in summary and "error" not in summary, result.stdout[-3000:]
    assert "skipped" in summary and "needs the real data sets in ../shared/data" in result.stdout
