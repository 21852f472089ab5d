"""tflite_export: trained keras-compact models to verified `.tflite` files."""

from tflite_export._export import ExportReport, export, predict
