"""What a run folder knows about its own progress, so that ``compress run --resume RUN_DIR`` can go on.

After each finished stage, rank 0 records the stage's result (and, for the stages that change the network,
its state_dict) in ``.stages/<stage>.pt``, written atomically, and lists it in ``status.json``. Resuming
loads the recorded stages instead of running them again, rebuilds the pruned network from the pruning
history and the recorded weights, and runs the first unfinished stage; fine-tuning itself resumes after its
last finished epoch (``pruned/finetune.ckpt.pt``). ``report.json`` is only ever written by the last stage,
so a killed run never has one.

The records are pickles written by compressor into this folder: resuming trusts the run folder, as it
trusts its own output. A record that does not load (truncated, another version) is one clear error.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn as nn

from ._io import save_torch, write_json
from .errors import OutputDirError
from .recipe import Recipe, load_recipe

STAGES_DIR = ".stages"
RESOLVED = "recipe.resolved.yaml"
STAGES = ("baseline", "prune", "finetune", "export", "profile")  # the order the pipeline runs them in
CHECKPOINTS = {"prune": "pruned/method.ckpt.pt", "finetune": "pruned/finetune.ckpt.pt"}  # a stage's epoch state


class Ledger:
    def __init__(self, out: Path, resume: bool, write: bool = True):
        self.folder = Path(out) / STAGES_DIR
        self.resume, self.write = resume, write
        self.completed: list[str] = []

    def has(self, name: str) -> bool:
        """Recorded before the resume, and every stage before it was too."""
        earlier = STAGES[: STAGES.index(name) + 1]
        return self.resume and all((self.folder / f"{stage}.pt").is_file() for stage in earlier)

    def recorded(self, name: str) -> dict | None:
        """The record of a stage finished before the resume, or None (then the stage runs)."""
        path = self.folder / f"{name}.pt"
        if not self.has(name):
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=False)  # our own pickle (module docstring)
        except Exception as exc:
            raise OutputDirError(f"{path}: cannot read this stage record ({type(exc).__name__}: {exc}); delete it "
                                 "to run that stage again") from None
        self.completed.append(name)
        return record

    def record(self, name: str, result, seconds: float, model: nn.Module | None = None) -> None:
        self.completed.append(name)
        if not self.write:
            return
        state = None if model is None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_torch(self.folder / f"{name}.pt", {"result": _portable(result), "seconds": seconds, "model": state})
        self._forget_after(name)
        write_json(self.folder.parent / "status.json", {"status": "running", "completed_stages": self.completed,
                                                        "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})


    def _forget_after(self, name: str) -> None:
        """``name`` ran anew: later stages' records and epoch checkpoints describe another network, and its own
        epoch checkpoint is no longer needed."""
        run = self.folder.parent
        for stage in STAGES[STAGES.index(name) + 1:]:
            (self.folder / f"{stage}.pt").unlink(missing_ok=True)
            if stage in CHECKPOINTS:
                (run / CHECKPOINTS[stage]).unlink(missing_ok=True)
        if name in CHECKPOINTS:
            (run / CHECKPOINTS[name]).unlink(missing_ok=True)


def _portable(result):
    """A stage result without live modules (the network itself is recorded as a state_dict)."""
    surgery = getattr(result, "surgery", None)
    if surgery is not None and getattr(surgery, "model", None) is not None:
        return dataclasses.replace(result, surgery=dataclasses.replace(surgery, model=None))
    return result


def resumable_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe of an interrupted run folder; one clear line when it cannot be resumed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OutputDirError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / RESOLVED).is_file():
        raise OutputDirError(f"--resume {run_dir}: no {RESOLVED} in it, so it is not a compressor run folder "
                             "(or it stopped before its first stage: start it again without --resume)")
    return load_recipe(run_dir / RESOLVED, [])
