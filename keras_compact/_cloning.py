"""Copies of models with some layers replaced: the one way this package transforms a model.

`pruning.strip` and the export's lowering both work on a copy made here, as
tfmot's `strip_pruning` does (`keras.models.clone_model` with a clone function
that recurses into nested models): the user's model, its layers and their
variables are never changed.
"""

import inspect

import keras

from keras_compact import _keras_private
from keras_compact._keras_private import Functional


def clone_with(model, replace, call_function=None):
    """A copy of `model` in which `replace` picks new layers.

    Args:
        model: a Functional or Sequential model with known inputs; nested
            Functional and Sequential models are copied the same way.
        replace: `replace(layer)` returns `None` to share `layer` unchanged with
            the copy, or `(new_layer, weights)`: a fresh, unbuilt layer and the
            values its weights get once the copy has built it (`None` keeps its
            initial values; a callable `weights(new_layer)` sets them itself).
        call_function: for a Functional `model`, what Keras's `clone_model` calls
            each (new) layer with, `call_function(layer, *args, **kwargs)`.

    Returns:
        A model of the same kind (Sequential or Functional). Inputs keep their
        names, dtypes, shapes and raggedness; an input Keras named automatically
        (`keras_tensor_N`) is named `input` (`input_0`, `input_1`, ... for several).
    """
    pending = []

    def clone(layer):
        replacement = replace(layer)
        if replacement is None:
            return layer
        new_layer, weights = replacement
        pending.append((new_layer, weights))
        return new_layer

    if not isinstance(model, keras.Sequential):
        model = as_functional(model)
    renamed = iter(io_names(known_inputs(model)))
    # Keras's own clone drops raggedness from the inputs it makes; these keep it.
    inputs = keras.tree.map_structure(
        lambda tensor: keras.Input(
            batch_shape=tensor.shape, dtype=tensor.dtype, ragged=tensor.ragged, name=next(renamed)
        ),
        model.inputs[0] if isinstance(model, keras.Sequential) else model.input,
    )
    extra = {} if call_function is None else {"call_function": call_function}
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone, recursive=True, **extra)
    for layer, weights in pending:
        if callable(weights):
            weights(layer)
        elif weights is not None:
            layer.set_weights(weights)
    return copy


def is_graph_model(layer):
    """A Functional or Sequential model: one whose layers and graph Keras can see."""
    return isinstance(layer, (Functional, keras.Sequential))


def as_functional(model):
    """`model` itself when Functional; a Sequential's graph as a Functional model."""
    if isinstance(model, Functional) and not isinstance(model, keras.Sequential):
        return model
    return keras.Model(known_inputs(model), model.outputs, name=model.name)


def known_inputs(model):
    """`model.inputs`, or a ValueError saying how to give a model known inputs."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no known inputs. Build it with "
            "keras.Input: a Sequential starting with keras.Input(shape), a functional model, or, for "
            "a subclassed model, a functional wrapper: inputs = keras.Input(shape); "
            "keras.Model(inputs, model(inputs))."
        )
    return inputs


def check_model(model, function, graph=False):
    """Raises unless `model` is a Keras model with known inputs: the same error and
    advice from every function. With `graph=True` (functions that edit layers: the
    pruning tools) every model in it must be functional or Sequential, whose
    layers and connections Keras can see; a subclassed one is refused, nested too."""
    if not isinstance(model, keras.Model):
        hint = (
            " To use one layer, wrap it in a model: keras.Sequential([keras.Input(shape), layer])."
            if isinstance(model, keras.layers.Layer)
            else ""
        )
        raise TypeError(f"{function} expects a keras.Model. Received: model={type(model).__name__}.{hint}")
    if graph:
        hidden = [layer for layer in [model, *_keras_private.sublayers(model, include_self=False)]
                  if isinstance(layer, keras.Model) and not is_graph_model(layer)]
        if hidden:
            names = ", ".join(f"{type(layer).__name__} {layer.name!r}" for layer in hidden[:3])
            raise ValueError(
                f"{function} works on the layers of a functional or Sequential model, and {names} "
                f"{'is a subclassed model' if len(hidden) == 1 else 'are subclassed models'}: Keras cannot see "
                "its layers or how they connect. Build the network with keras.Input and keras.Model(inputs, "
                "outputs), or as a keras.Sequential starting with keras.Input(shape)."
            )
    known_inputs(model)
    return model


def io_names(tensors):
    """The tensors' names, with Keras's automatic `keras_tensor_N` names made readable."""
    automatic = [tensor.name.startswith("keras_tensor") for tensor in tensors]
    if sum(automatic) == 1 and len(tensors) == 1:
        return ["input"]
    return [f"input_{i}" if auto else tensor.name for i, (tensor, auto) in enumerate(zip(tensors, automatic))]


# What every Keras layer's constructor takes through its `**kwargs` (`Layer.__init__`).
_LAYER_ARGUMENTS = ("name", "trainable", "dtype", "autocast", "input_dim", "input_shape", "batch_size")


def fresh_copy(layer):
    """A new, unbuilt layer of the same class and configuration.

    A layer whose `get_config` holds keys its constructor refuses (KerasHub's
    `ViTPatchingAndEmbedding` writes `num_patches`, which it computes) is made
    from the keys its constructor names.
    """
    config = layer.get_config()
    try:
        return layer.__class__.from_config(config)
    except TypeError as error:
        if "Unrecognized keyword arguments" not in str(error):
            raise
        accepted = set(inspect.signature(layer.__class__.__init__).parameters) | set(_LAYER_ARGUMENTS)
        return layer.__class__.from_config({key: value for key, value in config.items() if key in accepted})


def inlined(model):
    """A copy of `model` as one Functional graph, and where `model`'s tensors went in it.

    Every nested Functional or Sequential model is inlined, so a probe model can read
    the tensors inside a `keras.applications` backbone under a new head. Each layer is
    a fresh copy holding the original's weights (a layer called twice is one copy, called
    twice), so `model`'s layers gain no new calls. Returns `(functional, tensors,
    originals)`: `tensors` maps `id(t)` of every tensor of `model`'s graphs, nested ones
    included, to the tensor that computes it in `functional`; `originals` maps `id` of
    each copied layer to the layer of `model` it copies.
    """
    functional = as_functional(model)
    renamed = iter(io_names(functional.inputs))
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=next(renamed)) for t in functional.inputs]
    tensors = {id(old): new for old, new in zip(functional.inputs, inputs)}
    copies = {}
    _inline(functional, tensors, copies)
    outputs = keras.tree.map_structure(lambda tensor: tensors[id(tensor)], functional.outputs)
    flat = keras.Model(inputs, outputs, name=model.name)
    for copy, original in copies.values():
        copy.set_weights(original.get_weights())
    return flat, tensors, {id(copy): original for copy, original in copies.values()}


def _inline(graph, tensors, copies):
    for node in _keras_private.nodes_in_order(graph):
        operation = node.operation
        if isinstance(operation, keras.layers.InputLayer):
            continue
        args, kwargs = node.arguments.fill_in(tensors)
        if is_graph_model(operation):
            inner = as_functional(operation)
            for tensor, value in zip(inner.inputs, keras.tree.flatten((args, kwargs))):
                tensors[id(tensor)] = value
            _inline(inner, tensors, copies)
            results = [tensors[id(tensor)] for tensor in keras.tree.flatten(inner.outputs)]
        else:
            if isinstance(operation, keras.layers.Layer):  # a raw keras.ops call is stateless: reused
                if id(operation) not in copies:
                    copies[id(operation)] = (fresh_copy(operation), operation)
                operation = copies[id(operation)][0]
            results = keras.tree.flatten(operation(*args, **kwargs))
        for tensor, value in zip(node.outputs, results):
            tensors[id(tensor)] = value
