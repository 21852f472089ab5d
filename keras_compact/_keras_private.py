"""Every private Keras API this package uses, in one place.

Keras 3 has no public way to walk a functional graph node by node, to list a
model's layers at every depth, or to ask whether a layer's `call` takes
`training` or `mask`; cloning, pruning, quantization-aware training and export
need all of these. Each entry point is wrapped here, and nowhere else in
`keras_compact` or `tflite_export` reads a private Keras name
(`tests/test_keras_private.py` checks both: that every entry point still works
on the installed Keras, naming the one that changed, and that no other module
reaches past this one).
"""

import keras
from keras.src.models.functional import Functional  # noqa: F401 - the class of functional models


def sublayers(layer, include_self=True):
    """`layer` and every layer inside it, at any depth (`Layer._flatten_layers`)."""
    return layer._flatten_layers(include_self=include_self)


def nodes(graph):
    """Every node of the functional `graph`, depth by depth as Keras stores them (`_nodes_by_depth`)."""
    return [node for depth_nodes in graph._nodes_by_depth.values() for node in depth_nodes]


def nodes_in_order(graph):
    """Every node of the functional `graph` in the order it computes: the inputs' first."""
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def run_through_graph(graph, inputs, operation_fn):
    """`graph`'s outputs from `inputs`, each operation called through `operation_fn(operation)`."""
    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def call_has_training_arg(layer):
    """Whether `layer.call` takes `training`."""
    return layer._call_has_training_arg


def call_has_mask_arg(layer):
    """Whether `layer.call` takes `mask`."""
    return layer._call_has_mask_arg


class BuildsFromArguments:
    """Mixin for a wrapper whose layer must see its first call's arguments, not only their shapes, to build
    (a layer called on several tensors, such as `MultiHeadAttention`). Where `builds_from_arguments()` is
    true: `build_from_arguments(arguments)` gets `{call argument name: value}` in place of Keras's
    `build(input_shape)` (`Layer._maybe_build`), builds the wrapped layer as its call would and then the
    wrapper's own `build()`; the output is traced through `call`; and the saved model keeps no build config
    (the loaded model builds it when it calls it)."""

    def _maybe_build(self, call_spec):
        if not self.built and self.builds_from_arguments():
            self.build_from_arguments(dict(call_spec.arguments_dict))
            return
        super()._maybe_build(call_spec)

    def build_from_arguments(self, arguments):
        if not self.layer.built:
            build_for_call(self.layer, [arguments["inputs"], *arguments.get("args", ())],
                           dict(arguments.get("kwargs", {})))
        self.build()

    def get_build_config(self):
        return None if self.builds_from_arguments() else super().get_build_config()

    def compute_output_spec(self, *args, **kwargs):
        if self.builds_from_arguments():  # Operation's: `call` traced on the tensors, whatever their number
            return super(keras.layers.Layer, self).compute_output_spec(*args, **kwargs)
        return super().compute_output_spec(*args, **kwargs)


def build_for_call(layer, args, kwargs):
    """Builds `layer` as its first call `layer(*args, **kwargs)` would (`Layer._maybe_build`)."""
    from keras.src.layers.layer import CallSpec

    layer._maybe_build(CallSpec(layer._call_signature, layer._call_context_args, list(args), dict(kwargs)))


def keras_mask(tensor):
    """The padding mask Keras carries with `tensor` (an `Embedding(mask_zero=True)`'s), or None."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


def with_masks(layer, args, kwargs):
    """`kwargs` plus the padding masks Keras's `Layer.__call__` would give `layer.call` for `args`/`kwargs`
    (its step 6): `mask` for a layer of one tensor argument, `<name>_mask` for each tensor argument `<name>`
    of one that takes several (a `MultiHeadAttention`'s `query_mask`, `value_mask`, `key_mask`). For a
    wrapper, whose own `__call__` filled in its own arguments only."""
    from keras.src.layers.layer import CallSpec

    spec = CallSpec(layer._call_signature, layer._call_context_args, list(args), dict(kwargs))
    filled = dict(kwargs)
    tensors = spec.tensor_arguments_dict
    if len(tensors) == 1:
        if "mask" in spec.argument_names and spec.arguments_dict.get("mask") is None:
            filled["mask"] = keras.tree.map_structure(keras_mask, next(iter(tensors.values())))
    else:
        for name, value in tensors.items():
            if f"{name}_mask" in spec.argument_names and spec.arguments_dict.get(f"{name}_mask") is None:
                filled[f"{name}_mask"] = keras.tree.map_structure(keras_mask, value)
    return filled


def keras_history(tensor):
    """The `(operation, node index, tensor index)` that made a KerasTensor, or None."""
    return getattr(tensor, "_keras_history", None)


def inputs_struct(model):
    """The structure (a list, a dict) a functional model was built from, or None."""
    return getattr(model, "_inputs_struct", None)


def attention_projections(layer):
    """`(query, key, value, output)`: the `EinsumDense` projections of a `MultiHeadAttention` (its public
    properties) or a `GroupQueryAttention` (which has none)."""
    if hasattr(layer, "query_dense"):
        return layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense
    return layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense


def attention_mask(layer, query, value, key, attention_mask=None, use_causal_mask=False):
    """The boolean `[batch, query, key]` mask a `MultiHeadAttention` attends under (None: everything): its
    `attention_mask`, the causal mask and the padding masks Keras carries with `query`, `value` and `key`,
    merged as its own call merges them."""
    return layer._compute_attention_mask(
        query, value, query_mask=keras_mask(query), value_mask=keras_mask(value),
        key_mask=None if key is None or key is value else keras_mask(key), attention_mask=attention_mask,
        use_causal_mask=use_causal_mask)


def attention_dropout(layer):
    """The `Dropout` a `MultiHeadAttention` applies to its attention probabilities."""
    return layer._dropout_layer


def outputs_struct(model):
    """The structure (a list, a dict) a functional model's outputs were given as, or None."""
    return getattr(model, "_outputs_struct", None)


def graph_outputs(model):
    """A functional model's output tensors, or None for a model without a graph."""
    return getattr(model, "_outputs", None)


def loss_tracker(model):
    """The compiled model's `loss` metric tracker, or None before `compile`."""
    return getattr(model, "_loss_tracker", None)


def compile_metrics(model):
    """The compiled model's metrics container, or None."""
    return getattr(model, "_compile_metrics", None)


def additional_loss(model, loss):
    """One added loss (`model.losses`) as `Trainer.compute_loss` sums it: cast to a float, summed."""
    return model._aggregate_additional_loss(loss)
