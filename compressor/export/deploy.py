"""Deployable variants of an exported ONNX model: FP16 / INT8-QDQ ONNX files (evaluated on onnxruntime CPU)
and TensorRT engines (built where TensorRT and a GPU exist), plus the start-of-run dependency check.

- ``precision_variants``: for each of ``export.precisions``, the variant file next to the FP32 export
  (``model.fp16.onnx``, ``model.int8.onnx``), its top-1 on the test split computed by onnxruntime CPU (the
  numbers a CPU deployment gets, not PyTorch's), and its largest logit difference to the FP32 file.
- ``build_engines``: one engine per ``export.tensorrt.precisions`` (``model.<precision>.engine`` + build
  log), from the ONNX file the version's build plan asks for (TensorRT 11 is strongly typed: it needs the
  FP16 / QDQ file), one optimization profile from batch 1 to the largest profiled batch, a timing cache
  reused across builds, and parity against onnxruntime on the same images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import artifacts
from ..progress import track


@dataclass(frozen=True)
class VariantArtifact:
    precision: str
    path: Path
    accuracy: float  # top-1 in percent on the test split, onnxruntime CPU
    images: int
    max_abs_diff: float  # largest |variant - FP32 ONNX| on the parity images' logits
    seconds: float

    def to_json(self) -> dict:
        return {"path": self.path.name, "accuracy": round(self.accuracy, 4), "images": self.images,
                "max_abs_diff_vs_fp32": self.max_abs_diff, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class EngineArtifact:
    precision: str
    path: Path
    log: Path
    onnx_variant: str
    tensorrt_version: str
    max_abs_diff: float  # largest |engine - onnxruntime| on the parity images' logits
    size_bytes: int
    seconds: float

    def to_json(self) -> dict:
        return {"path": self.path.name, "log": self.log.name, "onnx_variant": self.onnx_variant,
                "tensorrt": self.tensorrt_version, "max_abs_diff_vs_onnxruntime": self.max_abs_diff,
                "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3)}


def precision_variants(onnx_path: Path, precisions: Iterable[str], int8_cfg, calibration: Callable[[], Iterable],
                       test_loader, parity: np.ndarray) -> dict[str, VariantArtifact]:
    """Write, evaluate and compare each precision variant of ``onnx_path``; ``calibration()`` yields image batches."""
    from .precision import make_variant, onnx_parity, to_int8_qdq

    variants = {}
    for precision in precisions:
        start = time.perf_counter()
        if precision == "int8":
            path = to_int8_qdq(onnx_path, artifacts.variant_file(onnx_path, "int8"), calibration(),
                               per_channel=int8_cfg.per_channel, method=int8_cfg.method,
                               activations=int8_cfg.activations)
        else:
            path = make_variant(onnx_path, precision, onnx_path.parent).path
        accuracy, images = evaluate_onnx(path, test_loader, f"{path.name}: test")
        variants[precision] = VariantArtifact(precision=precision, path=path, accuracy=accuracy, images=images,
                                              max_abs_diff=onnx_parity(onnx_path, path, parity),
                                              seconds=time.perf_counter() - start)
    return variants


def evaluate_onnx(path: Path, loader, description: str = "evaluate") -> tuple[float, int]:
    """Top-1 (percent) and image count of an ONNX classifier on onnxruntime CPU over ``loader``."""
    from .onnx import _cpu_session, _run

    session = _cpu_session(Path(path))
    name = session.get_inputs()[0].name
    correct, total = 0, 0
    for images, labels in track(loader, description):
        logits = _run(session, name, images.numpy().astype(np.float32), path)
        correct += int((logits.argmax(1) == labels.numpy()).sum())
        total += int(labels.numel())
    return (100.0 * correct / total if total else float("nan")), total


def build_engines(onnx_path: Path, variants: dict[str, VariantArtifact], cfg, batch_sizes: list[int],
                  input_shape: tuple[int, int, int], parity: np.ndarray,
                  make_variant: Callable[[str], Path]) -> dict[str, EngineArtifact]:
    """One TensorRT engine per ``cfg.precisions`` in ``onnx_path``'s folder; ``make_variant(precision)`` writes
    an ONNX variant the plan needs that ``variants`` does not have yet."""
    from .tensorrt import build_engine, builder_plan, major_version, require_tensorrt
    from .tensorrt_run import engine_parity

    version = require_tensorrt()
    max_batch = cfg.max_batch or max(batch_sizes)
    engines = {}
    for precision in cfg.precisions:
        start = time.perf_counter()
        plan = builder_plan(major_version(version), precision, cfg.workspace_mb, 1, cfg.opt_batch or max_batch,
                            max_batch, input_shape, cfg.timing_cache or artifacts.timing_cache_file(onnx_path))
        source = _plan_source(plan.onnx_variant, onnx_path, variants, make_variant)
        engine = artifacts.engine_file(onnx_path, precision)
        info = build_engine(source, engine, plan, artifacts.build_log_file(onnx_path, precision))
        diff = engine_parity(engine, source, parity[:max_batch])
        engines[precision] = EngineArtifact(precision=precision, path=engine, log=info.log_path,
                                            onnx_variant=plan.onnx_variant, tensorrt_version=info.tensorrt_version,
                                            max_abs_diff=diff, size_bytes=info.size_bytes,
                                            seconds=time.perf_counter() - start)
    return engines


def _plan_source(variant: str, onnx_path: Path, variants: dict, make_variant: Callable[[str], Path]) -> Path:
    if variant == "fp32":
        return onnx_path
    if variant in variants:
        return variants[variant].path
    return make_variant(variant)
