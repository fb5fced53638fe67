"""Export a found network: spec JSON, ONNX (checked against PyTorch), TorchScript, int8 ONNX, and a
model card with measured latency. :func:`export` is what ``nas export`` calls."""

from nas.export.card import card_markdown, machine_info, write_card
from nas.export.onnx import (OPSET, TOLERANCE, ExportCheckError, check_onnx, export_onnx, read_metadata,
                             run_onnx, session)
from nas.export.pipeline import FILE_NAMES, FORMATS, ExportConfig, ExportResult, export, measure_onnx_files
from nas.export.quantize import QuantConfig, onnx_predictions, quantize_int8
from nas.export.torchscript import check_torchscript, export_torchscript, load_torchscript

__all__ = [
    "FILE_NAMES", "FORMATS", "OPSET", "TOLERANCE", "ExportCheckError", "ExportConfig", "ExportResult", "QuantConfig",
    "card_markdown", "check_onnx", "check_torchscript", "export", "export_onnx", "export_torchscript",
    "load_torchscript", "machine_info", "measure_onnx_files", "onnx_predictions", "quantize_int8", "read_metadata", "run_onnx", "session",
    "write_card",
]
