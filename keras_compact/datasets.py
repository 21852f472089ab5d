"""Real data sets for examples, tests and benchmarks, offline where possible.

`load("digits")` reads scikit-learn's bundled 8x8 digits (no download).
`load("mnist")` reads the IDX files from `data_dir`, else from
`$KERAS_COMPACT_DATA`, else asks tensorflow-datasets (which downloads on a
connected machine such as Colab). `load("snips")` and `load("atis")` read the
intent-classification files (the JointBERT layout) from `data_dir` or
`$KERAS_COMPACT_DATA`, else download those public files.
"""

import gzip
import os
import pathlib

import numpy as np

NAMES = ("digits", "mnist", "snips", "atis")
# The public copies of the intent sets, in the layout ../shared/data holds.
_INTENT_URL = "https://raw.githubusercontent.com/monologg/JointBERT/master/data/{name}/{path}"
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load(name, data_dir=None, with_info=False):
    """Loads a data set as `(x_train, y_train), (x_test, y_test)`.

    Images are float32 in [0, 1] of shape `(N, H, W)`; labels are int64.

    - `"digits"`: scikit-learn's 1,797 real 8x8 handwritten digits, pixels / 16,
      split 1,437 train / 360 test (stratified, seed 0).
    - `"mnist"`: 28x28 digits, pixels / 255. With both official splits present,
      60,000 train / 10,000 test. With only the 10,000-image test split (as in
      `../shared/data/mnist`), it is split 8,000 train / 2,000 test by
      `np.random.default_rng(0).permutation(10000)`.
    - `"snips"`, `"atis"`: intent classification; `x` is an object array of
      utterances (str, lower-cased and tokenised as published), `y` the index of
      the intent in `info["classes"]` (the set's `intent_label.txt`, whose first
      entry is `UNK`; an intent missing from it, such as ATIS's multi-intent
      `atis_flight#atis_airline`, counts as `UNK`, as in the JointBERT code).
      Official splits: SNIPS 13,084 train / 700 test, ATIS 4,478 / 893; the
      dev split is `info["dev"]`.

    Args:
        name: `"digits"`, `"mnist"`, `"snips"` or `"atis"`.
        data_dir: folder holding the MNIST IDX files (`t10k-images-idx3-ubyte.gz`
            and friends), directly or in a `mnist/` subfolder. Defaults to
            `$KERAS_COMPACT_DATA`; without either, tensorflow-datasets is used.
        with_info: also return a dict with `source` and `split`, a sentence for
            the tables that report results on this data (and, for the intent
            sets, `classes` and `dev`).

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load("digits")
    >>> x_train.shape, x_test.shape
    ((1437, 8, 8), (360, 8, 8))
    """
    if name not in NAMES:
        raise ValueError(f"Unknown data set. Expected one of {NAMES}. Received: name={name!r}")
    if name == "digits":
        data, info = _load_digits()
    elif name == "mnist":
        data, info = _load_mnist(data_dir)
    else:
        data, info = _load_intents(name, data_dir)
    return (data, info) if with_info else data


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    info = {
        "source": "scikit-learn load_digits (1,797 real 8x8 digits)",
        "split": f"{len(x_train):,} train / {len(x_test):,} test, stratified, seed 0",
    }
    return ((x_train, y_train), (x_test, y_test)), info


def _mnist_folder(data_dir):
    """The folder holding MNIST IDX files, or None; also the places searched."""
    candidates = []
    if data_dir is not None:
        candidates.append(pathlib.Path(data_dir))
    elif os.environ.get("KERAS_COMPACT_DATA"):
        candidates.append(pathlib.Path(os.environ["KERAS_COMPACT_DATA"]))
    searched = [folder for base in candidates for folder in (base, base / "mnist")]
    for folder in searched:
        if all((folder / file).is_file() for file in _MNIST_FILES["test"]):
            return folder, searched
    return None, searched


def _load_mnist(data_dir):
    folder, searched = _mnist_folder(data_dir)
    if folder is None and searched:
        places = ", ".join(str(path) for path in searched)
        raise FileNotFoundError(
            f"MNIST IDX files ({', '.join(_MNIST_FILES['test'])}) were not found in {places}. "
            "Put the files from http://yann.lecun.com/exdb/mnist/ there, or, on a connected machine, "
            "give no data_dir and no $KERAS_COMPACT_DATA to use tensorflow-datasets."
        )
    if folder is None:
        return _load_mnist_tfds()
    test = _read_idx_pair(folder, *_MNIST_FILES["test"])
    if all((folder / file).is_file() for file in _MNIST_FILES["train"]):
        train = _read_idx_pair(folder, *_MNIST_FILES["train"])
        split = "official 60,000 train / 10,000 test"
        return (train, test), {"source": f"MNIST IDX files in {folder}", "split": split}
    images, labels = test
    order = np.random.default_rng(0).permutation(len(labels))
    train_idx, test_idx = order[:8000], order[8000:]
    info = {
        "source": f"MNIST official test split (10,000 images) in {folder}",
        "split": "8,000 train / 2,000 test from the 10k test split, "
        "np.random.default_rng(0).permutation(10000)",
    }
    return ((images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])), info


def _read_idx_pair(folder, images_file, labels_file):
    images = _read_idx(folder / images_file, expected_magic=2051)
    labels = _read_idx(folder / labels_file, expected_magic=2049)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_file} holds {len(images)} images but {labels_file} {len(labels)} labels."
        )
    return (images / 255.0).astype(np.float32), labels.astype(np.int64)


def _read_idx(path, expected_magic):
    with gzip.open(path, "rb") as stream:
        raw = stream.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {magic}, expected {expected_magic}).")
    num_dims = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * num_dims).reshape(dims)


def _load_mnist_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise FileNotFoundError(
            "No MNIST files were given (data_dir=None and $KERAS_COMPACT_DATA unset) and "
            "tensorflow-datasets is not installed: pip install 'keras-compact[notebooks]', "
            "or pass data_dir= a folder with the MNIST IDX files."
        ) from error
    try:
        train, test = tfds.as_numpy(
            tfds.load("mnist", split=["train", "test"], batch_size=-1, as_supervised=True)
        )
    except Exception as error:  # tfds raises many kinds when offline
        raise FileNotFoundError(
            "tensorflow-datasets could not load MNIST (offline?): "
            f"{type(error).__name__}: {str(error)[:200]}. Pass data_dir= a folder with the "
            "MNIST IDX files (t10k-images-idx3-ubyte.gz, ...) or set $KERAS_COMPACT_DATA."
        ) from error
    info = {"source": "tensorflow-datasets mnist", "split": "official 60,000 train / 10,000 test"}
    return (_scaled(*train), _scaled(*test)), info


def _scaled(images, labels):
    """uint8 images `(N, 28, 28, 1)` -> float32 `(N, 28, 28)` in [0, 1]; int64 labels."""
    return (images[..., 0] / 255.0).astype(np.float32), labels.astype(np.int64)


def _download(name, path):
    """One public intent-set file, through Keras's download cache; offline, an error with the way out."""
    import keras

    url = _INTENT_URL.format(name=name, path=path)
    try:
        local = keras.utils.get_file(f"keras_compact_{name}_{path.replace('/', '_')}", url)
    except Exception as error:  # urllib raises URLError, HTTPError, timeouts, ... and Keras wraps some
        raise FileNotFoundError(
            f"Could not download {name} ({path}) from {url}: {type(error).__name__}: {str(error)[:160]}. "
            f"Offline, pass data_dir= (or set $KERAS_COMPACT_DATA to) a folder holding {name}/ in the "
            "JointBERT layout (intent_label.txt, train/seq.in, train/label, dev/..., test/...)."
        ) from error
    return pathlib.Path(local).read_text(encoding="utf-8")


def _load_intents(name, data_dir):
    data_dir = data_dir or os.environ.get("KERAS_COMPACT_DATA")
    folder = None
    if data_dir:
        for candidate in (pathlib.Path(data_dir) / name, pathlib.Path(data_dir)):
            if (candidate / "intent_label.txt").is_file():
                folder = candidate
                break
        if folder is None:
            raise FileNotFoundError(
                f"No {name} files (intent_label.txt, train/seq.in, train/label, ...) in {data_dir} or "
                f"{pathlib.Path(data_dir) / name}."
            )

    def read(path):
        if folder is not None:
            text = (folder / path).read_text(encoding="utf-8")
        else:
            text = _download(name, path)
        return text.splitlines()

    classes = [line.strip() for line in read("intent_label.txt") if line.strip()]
    index = {label: i for i, label in enumerate(classes)}
    splits = {}
    for split in ("train", "dev", "test"):
        sentences, labels = read(f"{split}/seq.in"), read(f"{split}/label")
        if len(sentences) != len(labels):
            raise ValueError(f"{name}/{split}: {len(sentences)} utterances but {len(labels)} labels.")
        x = np.array([sentence.strip() for sentence in sentences], dtype=object)
        y = np.array([index.get(label.strip(), index.get("UNK", 0)) for label in labels], dtype=np.int64)
        splits[split] = (x, y)
    source = f"{name.upper()} intents ({folder or 'monologg/JointBERT data, downloaded'})"
    info = {
        "source": source,
        "split": f"official splits: {len(splits['train'][0]):,} train / {len(splits['test'][0]):,} test",
        "classes": classes,
        "dev": splits["dev"],
    }
    return (splits["train"], splits["test"]), info
