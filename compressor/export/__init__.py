"""Export stage: the pruned model as deployable artifacts.

``onnx`` writes the dense-slim ONNX file and checks its parity against PyTorch. Importing this package
does not import torch, onnx or onnxruntime; the functions import what they need.
"""

from __future__ import annotations

from .onnx import INPUT_NAME, OUTPUT_NAME, check_parity, eval_mode, export_onnx, onnx_input_shape

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "check_parity", "eval_mode", "export_onnx", "onnx_input_shape"]
