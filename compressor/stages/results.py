"""What each stage returns: small frozen dataclasses of numbers, strings, paths, JSON-like facts (a method's
details, the pruning history) and other frozen results.

They are the run's facts for the gates and the report, and, serialised by ``compressor.codec`` (paths
relative to the run folder), the resume records of ``.stages/<stage>.json`` (``ledger.py``). No result holds
a live module or tensor: the network a stage leaves behind is recorded as a plain state_dict beside its
record, and rebuilt from the pruning history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts
from ..export.artifacts import OnnxArtifact, StripeArtifact
from ..export.deploy import EngineArtifact, VariantArtifact
from ..profiling.latency import LatencyRatio, LatencyStats
from ..profiling.plan import headline_ratios
from ..surgery.prune import Surgery
from ..training.evaluate import EvalResult
from ..training.finetune import FinetuneResult


@dataclass(frozen=True)
class Baseline:
    test: EvalResult
    val: EvalResult | None  # None when nothing trains (Recipe.validates): nothing reads it
    macs_torch: int
    params_torch: int
    onnx: OnnxArtifact | None  # None with export.onnx: false
    variants: dict[str, VariantArtifact]  # precision -> variant of baseline/model.onnx
    engines: dict[str, EngineArtifact]  # precision -> engine

    @property
    def summary(self) -> str:
        return f"{self.test.describe()} on {self.test.images} test images, {self.macs_torch / 1e6:.2f} M MACs"


@dataclass(frozen=True)
class Pruned:
    surgery: Surgery
    retrain_free: EvalResult  # on test, before fine-tuning
    bn_images: int  # images used to re-estimate BatchNorm statistics (0: not done)
    method_details: dict  # what the method reports about itself (e.g. PFP's epsilon)
    masked_vs_pruned: float | None  # training-time methods: max |masked - physically pruned| on logits

    @property
    def summary(self) -> str:
        s = self.surgery
        how = "counts allocated by the method" if s.allocation == "method" else f"global ratio {s.global_ratio:.3f}"
        if s.latency:
            how = (f"latency target {s.latency['target_speedup']:.2f}x: {s.latency['measured_speedup']:.2f}x measured "
                   f"on {s.latency['backend']}, batch {s.latency['batch']}")
        return (f"{len(s.pruned_groups)} groups pruned ({how}), MACs -{s.macs_reduction_pct:.1f}%, "
                f"retrain-free {self.retrain_free.describe()}")


@dataclass(frozen=True)
class Tuned:
    result: FinetuneResult
    test: EvalResult  # of the final model
    val: EvalResult | None  # None when nothing trains (Recipe.validates)
    macs_torch: int  # of the final (pruned) PyTorch model, per image
    params_torch: int
    files: dict[str, Path]  # "state_dict" / "history" -> the saved pruned model

    @property
    def summary(self) -> str:
        best = f", best epoch {self.result.best_epoch}" if self.result.best_epoch else " (no fine-tuning)"
        return f"{self.test.describe()} on test{best}"


@dataclass(frozen=True)
class Exported:
    onnx: OnnxArtifact
    stripe: StripeArtifact | None
    variants: dict[str, VariantArtifact]
    engines: dict[str, EngineArtifact]

    @property
    def summary(self) -> str:
        how = "" if self.onnx.exporter == "dynamo" else f" ({self.onnx.exporter} exporter)"
        outputs = f" (worst of {len(self.onnx.outputs)} outputs)" if self.onnx.outputs else ""
        text = (f"{self.onnx.path.name}{how}: parity {self.onnx.max_abs_diff:.2e} at max |output| "
                f"{self.onnx.reference_max_abs:.3g}{outputs}, {self.onnx.macs / 1e6:.2f} M MACs on ONNX")
        if self.stripe is not None:
            text += (f"; {self.stripe.path.name}: {self.stripe.stripe_layers}/{len(self.stripe.layers)} layers as "
                     f"stripes, parity {self.stripe.max_abs_diff:.2e}, {self.stripe.macs / 1e6:.2f} M MACs")
        for v in self.variants.values():
            text += f"; {v.path.name}: top-1 {v.accuracy:.2f}% (onnxruntime)"
        for e in self.engines.values():
            text += f"; {e.path.name}: parity {e.max_abs_diff:.2e}"
        return text


@dataclass(frozen=True)
class Profiled:
    stats: tuple[LatencyStats, ...]
    ratios: tuple[LatencyRatio, ...]

    @property
    def summary(self) -> str:
        rows = headline_ratios(self.ratios)
        several = len({(r.artifact, r.backend) for r in rows}) > 1
        parts = [(f"{r.artifact} vs {r.reference} on {r.backend} " if several else "")
                 + f"batch {r.batch}: {r.speedup:.2f}x" for r in rows]
        return "speedup " + ", ".join(parts) if parts else "nothing compared"


@dataclass(frozen=True)
class Results:
    """Every stage's result of one run, for the gates and the report (``exported`` / ``profiled`` are None
    when the recipe turned that stage off)."""

    baseline: Baseline
    pruned: Pruned
    tuned: Tuned
    exported: Exported | None
    profiled: Profiled | None

    @property
    def onnx_exports(self) -> dict[str, OnnxArtifact]:
        return onnx_exports(self.baseline, self.exported)

    @property
    def deployables(self) -> dict[str, VariantArtifact | EngineArtifact]:
        return deployables(self.baseline, self.exported)


def onnx_exports(baseline: Baseline, exported: Exported | None) -> dict[str, OnnxArtifact]:
    """The FP32 ONNX files of a run under their names (``baseline_onnx``, ``pruned_onnx``, ``stripe_onnx``),
    those that were exported."""
    found = {artifacts.BASELINE_ONNX: baseline.onnx}
    if exported is not None:
        found.update({artifacts.PRUNED_ONNX: exported.onnx, artifacts.STRIPE_ONNX: exported.stripe})
    return {name: artifact for name, artifact in found.items() if artifact is not None}


def deployables(baseline: Baseline, exported: Exported | None) -> dict[str, VariantArtifact | EngineArtifact]:
    """Every precision variant and engine of a run under its name in reports and latency tables
    (``baseline_int8``, ``pruned_fp16``, ``baseline_fp16_engine``, ``pruned_int8_engine``, ...)."""
    sides = [(artifacts.BASELINE, baseline.variants, baseline.engines)]
    if exported is not None:
        sides.append((artifacts.PRUNED, exported.variants, exported.engines))
    found: dict = {}
    for side, variants, _ in sides:
        found.update({artifacts.variant_name(side, p): v for p, v in variants.items()})
    for side, _, engines in sides:
        found.update({artifacts.engine_name(side, p): e for p, e in engines.items()})
    return found
