"""``run(recipe, out_dir)``: one compression run, one call per stage (DESIGN.md §3).

load -> baseline -> prune -> fine-tune -> export -> profile -> gates -> report. Inputs (model, checkpoint,
data) are loaded and checked before the run folder is created, so a bad input leaves nothing behind.
``report.json`` is written last and atomically: a run folder without it is not a finished run
(``status.json`` says how far it got and why it stopped).

Every finished stage is recorded (``ledger.py``) and fine-tuning checkpoints every epoch, so
``resume_run(run_dir)`` (``compress run --resume RUN_DIR``) goes on after a crash or a kill and ends with the
metrics the uninterrupted run would have had. Under torchrun (``training/distributed.py``) rank 0 runs the
baseline, the pruning decision and everything after fine-tuning; all ranks fine-tune together.
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


def run(recipe: Recipe, out_dir: Path, recipe_path: Path | None = None, overwrite: bool = False,
        resume: bool = False) -> RunResult:
    """One run into ``out_dir``; with ``resume``, go on with the interrupted run already there. Under torchrun
    every rank calls this; rank 0 returns the result, the other ranks return None once fine-tuning is done."""
    from .training import distributed

    device = distributed.setup(environment.resolve_device(recipe.device))
    try:  # absolute: recorded stage results stay valid when --resume is run from another directory
        return _run(recipe, Path(out_dir).resolve(), recipe_path, overwrite, resume, device)
    finally:
        distributed.shutdown()


def _run(recipe: Recipe, out_dir: Path, recipe_path, overwrite: bool, resume: bool, device) -> RunResult:
    from . import stages
    from .export.deploy import check_dependencies
    from .ledger import Ledger
    from .training import distributed

    check_dependencies(recipe)  # a missing TensorRT / GPU stops the run now, not after fine-tuning
    main = distributed.is_main()
    if not resume:
        distributed.on_main(lambda: environment.check_run_dir(out_dir, overwrite))
    distributed.check_batch(recipe.data.batch_size)
    environment.seed_everything(recipe.seed)
    with stage("load") as t:
        inputs = stages.load_inputs(recipe, device)
        t["note"] = inputs.summary
    timings: dict[str, float] = {"load": t["seconds"]}

    def start_folder() -> None:
        out = environment.prepare_run_dir(out_dir, overwrite, resume)
        if not resume:
            write_text(out / "recipe.resolved.yaml", dump_recipe(recipe))
            write_json(out / "env.json", environment.describe(device, recipe_path))

    distributed.on_main(start_folder)
    ledger = Ledger(out_dir, resume, write=main)
    try:
        return _stages(recipe, inputs, out_dir, device, timings, recipe_path, ledger)
    except BaseException as exc:
        if main:
            write_json(out_dir / "status.json", {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                                 "completed_stages": ledger.completed})
        raise


def _stages(recipe: Recipe, inputs, out: Path, device: torch.device, timings: dict, recipe_path,
            ledger) -> RunResult | None:
    from . import stages
    from .report import build_report, evaluate_gates, write_report
    from .training import distributed

    def timed(name: str, fn, *args, model=None):
        """Run a stage (or take its record from before a resume) and record it."""
        record = ledger.recorded(name)
        if record is not None:
            log(f"[{name}] done before the resume ({record['seconds']:.1f} s)")
            timings[name] = record["seconds"]
            return record["result"], record["model"]
        with stage(name) as t:
            result = fn(*args)
            t["note"] = getattr(result, "summary", "")
        timings[name] = round(t["seconds"], 3)
        ledger.record(name, result, timings[name], model)  # also drops what later stages left (ledger.py)
        return result, None

    main, on_main = distributed.is_main(), distributed.on_main
    baseline, _ = on_main(lambda: timed("baseline", stages.baseline, recipe, inputs, out / "baseline", device)) \
        or (None, None)
    model = copy.deepcopy(inputs.model)
    pruned, state = on_main(lambda: timed("prune", stages.prune, recipe, inputs, model, out / "pruned", device,
                                          model=model)) or (None, None)
    model = _same_network(model, pruned, state, inputs)
    if not main:  # the other ranks only fine-tune (unless rank 0 has that stage on record)
        if not distributed.broadcast(None):
            stages.finetune(recipe, inputs, model, pruned, out / "pruned", device)
        return None
    distributed.broadcast(ledger.has("finetune"))
    tuned, state = timed("finetune", stages.finetune, recipe, inputs, model, pruned, out / "pruned", device,
                         model=model)
    if state is not None:
        model.load_state_dict(state)
    exported, _ = timed("export", stages.export, recipe, inputs, model, out / "export")
    profiled, _ = timed("profile", stages.profile, recipe, baseline, exported, out / "profile",
                        {"baseline": inputs.model, "pruned": model}, inputs.input_shape, device)
    gates = evaluate_gates(recipe.gates, recipe.export, baseline, tuned, exported, profiled)
    report = build_report(recipe, recipe_path, out, inputs, baseline, pruned, tuned, exported, profiled, gates, timings)
    write_report(out, report)
    write_json(out / "status.json", {"status": "complete", "passed": report["passed"],
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return RunResult(out_dir=out, report=report, passed=report["passed"])


def _same_network(model: torch.nn.Module, pruned, state: dict | None, inputs) -> torch.nn.Module:
    """The pruned network on every rank. On rank 0 it is ``model`` as pruned in this process, or, after a
    resume, rebuilt from the recorded history and weights; the other ranks rebuild rank 0's."""
    from .training import distributed

    if distributed.is_main() and state is not None:
        model = _rebuild(inputs, pruned.surgery.history, state)
    if not distributed.active():
        return model
    payload = distributed.broadcast((pruned.surgery.history, _cpu_state(model)) if distributed.is_main() else None)
    return model if distributed.is_main() else _rebuild(inputs, *payload)


def _rebuild(inputs, history: list, state: dict) -> torch.nn.Module:
    from .surgery.history import replay

    device = next(inputs.model.parameters()).device
    rebuilt = replay(copy.deepcopy(inputs.model).cpu(), history, inputs.input_shape)
    rebuilt.load_state_dict(state)
    return rebuilt.to(device)


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def run_from_file(path: Path, overrides: list[str], out_dir: Path | None, overwrite: bool = False) -> RunResult:
    from .recipe import load_recipe

    recipe = load_recipe(path, overrides)
    if out_dir is None:
        out_dir = Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"compress run {path} -> {out_dir}")
    return run(recipe, Path(out_dir), recipe_path=Path(path), overwrite=overwrite)


def resume_run(run_dir: Path) -> RunResult:
    """Go on with an interrupted run: its resolved recipe, its folder, its finished stages."""
    import json

    from .ledger import RESOLVED, resumable_recipe

    run_dir = Path(run_dir)
    recipe = resumable_recipe(run_dir)
    status = run_dir / "status.json"
    if (run_dir / "report.json").is_file() and status.is_file() and json.loads(status.read_text()).get("status") == "complete":
        from .progress import secondary_rank

        if secondary_rank():  # under torchrun, rank 0 reports
            return None
        log(f"compress run --resume {run_dir}: the run had finished; nothing to do")
        report = json.loads((run_dir / "report.json").read_text())
        return RunResult(out_dir=run_dir, report=report, passed=report["passed"])
    log(f"compress run --resume {run_dir}")
    return run(recipe, run_dir, recipe_path=run_dir / RESOLVED, resume=True)
