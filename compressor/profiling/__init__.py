"""Profiling stage: MACs / params of models and exported graphs, latency of artifacts per backend.

``macs`` counts multiply-accumulates with one convention on ONNX graphs and PyTorch models;
``latency`` measures artifacts interleaved on any backend of ``backends`` (onnxruntime CPU/CUDA/TensorRT
providers, PyTorch CPU/CUDA/CUDA graphs, TensorRT engines) with the same statistics, and quotes ratios;
``plot`` draws latency and throughput against batch.
Importing this package does not import torch, onnx or onnxruntime.
"""

from __future__ import annotations

from .latency import BACKEND, LatencyRatio, LatencyStats, ProfilingError, latency_ratios, profile_onnxruntime
from .macs import COUNTED_OPS, Cost, LayerCost, count_onnx, count_torch

__all__ = ["BACKEND", "COUNTED_OPS", "Cost", "LatencyRatio", "LatencyStats", "LayerCost", "ProfilingError",
           "count_onnx", "count_torch", "latency_ratios", "profile_onnxruntime"]
