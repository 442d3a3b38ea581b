"""Parity on the device: what each accelerated backend computes against onnxruntime CPU, on the same images.

The reference is onnxruntime CPU running the same file on the device (it is installed wherever compressor
is). The images are ``export.parity_images`` seeded standard-normal tensors of the model's input shape (the
device has no data set; parity is about the runtime, not the data). An FP32 graph's row carries the run's
parity limit (``export.parity_tolerance`` + ``export.parity_rtol`` x max |reference output|) and becomes a
gate; FP16 / INT8 files and engines are reported (their deviation is the precision's, not a bug).
onnxruntime CPU itself is the reference, so it has no row.
"""

from __future__ import annotations

from pathlib import Path

from .. import artifacts
from .folder import ONNX_NAMES, FinishedRun

SEED = 0


def parity_images(run: FinishedRun):
    import numpy as np

    n = run.recipe.export.parity_images
    return np.random.default_rng(SEED).standard_normal((n, *run.input_shape), dtype=np.float32)


def device_parity(run: FinishedRun, backends: list[str], engines: dict) -> list[dict]:
    """One row per (artifact, backend) other than onnxruntime CPU; engines against the ONNX file they came from."""
    from ..export.precision import run_onnx

    images = parity_images(run)
    cfg = run.recipe.export
    references: dict[tuple[Path, int], object] = {}  # onnxruntime CPU on a file, once for every backend

    def reference_of(path: Path, n: int):
        if (path, n) not in references:
            references[(path, n)] = run_onnx(path, images[:n])
        return references[(path, n)]

    rows = []
    for backend in backends:
        if backend in ("onnxruntime-cpu", "tensorrt"):
            continue
        for name, path in run.files.items():
            reference = reference_of(path, len(images))
            rows.append(_row(name, backend, _diff(backend_outputs(path, backend, images), reference), reference, cfg,
                             gated=name in ONNX_NAMES))
    for name, engine in engines.items():
        from ..export.tensorrt_run import engine_parity

        reference = reference_of(engine.source, engine.max_batch)
        diff = engine_parity(engine.path, engine.source, images[: engine.max_batch])
        rows.append(_row(name, "tensorrt", diff, reference, cfg, gated=engine.precision == "fp32"))
    return rows


def backend_outputs(path: Path, backend: str, images):
    """The first output of ``path`` on ``backend`` for ``images`` (float32 N x C x H x W)."""
    if backend == "openvino-cpu":
        from ..profiling.openvino import openvino_outputs

        return openvino_outputs(Path(path), images)
    from ..profiling.backends import ort_session

    session = ort_session(Path(path), backend, threads=1)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _diff(got, expected) -> float:
    import numpy as np

    if got.shape != expected.shape:
        return float("inf")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    return diff if diff == diff else float("inf")


def _row(name: str, backend: str, diff: float, reference, cfg, gated: bool) -> dict:
    import numpy as np

    from ..export.onnx import parity_limit

    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    limit = parity_limit(cfg.parity_tolerance, cfg.parity_rtol, scale) if gated else None
    return {"artifact": name, "backend": backend, "max_abs_diff": diff, "reference_max_abs": round(scale, 6),
            "limit": limit, "gated": gated, "images": int(reference.shape[0]),
            "precision": _precision(name)}


def _precision(name: str) -> str:
    for precision in artifacts.QUANTIZED:
        if name.endswith(f"_{precision}") or name.endswith(f"_{precision}_engine"):
            return precision
    return "fp32"
