"""``report.json`` (the contract of DESIGN.md §4; keys are stable, new ones may be added) and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from .._io import write_json, write_text
from ..export.deploy import named_deployables
from ..recipe import SCHEMA_VERSION, Recipe
from .gates import macs_reduction
from .markdown import render_markdown

MACS_RULE = ("MACs: multiply-accumulates of every Conv, ConvTranspose, Gemm and MatMul executed in the graph, "
             "per image; BatchNorm, activations and pooling are not counted")


def build_report(recipe: Recipe, recipe_path, out: Path, inputs, baseline, pruned, tuned, exported, profiled,
                 gates: list[dict], timings: dict) -> dict:
    macs_pct, macs_source = macs_reduction(baseline, exported)
    base_cost, new_cost = _costs(baseline, exported)
    report = {
        "schema_version": SCHEMA_VERSION,
        "recipe": {"name": recipe.name, "path": str(recipe_path) if recipe_path else None,
                   "resolved": "recipe.resolved.yaml", "seed": recipe.seed},
        "method": {"name": recipe.method.name, "options": recipe.method.model_dump(mode="json")},
        "model": {"arch": recipe.model.arch, "input_shape": list(inputs.input_shape),
                  "checkpoint": str(recipe.model.checkpoint) if recipe.model.checkpoint else None},
        "baseline": {"accuracy": _r(baseline.test.accuracy), "split": "test", "images": baseline.test.images,
                     "val_accuracy": _r(baseline.val.accuracy), **base_cost},
        "pruned": {"accuracy": _r(tuned.test.accuracy), "split": "test", "images": tuned.test.images,
                   "val_accuracy": _r(tuned.val.accuracy), "accuracy_before_finetune": _r(pruned.retrain_free.accuracy),
                   "best_epoch": tuned.result.best_epoch, **new_cost},
        "reduction": {"macs_pct": _r(macs_pct), "params_pct": _r(100 * (1 - new_cost["params"] / base_cost["params"])),
                      "counted_on": macs_source},
        "pruning": _pruning_section(recipe, pruned),
        "widths": list(pruned.surgery.widths),
        "finetune": {"epochs": recipe.finetune.epochs, "best_epoch": tuned.result.best_epoch,
                     "log": [vars(e) for e in tuned.result.epochs]},
        "artifacts": _artifacts(out, baseline, tuned, exported, profiled),
        "parity": _parity(baseline, exported),
        "stripe": _stripe(exported),
        "deploy": _deploy(baseline, exported),
        "latency": [s.to_json() for s in profiled.stats],
        "latency_ratios": list(profiled.ratios),
        "gates": gates,
        "passed": all(g["passed"] for g in gates),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "counting": MACS_RULE,
        "data": {"train": inputs.loaders.num_train, "val": inputs.loaders.num_val, "test": inputs.loaders.num_test,
                 "calibration": inputs.loaders.num_calibration},
    }
    return report


def write_report(out: Path, report: dict) -> None:
    """``report.md`` first, then ``report.json`` (the marker of a finished run)."""
    report["artifacts"]["report_md"] = "report.md"
    report["artifacts"]["report_json"] = "report.json"
    write_text(out / "report.md", render_markdown(report))
    write_json(out / "report.json", report)


def _costs(baseline, exported) -> tuple[dict, dict]:
    if baseline.onnx is not None and exported.onnx is not None:
        return ({"macs": baseline.onnx.macs, "params": baseline.onnx.params, "macs_torch": baseline.macs_torch,
                 "params_torch": baseline.params_torch},
                {"macs": exported.onnx.macs, "params": exported.onnx.params, "macs_torch": exported.macs_torch,
                 "params_torch": exported.params_torch})
    return ({"macs": baseline.macs_torch, "params": baseline.params_torch},
            {"macs": exported.macs_torch, "params": exported.params_torch})


def _pruning_section(recipe: Recipe, pruned) -> dict:
    s = pruned.surgery
    return {"residual": recipe.pruning.residual, "global_ratio": round(s.global_ratio, 6),
            "target_macs_reduction_pct": recipe.pruning.macs_reduction_pct,
            "macs_reduction_pct_torch": _r(s.macs_reduction_pct), "groups_pruned": len(s.pruned_groups),
            "groups_skipped": dict(s.skipped), "bn_recalibration_images": pruned.bn_images,
            "channels_before": sum(g.channels for g in s.groups), "channels_after": sum(g.kept for g in s.groups),
            "search_trials": len(s.search), "allocation": s.allocation, "schedule": recipe.pruning.schedule,
            "compensation": _compensation(s.compensation), "method_details": pruned.method_details,
            "masked_vs_pruned_max_abs_diff": pruned.masked_vs_pruned}


def _compensation(steps: tuple[dict, ...]) -> dict:
    """One summary of the compensation of every carry-out step (one step unless the schedule is layerwise)."""
    if not steps:
        return {"kind": "none", "layers": [], "skipped": {}}
    return {"kind": steps[0]["kind"], "layers": [layer for s in steps for layer in s["layers"]],
            "skipped": {k: v for s in steps for k, v in s["skipped"].items()}, "images": max(s["images"] for s in steps)}


def _artifacts(out: Path, baseline, tuned, exported, profiled) -> dict:
    paths = {"recipe": out / "recipe.resolved.yaml", "env": out / "env.json"}
    if baseline.onnx is not None:
        paths["baseline_onnx"] = baseline.onnx.path
    if exported.onnx is not None:
        paths["pruned_onnx"] = exported.onnx.path
    if exported.stripe is not None:
        paths["stripe_onnx"] = exported.stripe.path
        paths["stripe_layers"] = exported.stripe.path.parent / "stripe_layers.json"
    for name, artifact in named_deployables(baseline, exported).items():
        paths[name] = artifact.path
        if hasattr(artifact, "log"):
            paths[f"{name}_build_log"] = artifact.log
    paths["pruned_state_dict"] = tuned.files["state_dict"]
    paths["pruning_history"] = tuned.files["history"]
    paths["widths"] = out / "pruned" / "widths.json"
    if profiled.stats:
        paths["latency"] = out / "profile" / "latency.json"
        if (out / "profile" / "latency.png").is_file():
            paths["latency_plot"] = out / "profile" / "latency.png"
    return {name: str(Path(p).resolve().relative_to(out.resolve())) for name, p in paths.items()}


def _parity(baseline, exported) -> dict:
    found = {}
    if baseline.onnx is not None:
        found["baseline_onnx"] = baseline.onnx.max_abs_diff
    if exported.onnx is not None:
        found["pruned_onnx"] = exported.onnx.max_abs_diff
    if exported.stripe is not None:
        found["stripe_onnx"] = exported.stripe.max_abs_diff
    for name, artifact in named_deployables(baseline, exported).items():
        found[name] = artifact.max_abs_diff  # variants: vs the FP32 ONNX; engines: vs onnxruntime
    return found


def _deploy(baseline, exported) -> dict:
    """Per precision: top-1 of the baseline and pruned variants on onnxruntime CPU, and the engines."""
    variants = {}
    for name, v in named_deployables(baseline, exported).items():
        if not name.endswith("_engine"):
            variants[name] = v.to_json()
    return {"variants": variants,
            "engines": {name: e.to_json() for name, e in named_deployables(baseline, exported).items()
                        if name.endswith("_engine")},
            "note": "variant accuracy is top-1 on the test split computed by onnxruntime CPU; variant parity is "
                    "against the FP32 ONNX file, engine parity against onnxruntime on the same images"}


def _stripe(exported) -> dict | None:
    """The stripe graph: its MACs/params on the graph and the per-layer choice (see export/hybrid.py)."""
    art = exported.stripe
    if art is None:
        return None
    return {"path": art.path.name, "macs": art.macs, "params": art.params, "max_abs_diff": art.max_abs_diff,
            "choice_batch": art.batch, "stripe_layers": art.stripe_layers, "whole_graph_check": art.graph_check,
            "layers": [c.to_json() for c in art.layers],
            "note": "params count every float initializer of the graph, including the 0/1 accumulation matrices "
                    "and column masks of stripe layers"}


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
