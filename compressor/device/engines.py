"""TensorRT engines built on the device, from the run's ONNX files (an engine loads only on the GPU model and
TensorRT version it was built with, so a CI host cannot ship one).

One engine per side (baseline, pruned) and precision, in ``device/<name>/engines/``. Which ONNX file each
build parses comes from the installed major version's build plan (``export/tensorrt.builder_plan``):
TensorRT 10 reads the FP32 graph with precision flags, TensorRT 11 (strongly typed) reads the FP16 graph
(converted here when the run has none) or an INT8 QDQ graph. An INT8 QDQ graph needs calibration images,
which a device does not have: it must come from the run (``export.precisions: [int8]`` with
``export.int8.activations: int8``, the symmetric form TensorRT takes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts
from ..errors import ExportError
from .folder import FinishedRun


@dataclass(frozen=True)
class DeviceEngine:
    precision: str
    path: Path
    source: Path           # the ONNX file it was built from (its parity reference)
    log: Path
    tensorrt_version: str
    max_batch: int
    build_seconds: float
    size_bytes: int

    def to_json(self) -> dict:
        return {"precision": self.precision, "path": f"engines/{self.path.name}", "source": self.source.name,
                "log": f"engines/{self.log.name}", "tensorrt": self.tensorrt_version, "max_batch": self.max_batch,
                "build_seconds": round(self.build_seconds, 3), "size_bytes": self.size_bytes}


def build_device_engines(run: FinishedRun, out_dir: Path) -> dict[str, DeviceEngine]:
    """Every (side, ``export.tensorrt.precisions``) engine, built here."""
    from ..export.tensorrt import build_engine, builder_plan, major_version, require_tensorrt

    version = require_tensorrt("compress deploy --backend tensorrt")
    cfg = run.recipe.export.tensorrt
    max_batch = cfg.max_batch or max(run.recipe.profile.batch_sizes)
    out_dir.mkdir(parents=True, exist_ok=True)
    engines = {}
    for side in (artifacts.BASELINE, artifacts.PRUNED):
        for precision in cfg.precisions:
            start = time.perf_counter()
            plan = builder_plan(major_version(version), precision, cfg.workspace_mb, 1, cfg.opt_batch or max_batch,
                                max_batch, run.input_shape, out_dir / "timing.cache")
            source = engine_source(run, side, plan.onnx_variant, out_dir)
            stem = f"{side}.{precision}"
            info = build_engine(source, out_dir / f"{stem}.engine", plan, out_dir / f"{stem}.build.log")
            engines[artifacts.engine_name(side, precision)] = DeviceEngine(
                precision=precision, path=info.path, source=source, log=info.log_path, tensorrt_version=version,
                max_batch=max_batch, build_seconds=time.perf_counter() - start, size_bytes=info.size_bytes)
    return engines


def engine_source(run: FinishedRun, side: str, variant: str, out_dir: Path) -> Path:
    """The ONNX file a build plan's ``variant`` (fp32 | fp16 | int8) needs for ``side``."""
    from ..export.precision import make_variant

    fp32 = run.files[f"{side}_onnx"]
    if variant == "fp32":
        return fp32
    if variant == "fp16":
        found = run.files.get(artifacts.variant_name(side, "fp16"))
        return found or make_variant(fp32, "fp16", out_dir / side).path
    symmetric = artifacts.tensorrt_int8_file(fp32)
    if symmetric.is_file():
        return symmetric
    found = run.files.get(artifacts.variant_name(side, "int8"))
    if found is not None and run.recipe.export.int8.activations == "int8":
        return found
    raise ExportError(f"an INT8 engine of {side} needs a symmetric INT8 QDQ graph from the run (calibration images "
                      "stay with the run host): run the recipe with export.precisions: [int8] and "
                      "export.int8.activations: int8, or deploy with --set 'export.tensorrt.precisions=[fp16]'")
