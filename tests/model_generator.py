"""Random functional models for export's pairing tests (`test_generated_models.py`, `benchmarks/generated_models.py`).

Each model, from a seed: 1-3 inputs with random names and dtypes (float features of rank
1-3, or integer token ids into an `Embedding`), a trunk with a shared layer (one `Dense`
called on two tensors), a nested `Sequential` and multiplications by constants, and 1-15
outputs with random names, of ranks 1-4 and different sizes (some softmax, some linear).
"""

import string

import keras
import numpy as np


def _name(rng, taken):
    while True:
        name = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(1, 7))))
        if name not in taken:
            taken.add(name)
            return name


def _input(rng, names):
    """A random input and the vector it becomes: `(keras.Input, vector tensor, description)`."""
    name = _name(rng, names)
    kind = rng.choice(["vector", "sequence", "image", "ids"])
    if kind == "ids":
        dtype = str(rng.choice(["int32", "int64"]))
        length = int(rng.integers(2, 9))
        rows = int(rng.integers(5, 40))
        tensor = keras.Input((length,), dtype=dtype, name=name)
        embedded = keras.layers.Embedding(rows, 8)(tensor)
        return tensor, keras.layers.GlobalAveragePooling1D()(embedded), ("ids", dtype, (length,), rows)
    if kind == "vector":
        shape = (int(rng.integers(1, 12)),)
        tensor = keras.Input(shape, name=name)
        return tensor, keras.layers.Dense(8, activation="relu")(tensor), ("float", "float32", shape, None)
    if kind == "sequence":
        shape = (int(rng.integers(2, 6)), int(rng.integers(1, 5)))
        tensor = keras.Input(shape, name=name)
        return tensor, keras.layers.Flatten()(keras.layers.Dense(4)(tensor)), ("float", "float32", shape, None)
    shape = (int(rng.integers(4, 9)), int(rng.integers(4, 9)), int(rng.integers(1, 4)))
    tensor = keras.Input(shape, name=name)
    convolved = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(tensor)
    return tensor, keras.layers.GlobalAveragePooling2D()(convolved), ("float", "float32", shape, None)


def _output(rng, trunk, names):
    """A random output of rank 1-4 (batch axis included) read from the trunk."""
    name = _name(rng, names)
    rank = int(rng.integers(1, 5))
    if rank == 1:
        return keras.layers.Reshape((), name=name)(keras.layers.Dense(1)(trunk))
    if rank == 2:
        units = int(rng.integers(1, 12))
        activation = "softmax" if units > 1 and rng.random() < 0.5 else None
        return keras.layers.Dense(units, activation=activation, name=name)(trunk)
    shape = tuple(int(d) for d in rng.integers(1, 5, size=rank - 1))
    values = keras.layers.Dense(int(np.prod(shape)))(trunk)
    return keras.layers.Reshape(shape, name=name)(values)


def generated_model(seed, max_outputs=15):
    """`(model, descriptions of its inputs)`: a random functional model (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    names = set()
    made = [_input(rng, names) for _ in range(int(rng.integers(1, 4)))]
    inputs = [tensor for tensor, _, _ in made]
    vectors = [vector for _, vector, _ in made]
    joined = vectors[0] if len(vectors) == 1 else keras.layers.Concatenate()(vectors)
    shared = keras.layers.Dense(16, activation="tanh")
    first = shared(joined)
    second = shared(keras.layers.Dense(joined.shape[-1])(joined) * 0.5)  # the shared layer, called twice
    nested = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16), keras.layers.Activation("relu")])
    trunk = keras.layers.Add()([nested(first), second * 2.0])
    outputs = [_output(rng, trunk, names) for _ in range(int(rng.integers(1, max_outputs + 1)))]
    return keras.Model(inputs, outputs), [description for _, _, description in made]


def examples(model, descriptions, count, seed=0):
    """`count` random examples for every input of a generated model, in its input order."""
    rng = np.random.default_rng(seed)
    arrays = []
    for kind, dtype, shape, rows in descriptions:
        if kind == "ids":
            arrays.append(rng.integers(0, rows, size=(count,) + shape).astype(dtype))
        else:
            arrays.append(rng.uniform(-1, 1, size=(count,) + shape).astype(dtype))
    return arrays
