"""Examples as users pass them: arrays, `(x, y)` pairs, or a stream of batches
(a `tf.data.Dataset`, a generator, a `keras.utils.PyDataset`), as `fit` takes them."""

import numpy as np


def is_stream(data):
    """A `tf.data.Dataset`, a generator/iterator or a `keras.utils.PyDataset`: batches, not examples."""
    import tensorflow as tf  # always installed; only its Dataset class is needed

    if isinstance(data, tf.data.Dataset) or hasattr(data, "__next__"):
        return True
    return hasattr(data, "__getitem__") and hasattr(data, "num_batches") and hasattr(data, "on_epoch_end")


def split_pair(element):
    """`(x, y)` from a batch as `fit` reads it: `(x, y)` or `(x, y, sample_weight)`, else `(x, None)`."""
    if isinstance(element, tuple) and len(element) in (2, 3):
        return element[0], element[1]
    return element, None


def batches(data, limit, argument):
    """Up to `limit` examples of the stream `data` as a list of its batches (whole batches;
    the last one may pass the limit). A callable is called first (a generator function)."""
    if callable(data) and not is_stream(data):
        data = data()
    if hasattr(data, "num_batches") and not hasattr(data, "__next__") and not hasattr(data, "element_spec"):
        data = (data[index] for index in range(len(data)))  # a PyDataset
    taken, count = [], 0
    for element in data:
        taken.append(element)
        x, _ = split_pair(element)
        first = x[next(iter(x))] if isinstance(x, dict) else x[0] if isinstance(x, (list, tuple)) else x
        count += int(np.shape(first)[0]) if np.ndim(first) else 1
        if count >= limit:
            break
    if not taken:
        raise ValueError(f"{argument} yielded no batches: the dataset or generator is empty (or exhausted).")
    return taken


def concatenated(parts):
    """Arrays (or ragged tensors) of one input, joined along the examples axis."""
    import tensorflow as tf

    if isinstance(parts[0], tf.RaggedTensor):
        return tf.concat(parts, axis=0)
    return np.concatenate([np.asarray(part) for part in parts])
