"""How each `HadamardClassifier` is written to the `.tflite` file.

Either a FULLY_CONNECTED holding the `[C, N]` +/-1 matrix (times the scale, which
the converter folds in: every entry is +-scale, so int8 weights with the scale
`scale / 127` store it exactly), or the fast Walsh-Hadamard transform's own
operators (PAD, RESHAPE/TRANSPOSE and one small FULLY_CONNECTED per factor,
STRIDED_SLICE): a file that does not grow with `N * C`. In LiteRT the transform
is the faster one as soon as the matmul costs about as much as the transform
(`LITERT_CROSSOVER`, measured by `benchmarks/fixed_classifier.py`: at 512 x 10
the FULLY_CONNECTED takes 1.8 us against 2.8 us, at 512 x 100 4.9 us against
2.0 us), so a classifier left at `implementation="auto"` is written that way; an
explicit `"matmul"` or `"fwht"` is kept.
"""

import contextlib

from keras_compact.layers import HadamardClassifier
from keras_compact.ops import walsh_hadamard

LITERT_CROSSOVER = 1.0


def lowering(layer):
    """`"matmul"` or `"fwht"`: how `layer` (a built HadamardClassifier) is written."""
    if layer.implementation != "auto":
        return layer.implementation
    if layer.matrix == "hadamard" and walsh_hadamard.transform_is_cheaper(
        layer.num_features, layer.num_classes, ratio=LITERT_CROSSOVER
    ):
        return "fwht"
    return "matmul"


def lowerings(model):
    """`{layer name: lowering}` for every HadamardClassifier of `model`."""
    return {layer.name: lowering(layer) for layer in _classifiers(model)}


@contextlib.contextmanager
def lowered(model):
    """While converting: every HadamardClassifier of `model` set to its export lowering.

    Yields `{layer name: lowering}`; the layers' own settings come back afterwards.
    """
    layers = _classifiers(model)
    saved = [layer.implementation for layer in layers]
    chosen = lowerings(model)
    try:
        for layer in layers:
            layer.implementation = chosen[layer.name]
        yield chosen
    finally:
        for layer, implementation in zip(layers, saved):
            layer.implementation = implementation


def _classifiers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, HadamardClassifier)]
