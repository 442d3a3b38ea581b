"""``report.json`` (the contract of DESIGN.md §4; keys are stable, new ones may be added) and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from .. import artifacts
from .._io import write_json, write_text
from ..artifacts import RunLayout
from ..config import SCHEMA_VERSION, ExportConfig, Recipe
from ..export.deploy import EngineArtifact, VariantArtifact
from ..export.onnx import parity_limit
from ..stages import Exported, Inputs, Results
from .efficiency import efficiency_rows, plot_latency_macs
from .gates import GateResult, macs_reduction
from .markdown import render_markdown

MACS_RULE = ("MACs: multiply-accumulates of every Conv, ConvTranspose, Gemm and MatMul executed in the graph, "
             "per image; BatchNorm, activations and pooling are not counted")


def task_section(recipe: Recipe) -> dict:
    """What ``accuracy`` means in this report: top-1 (%) of a classifier, or a custom task's primary metric
    (``baseline.metrics`` / ``pruned.metrics`` hold every value its metric returned)."""
    task = recipe.task
    custom = task.kind == "custom"
    return {"kind": task.kind, "primary": task.primary, "direction": task.direction,
            "label": f"{task.primary} ({'lower' if task.direction == 'lower' else 'higher'} is better)" if custom
            else "top-1 accuracy (%)",
            "note": "accuracy, val_accuracy and accuracy_before_finetune hold task.primary" if custom else None}


def build_report(recipe: Recipe, recipe_path, layout: RunLayout, inputs: Inputs, results: Results,
                 gates: list[GateResult], timings: dict) -> dict:
    baseline, pruned, tuned, profiled = results.baseline, results.pruned, results.tuned, results.profiled
    macs_pct, macs_source = macs_reduction(results)
    base_cost, new_cost = _costs(results)
    report = {
        "schema_version": SCHEMA_VERSION,
        "recipe": {"name": recipe.name, "path": str(recipe_path) if recipe_path else None,
                   "resolved": layout.resolved_recipe.name, "seed": recipe.seed},
        "method": {"name": recipe.method.name, "options": recipe.method.model_dump(mode="json")},
        "model": {"arch": recipe.model.arch, "input_shape": list(inputs.input_shape),
                  "checkpoint": str(recipe.model.checkpoint) if recipe.model.checkpoint else None},
        "task": task_section(recipe),
        "baseline": {"accuracy": _r(baseline.test.accuracy), "split": "test", "images": baseline.test.images,
                     "val_accuracy": _r(baseline.val and baseline.val.accuracy), **base_cost,
                     "metrics": {k: _r(v) for k, v in baseline.test.metrics.items()}},
        "pruned": {"accuracy": _r(tuned.test.accuracy), "split": "test", "images": tuned.test.images,
                   "val_accuracy": _r(tuned.val and tuned.val.accuracy),
                   "metrics": {k: _r(v) for k, v in tuned.test.metrics.items()},
                   "accuracy_before_finetune": _r(pruned.retrain_free.accuracy),
                   "best_epoch": tuned.result.best_epoch, **new_cost},
        "reduction": {"macs_pct": _r(macs_pct), "params_pct": _r(100 * (1 - new_cost["params"] / base_cost["params"])),
                      "counted_on": macs_source},
        "pruning": _pruning_section(recipe, pruned),
        "widths": list(pruned.surgery.widths),
        "finetune": {"epochs": recipe.finetune.epochs, "best_epoch": tuned.result.best_epoch,
                     "log": [vars(e) for e in tuned.result.epochs]},
        "artifacts": _artifacts(layout, results),
        "parity": _parity(results),
        "parity_detail": _parity_detail(recipe.export, results),
        "stripe": _stripe(results.exported),
        "deploy": _deploy(results),
        "latency": [s.to_json() for s in profiled.stats] if profiled else [],
        "latency_ratios": [r.to_json() for r in profiled.ratios] if profiled else [],
        "efficiency": efficiency_rows(results, base_cost["macs"], new_cost["macs"]),
        "gates": [g.to_json() for g in gates],
        "passed": all(g.passed for g in gates),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "counting": MACS_RULE,
        "data": {"train": inputs.loaders.num_train, "val": inputs.loaders.num_val, "test": inputs.loaders.num_test,
                 "calibration": inputs.loaders.num_calibration},
    }
    return report


def write_report(layout: RunLayout, report: dict, latency_target=None) -> None:
    """The latency-against-MACs plot, ``report.md``, then ``report.json`` (the marker of a finished run)."""
    if report["latency"]:
        drawn = plot_latency_macs(report, layout.latency_macs_png, latency_target)
        if isinstance(drawn, Path):
            report["artifacts"]["latency_macs_plot"] = drawn.name
    report["artifacts"]["report_md"] = layout.report_md.name
    report["artifacts"]["report_json"] = layout.report_json.name
    write_text(layout.report_md, render_markdown(report))
    write_json(layout.report_json, report)


def _costs(results: Results) -> tuple[dict, dict]:
    baseline, tuned, exported = results.baseline, results.tuned, results.exported
    if baseline.onnx is not None and exported is not None:
        return ({"macs": baseline.onnx.macs, "params": baseline.onnx.params, "macs_torch": baseline.macs_torch,
                 "params_torch": baseline.params_torch},
                {"macs": exported.onnx.macs, "params": exported.onnx.params, "macs_torch": tuned.macs_torch,
                 "params_torch": tuned.params_torch})
    return ({"macs": baseline.macs_torch, "params": baseline.params_torch},
            {"macs": tuned.macs_torch, "params": tuned.params_torch})


def _pruning_section(recipe: Recipe, pruned) -> dict:
    s = pruned.surgery
    return {"residual": recipe.pruning.residual, "global_ratio": round(s.global_ratio, 6),
            "target_macs_reduction_pct": recipe.pruning.macs_reduction_pct,
            "macs_reduction_pct_torch": _r(s.macs_reduction_pct), "groups_pruned": len(s.pruned_groups),
            "groups_skipped": dict(s.skipped), "protected": dict(s.protected), "bn_recalibration_images": pruned.bn_images,
            "channels_before": sum(g.channels for g in s.groups), "channels_after": sum(g.kept for g in s.groups),
            "search_trials": len(s.search), "allocation": s.allocation, "schedule": recipe.pruning.schedule,
            "compensation": _compensation(s.compensation), "method_details": pruned.method_details,
            "masked_vs_pruned_max_abs_diff": pruned.masked_vs_pruned,
            "latency_target": _latency_target(recipe, s)}


def _latency_target(recipe: Recipe, surgery) -> dict | None:
    """What ``pruning.latency_target`` asked (defaults resolved) and what the search measured."""
    target = recipe.latency_target
    if target is None:
        return None
    return {"asked": target.model_dump(mode="json"), **surgery.latency}


def _compensation(steps: tuple[dict, ...]) -> dict:
    """One summary of the compensation of every carry-out step (one step unless the schedule is layerwise)."""
    if not steps:
        return {"kind": "none", "layers": [], "skipped": {}}
    return {"kind": steps[0]["kind"], "layers": [layer for s in steps for layer in s["layers"]],
            "skipped": {k: v for s in steps for k, v in s["skipped"].items()}, "images": max(s["images"] for s in steps)}


def _artifacts(layout: RunLayout, results: Results) -> dict:
    paths = {"recipe": layout.resolved_recipe, "env": layout.env}
    paths.update({name: artifact.path for name, artifact in results.onnx_exports.items()})
    if artifacts.STRIPE_ONNX in paths:
        paths["stripe_layers"] = layout.stripe_layers
    for name, artifact in results.deployables.items():
        paths[name] = artifact.path
        if isinstance(artifact, EngineArtifact):
            paths[f"{name}_build_log"] = artifact.log
    paths["pruned_state_dict"] = results.tuned.files["state_dict"]
    paths["pruning_history"] = results.tuned.files["history"]
    paths["widths"] = layout.widths
    if results.profiled is not None and results.profiled.stats:
        paths["latency"] = layout.latency_json
        if layout.latency_png.is_file():
            paths["latency_plot"] = layout.latency_png
    root = layout.root.resolve()
    return {name: str(Path(p).resolve().relative_to(root)) for name, p in paths.items()}


def _parity(results: Results) -> dict:
    """Exports: vs PyTorch; variants: vs the FP32 ONNX; engines: vs onnxruntime."""
    named = {**results.onnx_exports, **results.deployables}
    return {name: artifact.max_abs_diff for name, artifact in named.items()}


def _parity_detail(cfg: ExportConfig, results: Results) -> dict:
    """Per FP32 ONNX file: its difference, the scale of its PyTorch logits, the limit made of them (the parity
    gate's) and the exporter that wrote it."""
    atol, rtol = cfg.parity_tolerance, cfg.parity_rtol
    return {name: {"max_abs_diff": a.max_abs_diff, "reference_max_abs": a.reference_max_abs, "atol": atol,
                   "rtol": rtol, "limit": parity_limit(atol, rtol, a.reference_max_abs), "exporter": a.exporter}
            for name, a in results.onnx_exports.items()}


def _deploy(results: Results) -> dict:
    """Per precision: top-1 of the baseline and pruned variants on onnxruntime CPU, and the engines."""
    named = results.deployables
    return {"variants": {name: v.to_json() for name, v in named.items() if isinstance(v, VariantArtifact)},
            "engines": {name: e.to_json() for name, e in named.items() if isinstance(e, EngineArtifact)},
            "note": "variant accuracy is top-1 on the test split computed by onnxruntime CPU; variant parity is "
                    "against the FP32 ONNX file, engine parity against onnxruntime on the same images"}


def _stripe(exported: Exported | None) -> dict | None:
    """The stripe graph: its MACs/params on the graph and the per-layer choice (see export/hybrid.py)."""
    art = exported.stripe if exported is not None else None
    if art is None:
        return None
    return {"path": art.path.name, "macs": art.macs, "params": art.params, "max_abs_diff": art.max_abs_diff,
            "reference_max_abs": art.reference_max_abs, "choice_batch": art.batch, "stripe_layers": art.stripe_layers,
            "whole_graph_check": art.graph_check,
            "layers": [c.to_json() for c in art.layers],
            "note": "params count every float initializer of the graph, including the 0/1 accumulation matrices "
                    "and column masks of stripe layers"}


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
