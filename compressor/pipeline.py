"""``run(recipe, out_dir)``: one compression run (DESIGN.md §3).

load -> baseline -> prune -> fine-tune -> export -> profile -> gates -> report. Inputs (model, checkpoint,
data) are loaded and checked before the run folder is created, so a bad input leaves nothing behind. The
stages after load are the declared table :data:`STAGES`; a small runner owns what is the same for all of
them: whether the recipe wants the stage, taking its record instead of running it after a resume, timing,
recording (``ledger.py``), and who runs it under torchrun (``training/distributed.py``): rank 0 runs the
baseline, the pruning decision and everything after fine-tuning; all ranks fine-tune together, on the same
network, which rank 0 shares after pruning. ``report.json`` is written last and atomically: a run folder
without it is not a finished run (``status.json`` says how far it got and why it stopped).

Every finished stage is recorded and fine-tuning checkpoints every epoch, so ``resume_run(run_dir)``
(``compress run --resume RUN_DIR``) goes on after a crash or a kill and ends with the metrics the
uninterrupted run would have had.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import environment, stages
from ._io import write_json, write_text
from .artifacts import RunLayout
from .config import Recipe, dump_recipe
from .errors import RunInterrupted, interrupt
from .ledger import Ledger
from .progress import log
from .progress import stage as timed_stage


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    report: dict
    passed: bool


@dataclass
class _Run:
    """One run in progress: the recipe, the stage context, the network being compressed, what stages found."""

    recipe: Recipe
    recipe_path: Path | None
    context: stages.Context
    model: torch.nn.Module
    results: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[_Run], object]
    result: type  # what ``run`` returns, and what its record decodes to
    wanted: Callable[[Recipe], bool] = lambda recipe: True
    off: str = ""  # why the stage is skipped when it is not wanted
    everywhere: bool = False  # every torchrun rank takes part (else rank 0 alone)
    network: bool = False  # it changes the network: the weights it leaves are recorded with it


def _baseline(run: _Run):
    return stages.baseline(run.context, run.recipe.export, run.recipe.profile.batch_sizes, run.recipe.validates)


def _prune(run: _Run):
    recipe = run.recipe
    latency = None
    if recipe.latency_target is not None:
        latency = stages.Latency(recipe.latency_target, recipe.profile, recipe.export.opset)
    return stages.prune(run.context, run.model, recipe.method, recipe.pruning, recipe.finetune, latency)


def _finetune(run: _Run):
    return stages.finetune(run.context, run.model, run.recipe.finetune, run.recipe.method, run.results.get("prune"),
                           run.recipe.validates)


def _export(run: _Run):
    return stages.export(run.context, run.model, run.recipe.export, run.recipe.profile)


def _profile(run: _Run):
    models = {"baseline": run.context.inputs.model, "pruned": run.model}
    return stages.profile(run.context, run.recipe.profile, run.results["baseline"], run.results["export"], models,
                          title=f"{run.recipe.name}: baseline vs pruned")


STAGES = (
    Stage("baseline", _baseline, stages.Baseline),
    Stage("prune", _prune, stages.Pruned, network=True),
    Stage("finetune", _finetune, stages.Tuned, everywhere=True, network=True),
    Stage("export", _export, stages.Exported, wanted=lambda r: r.export.onnx, off="export.onnx is false"),
    Stage("profile", _profile, stages.Profiled, wanted=lambda r: r.profile.enabled and r.export.onnx,
          off="profile.enabled is false, or nothing was exported"),
)


# ---------------------------------------------------------------------------------------------- entry
def run(recipe: Recipe, out_dir: Path, recipe_path: Path | None = None, overwrite: bool = False,
        resume: bool = False) -> RunResult | None:
    """One run into ``out_dir``; with ``resume``, go on with the interrupted run already there. Under torchrun
    every rank calls this; rank 0 returns the result, the other ranks return None once fine-tuning is done."""
    from .training import distributed

    device = distributed.setup(environment.resolve_device(recipe.device))
    try:  # absolute: the run folder stays the same when --resume is run from another directory
        return _run(recipe, RunLayout(Path(out_dir).resolve()), recipe_path, overwrite, resume, device)
    finally:
        distributed.shutdown()


def _run(recipe: Recipe, layout: RunLayout, recipe_path, overwrite: bool, resume: bool, device) -> RunResult | None:
    from .training import distributed

    stages.check_dependencies(recipe.export, recipe.profile)  # a missing TensorRT / GPU stops now, not after hours
    main = distributed.is_main()
    if not resume:
        distributed.on_main(lambda: environment.check_run_dir(layout.root, overwrite))
    distributed.check_batch(recipe.batch_size, "data.batch_size" if recipe.data is not None else "task.batch_size")
    environment.seed_everything(recipe.seed)
    try:
        with timed_stage("load") as t:
            inputs = _load(recipe, device, resume)
            t["note"] = inputs.summary
    except BaseException as exc:
        if main and interrupt(exc):  # a folder to resume: the recipe was fine, the user stopped it
            _start_folder(layout, recipe, recipe_path, overwrite, resume, device)
            raise _interrupted(layout, exc, _completed(layout, resume)) from None
        raise
    distributed.on_main(lambda: _start_folder(layout, recipe, recipe_path, overwrite, resume, device))
    ledger = Ledger(layout, [s.name for s in STAGES if s.wanted(recipe)], resume, write=main)
    state = _Run(recipe, recipe_path, stages.Context(inputs, layout, device, recipe.seed), copy.deepcopy(inputs.model),
                 timings={"load": t["seconds"]})
    try:
        _run_stages(state, ledger)
        return _finish(state) if main else None
    except BaseException as exc:
        if main and interrupt(exc):
            raise _interrupted(layout, exc, ledger.completed) from None
        if main:
            write_json(layout.status, {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                       "completed_stages": ledger.completed})
        raise


def _interrupted(layout: RunLayout, exc: BaseException, completed: list[str]) -> RunInterrupted:
    """Record a SIGINT / SIGTERM in ``status.json`` (``interrupted``, where, and the stages kept for --resume)."""
    from .progress import current_stage

    stopped = RunInterrupted(current_stage() or "load", layout.root, exc)
    write_json(layout.status, {"status": "interrupted", "stage": stopped.stage, "signal": stopped.signal,
                               "completed_stages": completed, "resume": f"compress run --resume {layout.root}",
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return stopped


def _completed(layout: RunLayout, resume: bool) -> list[str]:
    """The stages a resumed run has on record before its own load (none for a new run)."""
    return [s.name for s in STAGES if resume and layout.record(s.name).is_file()]


def _load(recipe: Recipe, device, resume: bool) -> stages.Inputs:
    """The model, checkpoint and loaders. A resumed run never unpickles: its recipe comes from the run folder,
    which must not be able to switch ``model.trust_checkpoint`` on, so the checkpoint loads with weights_only."""
    from .errors import CheckpointError

    model = recipe.model.model_copy(update={"trust_checkpoint": False}) if resume else recipe.model
    try:
        return stages.load_inputs(model, recipe.data, recipe.channel_plan, recipe.seed, device, recipe.task)
    except CheckpointError as exc:
        if model is recipe.model or not recipe.model.trust_checkpoint:
            raise
        raise CheckpointError(f"{exc} (--resume loads model.checkpoint with weights_only whatever "
                              "model.trust_checkpoint says, since a run folder must not be able to run code; re-save "
                              "the checkpoint as a plain state_dict, or run again without --resume)") from None


def _start_folder(layout: RunLayout, recipe: Recipe, recipe_path, overwrite: bool, resume: bool, device) -> None:
    environment.prepare_run_dir(layout.root, overwrite, resume)
    if not resume:
        write_text(layout.resolved_recipe, dump_recipe(recipe))
        write_json(layout.env, environment.describe(device, recipe_path))
    write_json(layout.status, {"status": "running", "completed_stages": _completed(layout, resume),
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})


# --------------------------------------------------------------------------------------------- runner
def _run_stages(run: _Run, ledger: Ledger) -> None:
    """Every wanted stage in order. Rank 0 runs its own stages alone (or takes them from the ledger); the
    shared ones run on every rank unless rank 0 has them on record; the other ranks stop after the last
    shared stage, rank 0 reports."""
    from .training import distributed

    main = distributed.is_main()
    shared = sum(s.everywhere and s.wanted(run.recipe) for s in STAGES)
    for stage in STAGES:
        if not stage.wanted(run.recipe):
            log(f"[{stage.name}] skipped: {stage.off}")
            run.timings[stage.name] = 0.0  # report.json lists every stage's time
            continue
        if not main and not shared:
            return
        if stage.everywhere:
            shared -= 1
            recorded = distributed.broadcast(ledger.has(stage.name) if main else None)
            if main:
                _take(stage, run, ledger)
            elif not recorded:
                stage.run(run)
        elif shared:  # the other ranks wait: rank 0's failure is raised on every rank
            distributed.on_main(lambda stage=stage: _take(stage, run, ledger))
            if stage.network and distributed.active():
                run.model = _shared_network(run)
        else:  # rank 0 alone from here on
            _take(stage, run, ledger)


def _take(stage: Stage, run: _Run, ledger: Ledger) -> None:
    """Rank 0: the stage's record from before the resume, or the stage run now, timed and recorded."""
    record = ledger.recorded(stage.name, stage.result, network=stage.network)
    if record is not None:
        log(f"[{stage.name}] done before the resume ({record.seconds:.1f} s)")
        run.results[stage.name], run.timings[stage.name] = record.result, record.seconds
        if record.state is not None:
            run.model = _adopt(run, record.state)
        return
    with timed_stage(stage.name) as t:
        result = stage.run(run)
        t["note"] = result.summary
    run.results[stage.name], run.timings[stage.name] = result, round(t["seconds"], 3)
    ledger.record(stage.name, result, run.timings[stage.name], _cpu_state(run.model) if stage.network else None)


def _adopt(run: _Run, state: dict) -> torch.nn.Module:
    """The network holding a recorded ``state``: the current one when it already has that architecture (fine-tune
    after a pruned or restored prune), else rebuilt from the pruning history (prune restored onto the unpruned copy)."""
    current = run.model.state_dict()
    if current.keys() == state.keys() and all(current[k].shape == v.shape for k, v in state.items()):
        run.model.load_state_dict(state)
        return run.model
    return _rebuild(run.context.inputs, run.results["prune"].surgery.history, state)


def _shared_network(run: _Run) -> torch.nn.Module:
    """Rank 0's pruned network (architecture and weights) on every rank."""
    from .training import distributed

    main = distributed.is_main()
    payload = distributed.broadcast((run.results["prune"].surgery.history, _cpu_state(run.model)) if main else None)
    return run.model if main else _rebuild(run.context.inputs, *payload)


def _rebuild(inputs: stages.Inputs, history: list, state: dict) -> torch.nn.Module:
    from .surgery.history import replay

    device = next(inputs.model.parameters()).device
    rebuilt = replay(copy.deepcopy(inputs.model).cpu(), history, inputs.input_shape)
    rebuilt.load_state_dict(state)
    return rebuilt.to(device)


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _finish(run: _Run) -> RunResult:
    """Gates and the report (``report.md``, then ``report.json``, the marker of a finished run)."""
    from .report import build_report, evaluate_gates, write_report

    layout, found = run.context.layout, run.results
    results = stages.Results(baseline=found["baseline"], pruned=found["prune"], tuned=found["finetune"],
                             exported=found.get("export"), profiled=found.get("profile"))
    gates = evaluate_gates(run.recipe.gates, run.recipe.export, results, run.recipe.latency_target,
                           run.recipe.task.direction)
    report = build_report(run.recipe, run.recipe_path, layout, run.context.inputs, results, gates,
                          run.timings)
    write_report(layout, report, run.recipe.latency_target)
    write_json(layout.status, {"status": "complete", "passed": report["passed"],
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return RunResult(out_dir=layout.root, report=report, passed=report["passed"])


# ------------------------------------------------------------------------------------- from the CLI
def run_from_file(path: Path, overrides: list[str], out_dir: Path | None, overwrite: bool = False) -> RunResult | None:
    from .config import load_recipe

    recipe = load_recipe(path, overrides)
    if out_dir is None:
        out_dir = Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"compress run {path} -> {out_dir}")
    return run(recipe, Path(out_dir), recipe_path=Path(path), overwrite=overwrite)


def resume_run(run_dir: Path, trust_model_code: bool = False) -> RunResult | None:
    """Go on with an interrupted run: its resolved recipe, its folder, its finished stages (``ledger.py`` says
    what resuming trusts)."""
    from .ledger import resumable_recipe
    from .progress import secondary_rank

    layout = RunLayout(Path(run_dir))
    recipe = resumable_recipe(layout.root, trust_model_code)
    if layout.report_json.is_file() and layout.status.is_file() and _status(layout) == "complete":
        if secondary_rank():  # under torchrun, rank 0 reports
            return None
        log(f"compress run --resume {run_dir}: the run had finished; nothing to do")
        report = _finished_report(layout)
        return RunResult(out_dir=layout.root, report=report, passed=report["passed"])
    log(f"compress run --resume {run_dir}")
    return run(recipe, layout.root, recipe_path=layout.resolved_recipe, resume=True)


def _finished_report(layout: RunLayout) -> dict:
    from .errors import OutputDirError

    try:
        report = json.loads(layout.report_json.read_text(encoding="utf-8"))
        report["passed"], report["recipe"], report["baseline"]  # noqa: B018 - what the summary reads
        return report
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise OutputDirError(f"{layout.report_json}: status.json says the run finished, but its report is "
                             f"unreadable ({type(exc).__name__}); run again without --resume") from None


def _status(layout: RunLayout) -> str | None:
    try:
        return json.loads(layout.status.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
