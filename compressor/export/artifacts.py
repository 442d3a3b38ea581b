"""Export orchestration: one network -> its ONNX file (parity-checked, MACs counted on the graph), the stripe
graph, the precision variants and the TensorRT engines, as the baseline and export stages ask for them.

- :func:`export_artifact`: a CPU copy of the model to ONNX, parity against PyTorch on real images (the
  ``export.parity_images`` first calibration images), MACs and params counted on the exported graph. The
  dynamo exporter first; when it raises, or its file misses the parity limit (``export.parity_tolerance``
  + ``export.parity_rtol`` x max |logits|), the TorchScript exporter, and the file that passes (else the
  closer one) is kept; the artifact records which exporter made it.
- :func:`export_stripe_artifact`: the stripe-decomposed (hybrid) rewrite of the dense-slim file when a KxK
  conv has zero stripes (SWP), with the per-layer choice measured on onnxruntime CPU at ``batch`` and
  ``threads`` (``export/hybrid.py`` says why the whole graph is checked too), parity and MACs on the graph.
- :func:`export_variants`: ``export.precisions`` (FP16, INT8-QDQ), each evaluated on onnxruntime CPU.
- :func:`export_engines`: TensorRT engines, parity-checked against onnxruntime. An engine whose plan needs an
  INT8 file gets a *symmetric* one (zero point 0, the QDQ form TensorRT takes), made for the engine alone
  when the recipe's INT8 variant is asymmetric (``export.int8.activations: uint8``, onnxruntime CPU's fast
  U8S8 kernels).
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .. import artifacts
from .._io import write_json
from ..config import ExportConfig, Int8Config, StripeExportConfig
from ..errors import ExportError
from .deploy import EngineArtifact, VariantArtifact
from .hybrid import LayerChoice
from .onnx import Parity


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    max_abs_diff: float  # largest |PyTorch - onnxruntime| on the parity images' logits
    reference_max_abs: float  # largest |PyTorch logit| on the same images (the relative limit's scale)
    exporter: str  # "dynamo" or "torchscript" (the stripe graph: that of the dense file it rewrites)
    macs: int  # counted on the ONNX graph, per image
    params: int
    seconds: float
    outputs: tuple = ()  # several outputs: (name, max_abs_diff, reference_max_abs) per output (export/onnx.Parity)


@dataclass(frozen=True)
class StripeArtifact(OnnxArtifact):
    layers: tuple[LayerChoice, ...] = ()  # one per KxK conv
    batch: int = 1  # the batch the choice was measured at
    graph_check: dict | None = None  # whole-graph dense vs hybrid timings (hybrid form)

    @property
    def stripe_layers(self) -> int:
        return sum(c.form == "stripe" for c in self.layers)


@dataclass(frozen=True)
class Images:
    """Where export takes its images: the parity images (the first calibration images, on the CPU) and the
    INT8 calibration stream; and how parity on them is judged (``export.parity_tolerance`` as atol,
    ``export.parity_rtol``), which decides the exporter fallback of :func:`export_artifact`."""

    parity: torch.Tensor
    calibration: Callable[[], Iterable[torch.Tensor]]  # the INT8 calibration batches, afresh each call
    atol: float
    rtol: float

    @classmethod
    def of(cls, loaders, cfg: ExportConfig) -> Images:
        def calibration() -> Iterable[torch.Tensor]:
            return (images for images, _ in loaders.calibration_loader(cfg.int8.calibration_images))

        return cls(parity_images(loaders.calibration, cfg.parity_images), calibration, atol=cfg.parity_tolerance,
                   rtol=cfg.parity_rtol)


def parity_images(calibration, count: int) -> torch.Tensor:
    """The first ``count`` images of a calibration loader, on the CPU."""
    batches, total = [], 0
    for images, _ in calibration:
        batches.append(images)
        total += images.shape[0]
        if total >= count:
            break
    return torch.cat(batches)[:count].cpu()


def export_artifact(model: nn.Module, path: Path, images: Images, opset: int) -> OnnxArtifact:
    """Export ``model`` (a CPU copy) to ONNX, check parity on real images, count MACs on the graph; the
    TorchScript exporter when the dynamo one raises or misses the parity limit (:func:`export_checked`)."""
    from ..profiling.macs import count_onnx

    start = time.perf_counter()
    cpu = copy.deepcopy(model).cpu().eval()
    exporter, parity = export_checked(cpu, Path(path), images, opset)
    cost = count_onnx(path)
    return OnnxArtifact(path=path, max_abs_diff=parity.max_abs_diff, reference_max_abs=parity.reference_max_abs,
                        exporter=exporter, macs=cost.macs, params=cost.params, seconds=time.perf_counter() - start,
                        outputs=parity.outputs)


def export_checked(model: nn.Module, path: Path, images: Images, opset: int) -> tuple[str, Parity]:
    """Write ``path`` with the dynamo exporter; if that raises or misses the limit, try the TorchScript one
    (written beside, moved over ``path`` only when it passes or comes closer). Returns the exporter of the file
    at ``path`` and its parity. Raises one :class:`ExportError` with both reasons when neither makes a file."""
    from .onnx import check_parity, export_onnx

    def attempt(exporter: str, target: Path) -> Parity:
        export_onnx(model, images.parity[:2], target, opset=opset, exporter=exporter)
        return check_parity(model, target, images.parity)

    try:
        first = attempt("dynamo", path)
    except ExportError as exc:
        first, why = None, exc
    else:
        if first.passed(images.atol, images.rtol):
            return "dynamo", first
    spare = path.with_name(f".{path.name}.torchscript")
    try:
        second = attempt("torchscript", spare)
    except ExportError as exc:
        spare.unlink(missing_ok=True)
        if first is not None:
            return "dynamo", first  # a file that misses the limit: its parity gate says so
        raise ExportError(f"ONNX export of {type(model).__name__} failed with both exporters: dynamo: "
                          f"{_reason(why)}; torchscript: {_reason(exc)}") from exc
    if first is None or second.passed(images.atol, images.rtol) or second.max_abs_diff < first.max_abs_diff:
        os.replace(spare, path)
        return "torchscript", second
    spare.unlink(missing_ok=True)
    return "dynamo", first


def _reason(exc: ExportError) -> str:
    """An export error without its "ONNX export of Net failed: " lead (the combined line says it once)."""
    return re.sub(r"^ONNX export of \S+ (\(TorchScript exporter\) )?failed: ", "", str(exc))


def export_variants(onnx: OnnxArtifact, precisions: Sequence[str], int8: Int8Config, images: Images,
                    test_loader) -> dict[str, VariantArtifact]:
    """``export.precisions`` variants of an exported file (FP16, INT8-QDQ), each evaluated on onnxruntime CPU."""
    if not precisions:
        return {}
    from .deploy import precision_variants

    return precision_variants(onnx.path, precisions, int8, images.calibration, test_loader, images.parity.numpy())


def export_engines(onnx: OnnxArtifact, variants: dict[str, VariantArtifact], cfg: ExportConfig, images: Images,
                   batch_sizes: Sequence[int], input_shape: tuple[int, int, int]) -> dict[str, EngineArtifact]:
    """TensorRT engines of ``onnx`` (``export.tensorrt``), parity-checked against onnxruntime."""
    if not cfg.tensorrt.enabled:
        return {}
    from .deploy import build_engines

    def make(precision: str) -> Path:  # an ONNX variant only the engine needs; its INT8 is symmetric (TensorRT)
        from .precision import make_variant, to_int8_qdq

        if precision != "int8":
            return make_variant(onnx.path, precision, onnx.path.parent).path
        return to_int8_qdq(onnx.path, artifacts.tensorrt_int8_file(onnx.path), images.calibration(),
                           per_channel=cfg.int8.per_channel, method=cfg.int8.method, activations="int8")

    usable = {p: v for p, v in variants.items() if p != "int8" or cfg.int8.activations == "int8"}
    return build_engines(onnx.path, usable, cfg.tensorrt, batch_sizes, input_shape, images.parity.numpy(), make)


def export_stripe_artifact(model: nn.Module, dense: OnnxArtifact, path: Path, layers_json: Path, images: Images,
                           cfg: StripeExportConfig, threads: int | None) -> StripeArtifact | None:
    """The stripe-decomposed (hybrid) graph of the dense-slim export, with parity and MACs on the graph; None
    when ``export.stripe`` is off, or ``auto`` and no KxK conv has a zero stripe. ``cfg.batch`` is set
    (the export stage defaults it to the largest profiled batch)."""
    from ..methods.swp import alive_stripes, skeleton_layers
    from ..profiling.macs import count_onnx
    from .hybrid import export_stripe
    from .onnx import check_parity

    if cfg.enabled is False:
        return None
    sparse = any(not alive_stripes(model.get_submodule(name)).all() for name in skeleton_layers(model))
    if cfg.enabled == "auto" and not sparse:
        return None
    start = time.perf_counter()
    result = export_stripe(dense.path, path, cfg.batch, threads, form=cfg.form, min_gain=cfg.min_gain)
    write_json(layers_json, {"batch": cfg.batch, "threads": threads, "form": cfg.form,
                             "whole_graph_check": result.graph_check, "layers": [c.to_json() for c in result.choices]})
    cpu = copy.deepcopy(model).cpu().eval()
    parity = check_parity(cpu, path, images.parity)
    cost = count_onnx(path)
    return StripeArtifact(path=path, max_abs_diff=parity.max_abs_diff, reference_max_abs=parity.reference_max_abs,
                          exporter=dense.exporter, macs=cost.macs, params=cost.params,
                          seconds=time.perf_counter() - start, layers=tuple(result.choices), batch=cfg.batch,
                          graph_check=result.graph_check)
