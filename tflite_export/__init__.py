"""tflite_export: trained keras-compact models to verified `.tflite` files."""

from tflite_export._export import ExportReport, VerifyReport, export, predict, verify
from tflite_export._inspect import InspectReport, TensorInfo, inspect, read_metadata
