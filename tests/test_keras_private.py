"""The private Keras API this package relies on, in one module (`keras_compact._keras_private`).

When a Keras release changes one of these entry points, the test for it fails naming it, instead of
pruning, cloning or export failing somewhere far from the cause.
"""

import pathlib
import re

import keras
import numpy as np
import pytest

from keras_compact import _keras_private

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Private names of Keras's that only `_keras_private` may read (docstring examples' printed reprs aside).
PRIVATE = ("keras.src", "_flatten_layers", "_nodes_by_depth", "_run_through_graph", "_call_has_training_arg",
           "_call_has_mask_arg", "_keras_history", "_inputs_struct", "_outputs_struct", "_loss_tracker",
           "_compile_metrics", "_query_dense", "_key_dense", "_value_dense", "_output_dense",
           "_aggregate_additional_loss", '"_outputs"', "_maybe_build", "get_keras_mask", "_dropout_layer", "_call_signature", "_call_context_args")


def _model():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    hidden = keras.layers.Dense(4, name="hidden")(keras.layers.Concatenate(name="joined")([inputs["a"], inputs["b"]]))
    inner = keras.Sequential([keras.Input((4,), name="input_layer"), keras.layers.Dropout(0.5, name="drop")],
                             name="inner")
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(inner(hidden)), name="outer")


def _summing():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))


def _built(attention):
    sequence = keras.Input((5, 6))
    attention(sequence, sequence)
    return attention


class _Recorder(_keras_private.BuildsFromArguments, keras.layers.Wrapper):
    def builds_from_arguments(self):
        return True

    def build_from_arguments(self, arguments):
        self.seen = sorted(arguments)
        _keras_private.build_for_call(self.layer, [arguments["inputs"], *arguments["args"]], arguments["kwargs"])
        self.built = True

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)


def _recorded():
    query, value = keras.Input((5, 6)), keras.Input((4, 3))
    recorder = _Recorder(keras.layers.MultiHeadAttention(2, 4))
    recorder(query, value, use_causal_mask=False)
    return recorder


def _dict_outputs():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, {"q": keras.layers.Dense(1)(inputs), "p": keras.layers.Dense(2)(inputs)})


def _compiled():
    model = _model()
    model.compile("sgd", "mse", metrics=["mae"])
    return model


CHECKS = {
    "Functional": lambda: isinstance(_model(), _keras_private.Functional),
    "sublayers": lambda: [layer.name for layer in _keras_private.sublayers(_model(), include_self=False)]
    == ["a", "b", "joined", "hidden", "inner", "drop", "input_layer", "out"],  # nested models' layers too
    "nodes": lambda: sorted(node.operation.name for node in _keras_private.nodes(_model()))
    == ["a", "b", "hidden", "inner", "joined", "out"],
    "nodes_in_order": lambda: [node.operation.name for node in _keras_private.nodes_in_order(_model())][-3:]
    == ["hidden", "inner", "out"],
    "run_through_graph": lambda: np.asarray(_keras_private.run_through_graph(
        _summing(), np.ones((1, 2), "float32"), operation_fn=lambda operation: operation)).tolist() == [[2.0]],
    "call_has_training_arg": lambda: _keras_private.call_has_training_arg(keras.layers.Dropout(0.5))
    and not _keras_private.call_has_training_arg(keras.layers.Flatten()),
    "call_has_mask_arg": lambda: _keras_private.call_has_mask_arg(keras.layers.LSTM(1))
    and not _keras_private.call_has_mask_arg(keras.layers.Flatten()),
    "BuildsFromArguments": lambda: _recorded().seen == ["args", "inputs", "kwargs"],
    "build_for_call": lambda: [tuple(p.kernel.shape) for p in _keras_private.attention_projections(_recorded().layer)]
    == [(6, 2, 4), (3, 2, 4), (3, 2, 4), (2, 4, 6)],
    "keras_mask": lambda: _keras_private.keras_mask(keras.layers.Embedding(3, 2, mask_zero=True)(
        keras.Input((4,), dtype="int32"))) is not None and _keras_private.keras_mask(keras.Input((4,))) is None,
    "with_masks": lambda: sorted(_keras_private.with_masks(
        keras.layers.MultiHeadAttention(2, 2), [keras.layers.Embedding(3, 2, mask_zero=True)(keras.Input((4,), dtype="int32"))] * 2,
        {})) == ["query_mask", "value_mask"],
    "keras_history": lambda: _keras_private.keras_history(_model().outputs[0]).operation.name == "out",
    "inputs_struct": lambda: sorted(_keras_private.inputs_struct(_model())) == ["a", "b"],
    "attention_projections": lambda: [tuple(p.kernel.shape) for p in _keras_private.attention_projections(
        _built(keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)))]
    == [(6, 4, 4), (6, 2, 4), (6, 2, 4), (4, 4, 6)],
    "attention_mask": lambda: keras.ops.convert_to_numpy(_keras_private.attention_mask(
        _built(keras.layers.MultiHeadAttention(2, 3)), keras.ops.ones((1, 3, 6)), keras.ops.ones((1, 3, 6)), None,
        use_causal_mask=True)).tolist() == [[[True, False, False], [True, True, False], [True, True, True]]],
    "attention_dropout": lambda: _keras_private.attention_dropout(
        _built(keras.layers.MultiHeadAttention(2, 3, dropout=0.25))).rate == 0.25,
    "outputs_struct": lambda: sorted(_keras_private.outputs_struct(_dict_outputs())) == ["p", "q"],
    "graph_outputs": lambda: [t.name for t in _keras_private.graph_outputs(_model())] == [_model().outputs[0].name]
    or len(_keras_private.graph_outputs(_model())) == 1,
    "loss_tracker": lambda: isinstance(_keras_private.loss_tracker(_compiled()), keras.metrics.Mean),
    "compile_metrics": lambda: _keras_private.compile_metrics(_compiled()) is not None
    and _keras_private.compile_metrics(_model()) is None,
    "additional_loss": lambda: float(_keras_private.additional_loss(_model(), keras.ops.ones((2, 2), "int32"))) == 4.0,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_private_keras_entry_point_still_works_on_this_keras(name):
    try:
        works = CHECKS[name]()
    except Exception as error:  # noqa: BLE001 - the failure names the entry point, whatever broke
        pytest.fail(f"Keras {keras.__version__} changed the private API behind _keras_private.{name}: {error!r}")
    assert works, f"Keras {keras.__version__} changed what the private API behind _keras_private.{name} gives"


def test_every_entry_point_is_checked():
    public = {name for name in vars(_keras_private) if not name.startswith("_") and name != "keras"}
    assert public == set(CHECKS)


def test_no_other_module_reads_private_keras_api():
    readers = []
    for path in sorted([*(ROOT / "keras_compact").rglob("*.py"), *(ROOT / "tflite_export").rglob("*.py")]):
        if path.name == "_keras_private.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = re.sub(r"#.*|<keras\.src[^>]*>", "", line)
            found = [name for name in PRIVATE if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", code)]
            if found:
                readers.append(f"{path.relative_to(ROOT)}:{number}: {', '.join(found)}")
    assert not readers, "read private Keras API outside keras_compact/_keras_private.py:\n" + "\n".join(readers)
