"""tflite_export: trained keras-compact models to verified `.tflite` files.

The names below load on first use, so that `keras-compact --help` (whose entry
point lives in this package) answers without starting TensorFlow.
"""

import importlib

_PUBLIC = {
    "CompressionReport": "tflite_export._compress",
    "compress": "tflite_export._compress",
    "ConverterCrashed": "tflite_export._convert",
    "ExportReport": "tflite_export._export",
    "VerifyReport": "tflite_export._export",
    "OutputReport": "tflite_export._compare",
    "export": "tflite_export._export",
    "predict": "tflite_export._export",
    "verify": "tflite_export._export",
    "InspectReport": "tflite_export._inspect",
    "TensorInfo": "tflite_export._inspect",
    "inspect": "tflite_export._inspect",
    "read_metadata": "tflite_export._inspect",
    "LayerError": "tflite_export._quantization_report",
    "QuantizationReport": "tflite_export._quantization_report",
    "quantization_report": "tflite_export._quantization_report",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tflite_export' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
