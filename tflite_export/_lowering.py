"""The lowered copy of a model: what the converter sees.

`lowered_copy` makes a functional copy of the user's model
(`keras_compact._cloning.clone_with`; the user's model and layers are never
changed) with nested models that hold a ProjectionLayer inlined and each layer
at its export lowering, its type's `lowering` in `keras_compact.layer_types`:

- `TargetedDropout`/`PruningMask` wrappers: stripped (`pruning.stripped_replacement`);
- `HadamardClassifier`: its matmul or transform lowering (`_hadamard`);
- `ProjectionLayer`: itself, cut out later for LSH_PROJECTION, or its hash
  matrix (`_projection`);
- with `unroll_recurrent` (int8 and 16x8 files, whose calibration crashes
  TensorFlow 2.21 on a recurrent layer's loop): an `LSTM`, `GRU`, `SimpleRNN`
  (or a `Bidirectional` pair) over a sequence of known length, unrolled
  (`unroll=True`: the same weights, one step after another, no loop).

Layers computing in float16 or bfloat16 compute in float32 in the copy.
"""

import keras

from keras_compact import _keras_private, layer_types
from keras_compact._cloning import as_functional, clone_with, is_graph_model
from keras_compact.layers import HadamardClassifier, ProjectionLayer
from keras_compact.pruning.prune import stripped_replacement
from tflite_export import _hadamard, _projection

# Each layer type's `lowering` in the one table of layer types: lowering(layer, projection_lowering) gives
# (replacement, weights), or None to keep the layer.
layer_types.define(HadamardClassifier, lowering=lambda layer, _: _hadamard.lowered(layer))
layer_types.define(ProjectionLayer, lowering=_projection.lowered)


def lowered_copy(model, projection_lowering="builtin", unroll_recurrent=False):
    """What the converter sees: a functional copy of `model` with every export lowering applied."""

    def replace(layer):
        return _in_float32(layer, lowered(layer))

    def lowered(layer):
        stripped = stripped_replacement(layer)
        if stripped is not None:
            return stripped
        if unroll_recurrent:
            unrolled = _unrolled(layer)
            if unrolled is not None:
                return unrolled
        lowering = layer_types.lookup(layer).lowering
        return lowering(layer, projection_lowering) if lowering else None

    return clone_with(as_functional(model), replace, call_function=_inline_projections)


def _unrolled(layer):
    """`(unrolled copy, weights)` of a recurrent layer (or a `Bidirectional` of one) whose sequence length
    is known; None for any other layer, one already unrolled, a stateful one, or one called on
    sequences of unknown (or several) lengths."""
    inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
    if not isinstance(inner, keras.layers.RNN) or inner.unroll or inner.stateful:
        return None
    try:
        steps = layer.input.shape[1]
    except (AttributeError, ValueError):  # called more than once: Keras has no one input
        return None
    if steps is None:
        return None
    config = layer.get_config()
    for key in ("layer", "backward_layer"):
        if isinstance(config.get(key), dict):
            config[key]["config"]["unroll"] = True
    if not isinstance(layer, keras.layers.Bidirectional):
        config["unroll"] = True
    return type(layer).from_config(config), layer.get_weights()


def computes_in_half_precision(layer):
    """Whether `layer` computes in float16 or bfloat16 (a `mixed_float16` / `mixed_bfloat16` policy)."""
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "compute_dtype", "float32") in ("float16", "bfloat16")


def _in_float32(layer, replacement):
    """`replacement` (or, for None, `layer`) made to compute in float32, as the converter's builtin
    operators need: a mixed-precision layer's variables are float32 already, only its computation
    is not. Layers already in float32 are left as they are."""
    new_layer, weights = replacement if replacement is not None else (layer, None)
    if is_graph_model(new_layer) or not computes_in_half_precision(new_layer):
        return replacement
    source = new_layer if new_layer.built else layer
    config = dict(new_layer.get_config(), dtype="float32")
    if weights is None:
        weights = source.get_weights()
    return new_layer.__class__.from_config(config), weights


def _inline_projections(layer, *args, **kwargs):
    """Calls a nested model holding a ProjectionLayer layer by layer, so the cut can reach it."""
    if is_graph_model(layer) and _projection.holds_projection(layer):
        return _keras_private.run_through_graph(as_functional(layer), args[0], operation_fn=lambda operation: operation)
    return layer(*args, **kwargs)


