"""Export for deployment: ONNX (``rnnlab.export.onnx``)."""

from rnnlab.export.onnx import export_onnx, export_run, to_torch, torchify

__all__ = ["export_onnx", "export_run", "to_torch", "torchify"]
