"""How each `HadamardClassifier` is written to the `.tflite` file.

Two lowerings give the same logits:

- `"matmul"`: a FULLY_CONNECTED holding the `[C, N]` +/-1 matrix times the scale
  (the converter folds the scale in: every entry is +-scale, so int8 weights with
  the quantization scale `scale / 127` store it exactly);
- `"fwht"`: the fast Walsh-Hadamard transform's own operators (PAD, then per
  factor RESHAPE/TRANSPOSE and a FULLY_CONNECTED with a `m x m` Hadamard block,
  STRIDED_SLICE), here with blocks of at most `LITERT_RADIX`: the file does not
  grow with `N * C`.

A classifier left at `implementation="auto"` is written with the transform.
`benchmarks/fixed_classifier.py` measured it smaller at every shape and faster in
LiteRT from 100 classes on (256 x 100: 1.3 us against 2.6 us per example;
4096 x 21841: 0.06 ms against 13.8 ms, and 7.1 KB against 358 MB); with 10 classes
the FULLY_CONNECTED is faster by at most 0.5 us per example (512 x 10: 1.8 us
against 2.1 us) but stores 20 KB where the transform stores 1 KB of blocks.
An explicit `implementation="matmul"` or `"fwht"` is kept. The export's lowered copy
(`_lowering.lowered_copy`) holds new classifiers set this way; the user's are untouched.
"""

from keras_compact import _keras_private
from keras_compact.layers import HadamardClassifier

# Blocks of at most 16 x 16 (1 KB): in LiteRT as fast as larger ones from 512
# features on and faster at 2048 (see the benchmark's radix table).
LITERT_RADIX = 16


def lowering(layer):
    """`"matmul"` or `"fwht"`: how `layer` (a HadamardClassifier) is written."""
    if layer.implementation != "auto":
        return layer.implementation
    return "fwht" if layer.matrix == "hadamard" else "matmul"


def lowered(layer):
    """`(classifier, weights)`: a new classifier of `layer`'s class set to its lowering, with blocks of
    at most `LITERT_RADIX`, for the export's lowered copy (`layer` is not changed)."""
    config = dict(layer.get_config(), implementation=lowering(layer))
    classifier = type(layer).from_config(config)  # a subclass stays itself
    classifier.transform_radix = LITERT_RADIX
    return classifier, layer.get_weights()


def lowerings(model):
    """`{layer name: lowering}` for every HadamardClassifier of `model`."""
    return {layer.name: lowering(layer) for layer in _classifiers(model)}


def _classifiers(model):
    return [layer for layer in _keras_private.sublayers(model) if isinstance(layer, HadamardClassifier)]
