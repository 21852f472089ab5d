"""The contract every public layer keeps: a small local `run_layer_test`.

Keras tests each of its layers with one `run_layer_test(...)` call
(`keras/src/testing/test_case.py`, private); this is the same idea for the
layers of this package, checked the ways users build models: config round
trip, registered serialization, output shapes and dtypes (eager and symbolic),
weight counts, and identical outputs when the layer sits in a Sequential built
from a list, one built with `.add()`, a functional model, and any of those saved
to `.keras` and loaded again.
"""

import copy
import dataclasses

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class LayerCase:
    """One layer configuration and the inputs it takes."""

    name: str
    make: object  # () -> a new layer
    inputs: object  # () -> list of keras.Input (one per model input)
    data: object  # () -> the eager inputs, structured as the layer is called
    output_shape: tuple  # of one example batch of `data`
    output_dtype: str
    trainable_weights: int
    non_trainable_weights: int
    sequential: bool = True  # a single dense input: also built as Sequential models


def run_layer_test(case, tmp_path):
    """Checks `case`'s layer against the contract; returns the models it built."""
    layer = case.make()
    config = layer.get_config()
    rebuilt = type(layer).from_config(copy.deepcopy(config))  # Keras's Wrapper.from_config pops keys
    assert rebuilt.get_config() == config, "get_config -> from_config -> get_config changed the config"
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("keras_compact>"), serialized["registered_name"]
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config

    data = case.data()
    eager = _numpy(layer(data))
    assert eager.shape == case.output_shape, (eager.shape, case.output_shape)
    assert str(eager.dtype) == case.output_dtype, (eager.dtype, case.output_dtype)
    assert len(layer.trainable_weights) == case.trainable_weights
    assert len(layer.non_trainable_weights) == case.non_trainable_weights

    models = build_models(case)
    for kind, model in models.items():
        symbolic = keras.tree.flatten(model.outputs)[0]
        # None in a symbolic shape is a length set per batch (ragged outputs).
        assert len(symbolic.shape) == len(case.output_shape) and all(
            want is None or want == got for want, got in zip(symbolic.shape[1:], case.output_shape[1:])
        ), (kind, symbolic.shape)
    reference = _numpy(models["functional"](data))
    for kind, model in models.items():
        np.testing.assert_allclose(_numpy(model(data)), reference, atol=1e-6, err_msg=kind)
    for kind in list(models):
        path = tmp_path / f"{case.name}-{kind}.keras"
        models[kind].save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(_numpy(loaded(data)), reference, atol=1e-6, err_msg=f"saved {kind}")
        models[f"saved {kind}"] = loaded
    return models


def build_models(case, stack=None):
    """The case's layer in every model form users write: `{form: model}`.

    `stack()` gives the fresh layers to chain (default: the case's layer alone).
    Each form gets its own layers, with the weights of the functional form's, so
    that every form computes the same function.
    """
    stack = stack or (lambda: [case.make()])
    inputs = case.inputs()
    outputs = inputs if len(inputs) > 1 else inputs[0]
    for layer in stack():
        outputs = layer(outputs)
    functional = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name="functional")
    models = {"functional": functional}
    if case.sequential:
        from_list = keras.Sequential([case.inputs()[0]] + stack(), name="from_list")
        added = keras.Sequential(name="with_add")
        added.add(case.inputs()[0])
        for layer in stack():
            added.add(layer)
        for model in (from_list, added):
            model.set_weights(functional.get_weights())
            models[model.name] = model
    return models


def _numpy(outputs):
    first = keras.tree.flatten(outputs)[0]
    if isinstance(first, tf.RaggedTensor):
        first = first.to_tensor()
    return np.asarray(first)
