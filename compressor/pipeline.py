"""``run(recipe, out_dir)``: one compression run, one call per stage (DESIGN.md §3).

load -> baseline -> prune -> fine-tune -> export -> profile -> gates -> report. Inputs (model, checkpoint,
data) are loaded and checked before the run folder is created, so a bad input leaves nothing behind.
``report.json`` is written last and atomically: a run folder without it is not a finished run
(``status.json`` says how far it got and why it stopped).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import environment
from ._io import write_json, write_text
from .progress import log, stage
from .recipe import Recipe, dump_recipe


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    report: dict
    passed: bool


def run(recipe: Recipe, out_dir: Path, recipe_path: Path | None = None, overwrite: bool = False) -> RunResult:
    from . import stages

    timings: dict[str, float] = {}
    environment.check_run_dir(out_dir, overwrite)
    environment.seed_everything(recipe.seed)
    device = environment.resolve_device(recipe.device)
    with stage("load") as t:
        inputs = stages.load_inputs(recipe, device)
        t["note"] = inputs.summary
    timings["load"] = t["seconds"]
    out = environment.prepare_run_dir(out_dir, overwrite)
    write_text(out / "recipe.resolved.yaml", dump_recipe(recipe))
    write_json(out / "env.json", environment.describe(device, recipe_path))
    try:
        return _stages(recipe, inputs, out, device, timings, recipe_path)
    except BaseException as exc:
        write_json(out / "status.json", {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                         "completed_stages": list(timings)})
        raise


def _stages(recipe: Recipe, inputs, out: Path, device: torch.device, timings: dict, recipe_path) -> RunResult:
    from . import stages
    from .report import build_report, evaluate_gates, write_report

    def timed(name: str, fn, *args):
        with stage(name) as t:
            result = fn(*args)
            t["note"] = getattr(result, "summary", "")
        timings[name] = round(t["seconds"], 3)
        return result

    baseline = timed("baseline", stages.baseline, recipe, inputs, out / "baseline", device)
    model = copy.deepcopy(inputs.model)
    pruned = timed("prune", stages.prune, recipe, inputs, model, out / "pruned", device)
    tuned = timed("finetune", stages.finetune, recipe, inputs, model, pruned, out / "pruned", device)
    exported = timed("export", stages.export, recipe, inputs, model, out / "export")
    profiled = timed("profile", stages.profile, recipe, baseline, exported, out / "profile")
    gates = evaluate_gates(recipe.gates, recipe.export, baseline, tuned, exported, profiled)
    report = build_report(recipe, recipe_path, out, inputs, baseline, pruned, tuned, exported, profiled, gates, timings)
    write_report(out, report)
    write_json(out / "status.json", {"status": "complete", "passed": report["passed"],
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return RunResult(out_dir=out, report=report, passed=report["passed"])


def run_from_file(path: Path, overrides: list[str], out_dir: Path | None, overwrite: bool = False) -> RunResult:
    from .recipe import load_recipe

    recipe = load_recipe(path, overrides)
    if out_dir is None:
        out_dir = Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"compress run {path} -> {out_dir}")
    return run(recipe, Path(out_dir), recipe_path=Path(path), overwrite=overwrite)
