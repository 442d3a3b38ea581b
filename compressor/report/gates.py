"""Gates: the limits a run must meet for ``compress run`` to exit 0 (CI fails the job otherwise).

Every gate is a :class:`GateResult` {name, limit, value, passed, detail}. Parity gates are always on: an
exported file whose logits differ from PyTorch's by more than ``export.parity_tolerance`` (atol) +
``export.parity_rtol`` x max |PyTorch logits| is not deployable (the limit scales with the logits, as float32
rounding does).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from .. import artifacts
from ..config import ExportConfig, GatesConfig, LatencyGate
from ..export.onnx import parity_limit, parity_passed
from ..stages import Profiled, Results, onnx_exports


@dataclass(frozen=True)
class GateResult:
    name: str
    limit: float
    value: float | None  # None: not measured (the gate fails)
    passed: bool
    detail: str  # how the value was measured

    def to_json(self) -> dict:
        return asdict(self)


def gate(name: str, limit: float, value: float | None, passed: bool, detail: str) -> GateResult:
    return GateResult(name=name, limit=limit, value=value, passed=bool(passed), detail=detail)


def evaluate_gates(cfg: GatesConfig, export_cfg: ExportConfig, results: Results,
                   latency_target=None, direction: str = "higher") -> list[GateResult]:
    """Every configured gate; ``latency_target`` (``Recipe.latency_target``, resolved) adds its own: a recipe
    that asks for a speedup fails when the final artifacts do not show it. ``direction`` (``task.direction``):
    whether a higher primary metric is better; ``max_accuracy_drop`` limits how much worse it got either way."""
    baseline, tuned, exported = results.baseline, results.tuned, results.exported
    rows = _parity_gates(export_cfg, results)
    if latency_target is not None:
        rows.append(latency_target_gate(latency_target, results.profiled))
    if cfg.max_accuracy_drop is not None:
        drop = worsening(baseline.test.accuracy, tuned.test.accuracy, direction)
        rows.append(gate("max_accuracy_drop", cfg.max_accuracy_drop, round(drop, 4), drop <= cfg.max_accuracy_drop,
                         f"{baseline.test.describe()} -> {tuned.test.describe()} on the test split "
                         f"({tuned.test.images} images{', lower is better' if direction == 'lower' else ''})"))
    if cfg.min_macs_reduction_pct is not None:
        value, source = macs_reduction(results)
        rows.append(gate("min_macs_reduction_pct", cfg.min_macs_reduction_pct, round(value, 3),
                         value >= cfg.min_macs_reduction_pct, f"MACs counted on {source}"))
    for limit in cfg.max_latency_ms:
        rows.append(latency_gate(limit, results.profiled))
    if cfg.max_variant_accuracy_drop is not None:
        for precision, variant in (exported.variants if exported is not None else {}).items():
            drop = tuned.test.accuracy - variant.accuracy
            rows.append(gate(f"max_variant_accuracy_drop[{precision}]", cfg.max_variant_accuracy_drop, round(drop, 4),
                             drop <= cfg.max_variant_accuracy_drop,
                             f"pruned top-1 {tuned.test.accuracy:.2f}% (PyTorch) -> {variant.accuracy:.2f}% "
                             f"({variant.path.name}, onnxruntime CPU, {variant.images} images)"))
    return rows


def worsening(baseline: float, pruned: float, direction: str) -> float:
    """How much worse ``pruned`` is than ``baseline`` (negative: better), for a metric where ``direction`` is
    better."""
    return baseline - pruned if direction == "higher" else pruned - baseline


def macs_reduction(results: Results) -> tuple[float, str]:
    """MACs reduction in percent, counted on the exported ONNX graphs when they exist."""
    baseline, exported = results.baseline, results.exported
    if baseline.onnx is not None and exported is not None:
        return 100.0 * (1 - exported.onnx.macs / baseline.onnx.macs), "the exported ONNX graphs"
    return 100.0 * (1 - results.tuned.macs_torch / baseline.macs_torch), "the PyTorch modules (export disabled)"


def _parity_gates(export_cfg: ExportConfig, results: Results) -> list[GateResult]:
    """``parity:baseline``, ``parity:pruned``, ``parity:stripe``: one per exported FP32 ONNX file (a model with several
    outputs: one per output, ``parity:pruned[heatmap]``); the limit is ``atol + rtol x max |output|`` of that
    file's own PyTorch reference."""
    rows = []
    atol, rtol = export_cfg.parity_tolerance, export_cfg.parity_rtol
    for name, artifact in onnx_exports(results.baseline, results.exported).items():
        outputs = artifact.outputs or (("logits", artifact.max_abs_diff, artifact.reference_max_abs),)
        for output, diff, scale in outputs:
            limit = parity_limit(atol, rtol, scale)
            suffix = f"[{output}]" if len(outputs) > 1 else ""
            rows.append(gate(f"parity:{name.removesuffix('_onnx')}{suffix}", limit, diff, parity_passed(diff, limit),
                             f"max |PyTorch - onnxruntime| <= atol + rtol x max|{output}| = {atol:.3g} + {rtol:.3g} x "
                             f"{scale:.4g} = {limit:.4g}, on the {output} of {export_cfg.parity_images} images "
                             f"({artifact.exporter} exporter)"))
    return rows


def latency_target_gate(target, profiled: Profiled | None, where: str = "in the profile stage") -> GateResult:
    """``pruning.latency_target`` met on the final artifacts: the measured speedup of the pruned model against
    the baseline (or its median latency, for an ``ms`` target) within ``tolerance_pct`` of the target.
    ``profiled``: the run's profile stage, or a device's measurement (``compress deploy``)."""
    tolerance = target.tolerance_pct / 100
    artifact = artifacts.PRUNED_ONNX if artifacts.times_onnx(target.backend) else artifacts.PRUNED_TORCH
    asked = f"speedup {target.speedup:g}x" if target.speedup is not None else f"{target.ms:g} ms"
    name = f"latency_target[{asked}, {target.backend}, batch {target.batch}]"
    if target.speedup is not None:
        limit = target.speedup * (1 - tolerance)
        for r in profiled.ratios if profiled else ():
            if r.artifact == artifact and r.backend == target.backend and r.batch == target.batch:
                value, limit = round(r.speedup, 4), round(limit, 4)  # the verdict is on the figures shown
                return gate(name, limit, value, value >= limit,
                            f"{artifact} against its baseline, side by side {where} (median of round "
                            f"ratios, spread {r.spread:.1%}); at least the target minus {target.tolerance_pct:g}%")
    else:
        limit = target.ms * (1 + tolerance)
        for s in profiled.stats if profiled else ():
            if s.artifact == artifact and s.backend == target.backend and s.batch == target.batch:
                value, limit = round(s.p50_ms, 4), round(limit, 4)
                return gate(name, limit, value, value <= limit,
                            f"median latency of {artifact} {where}; at most the target plus "
                            f"{target.tolerance_pct:g}%")
    return gate(name, 0.0, None, False, f"not measured: no {artifact} figure on {target.backend} at batch {target.batch}")


def latency_gate(limit: LatencyGate, profiled: Profiled | None) -> GateResult:
    """The median of the per-round medians (rounds interleaved with the other artifacts) against the limit;
    the detail says how much the rounds disagreed and flags a verdict that lies inside that noise."""
    which = "" if limit.artifact == artifacts.PRUNED_ONNX else f"{limit.artifact}, "
    name = f"max_latency_ms[{which}{limit.backend}, batch {limit.batch}]"
    for stats in profiled.stats if profiled is not None else ():
        if stats.artifact == limit.artifact and stats.backend == limit.backend and stats.batch == limit.batch:
            value = statistics.median(stats.round_p50_ms) if stats.round_p50_ms else stats.p50_ms
            spread = _spread(stats.round_p50_ms)
            marginal = abs(value - limit.p50_ms) <= spread * value / 2
            threads = f"{stats.threads} thread" + ("s" if stats.threads != 1 else "")
            return gate(name, limit.p50_ms, round(value, 4), value <= limit.p50_ms,
                        f"median of {stats.repeats} interleaved round medians x {stats.iterations} runs, "
                        f"{threads}, {stats.device}; round medians spread {spread:.1%}"
                        + ("; MARGINAL: the limit lies within the measurement noise" if marginal else ""))
    return gate(name, limit.p50_ms, None, False, f"not measured: no {limit.artifact} figure on {limit.backend} at batch "
                f"{limit.batch} (is profiling enabled and the batch in profile.batch_sizes?)")


def _spread(values) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    median = values[len(values) // 2]
    return (values[-1] - values[0]) / median if median else 0.0
