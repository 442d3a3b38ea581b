"""What a run times and compares: one runner per (artifact, backend), and the latency ratios it quotes.

Every artifact is timed on every ``profile.backends`` backend that takes it, interleaved in one process
(``latency.measure``): ONNX files on the onnxruntime and OpenVINO backends, the PyTorch modules on the torch backends
(CPU ones at ``profile.threads``, like onnxruntime), engines on ``tensorrt``. Ratios compare each pruned
artifact with its own baseline on the same backend, the stripe graph with both dense exports, and every
FP16 / INT8 file with the FP32 baseline (``artifacts.comparisons``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import artifacts
from ..config import ProfileConfig
from .latency import LatencyRatio, LatencyStats, latency_ratios


def runners(cfg: ProfileConfig, files: dict[str, Path], engines: dict[str, Path], models: dict, input_shape: Sequence[int],
            device) -> list:
    """Runners for every backend of ``cfg``: ``files`` (name -> ONNX) on onnxruntime / OpenVINO, ``models`` (side ->
    nn.Module, timed as ``<side>_torch``) on torch, ``engines`` (name -> engine file) on tensorrt."""
    import torch

    from ..environment import available_cores
    from .backends import ONNX_BACKENDS, TORCH_BACKENDS, Target, TensorRTRunner, TorchRunner, make_runner

    threads = cfg.threads or available_cores()
    found = []
    for backend in cfg.backends:
        if backend in ONNX_BACKENDS:
            found += [make_runner(Target(name, path, backend), threads) for name, path in files.items()]
        elif backend in TORCH_BACKENDS:
            on = torch.device("cpu") if backend == "torch-cpu" else device
            found += [TorchRunner(artifacts.torch_name(side), model, input_shape, on, backend == "torch-cuda-graph")
                      for side, model in models.items()]
        else:  # tensorrt
            found += [TensorRTRunner(name, path) for name, path in engines.items()]
    return found


def measure_plan(cfg: ProfileConfig, files: dict[str, Path], engines: dict[str, Path], models: dict,
                 input_shape: Sequence[int], device) -> tuple[list[LatencyStats], list[LatencyRatio]]:
    """Every runner of :func:`runners`, measured interleaved with torch's pool at ``profile.threads``, and the
    ratios of :func:`pipeline_ratios` (the profile stage and ``compress deploy`` measure the same way)."""
    from . import latency  # looked up at call time, as the stage always did (tests stand in for measure)
    from .backends import torch_threads

    with torch_threads(cfg.threads):
        stats = latency.measure(runners(cfg, files, engines, models, input_shape, device), cfg.batch_sizes, cfg.warmup,
                        cfg.iterations, cfg.repeats)
    return stats, pipeline_ratios(stats)


def pipeline_ratios(stats: Sequence[LatencyStats]) -> list[LatencyRatio]:
    """Every pair of ``artifacts.comparisons`` measured on the same backend, backend by backend."""
    pairs = artifacts.comparisons(s.artifact for s in stats)
    rows = []
    for backend in dict.fromkeys(s.backend for s in stats):
        for artifact, reference in pairs:
            pair = [s for s in stats if s.backend == backend and s.artifact in (artifact, reference)]
            if {s.artifact for s in pair} == {artifact, reference}:
                rows += latency_ratios(pair, reference)
    return rows


def headline_ratios(ratios: Sequence[LatencyRatio]) -> list[LatencyRatio]:
    """The ratios a summary shows (``artifacts.is_headline``); the full set is in the report."""
    return [r for r in ratios if artifacts.is_headline(r.artifact, r.reference)]
