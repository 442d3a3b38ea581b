"""What a run folder knows about its own progress, so that ``compress run --resume RUN_DIR`` can go on.

After each finished stage, rank 0 writes its record ``.stages/<stage>.json`` atomically: the record format,
the compressor version that wrote it, the stage's seconds, its result as plain JSON (``codec.py``; paths
relative to the run folder) and, for the stages that change the network, the path of the state_dict it left
(``.stages/<stage>.state.pt``, tensors only, loaded with ``weights_only=True``). The stage is then listed in
``status.json``. Resuming takes the recorded stages instead of running them again, rebuilds the pruned
network from the pruning history and the recorded weights, and runs the first unfinished stage;
fine-tuning itself resumes after its last finished epoch (``pruned/finetune.ckpt.pt``). ``report.json`` is
only ever written after the last stage, so a killed run never has one.

Nothing in a run folder is ever unpickled, and ``model.trust_checkpoint`` is not honoured on resume: a run
folder someone else produced (a CI artifact, a colleague's run) cannot make ``--resume`` run code, with one
opt-in exception: a recipe whose model is the user's own factory (``model.arch: package.module:factory``),
which resume imports and calls only with ``--trust-model-code``. The resolved recipe is read with
``yaml.safe_load`` and without ``${VAR}`` expansion. A record that does not fit this version (another
compressor version or record format, a malformed or truncated file, weights that are not a plain
state_dict) is one clear error: run again without ``--resume``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from ._io import save_torch, write_json
from .artifacts import RunLayout
from .codec import RecordMismatch, decode, encode
from .errors import OutputDirError

RECORD_FORMAT = 1
_AGAIN = "run again without --resume (into a new --out folder, or with --overwrite)"


@dataclass(frozen=True)
class _Envelope:
    """What ``.stages/<stage>.json`` holds (the result is decoded afterwards, as the stage's own type)."""

    record: int
    compressor: str
    stage: str
    seconds: float
    result: object
    state_dict: str | None


@dataclass(frozen=True)
class Record:
    result: object
    seconds: float
    state: dict | None  # the network's state_dict after the stage (stages that change it), else None


class Ledger:
    def __init__(self, layout: RunLayout, order: Sequence[str], resume: bool, write: bool = True):
        """``order``: the names of the stages this run executes, in order."""
        self.layout, self.order = layout, list(order)
        self.resume, self.write = resume, write
        self.completed: list[str] = []
        if resume and write:
            self._refuse_pickled_records()

    def has(self, name: str) -> bool:
        """Recorded before the resume, and every stage before it was too."""
        earlier = self.order[: self.order.index(name) + 1]
        return self.resume and all(self.layout.record(stage).is_file() for stage in earlier)

    def recorded(self, name: str, kind: type, network: bool = False) -> Record | None:
        """The record of a stage finished before the resume (its result decoded as ``kind``; with ``network``,
        the weights the stage left), or None (then the stage runs)."""
        if not self.has(name):
            return None
        path = self.layout.record(name)
        envelope = _read(path, name)
        try:
            result = decode(kind, envelope.result, self.layout.root)
        except (RecordMismatch, TypeError) as exc:
            raise OutputDirError(f"{path}: does not fit this compressor's {name} result ({exc}); {_AGAIN}") from None
        expected = self._state_name(name) if network else None
        if envelope.state_dict != expected:
            raise OutputDirError(f"{path}: names the weights {envelope.state_dict!r} where this stage's are "
                                 f"{expected!r}; {_AGAIN}")
        state = _load_state(self.layout.state(name)) if network else None
        self.completed.append(name)
        return Record(result=result, seconds=envelope.seconds, state=state)

    def record(self, name: str, result, seconds: float, state: dict | None = None) -> None:
        """Write the record of a stage that just ran (the state file first, so a record never names a missing
        one); drops what later stages left (they describe another network now)."""
        self.completed.append(name)
        if not self.write:
            return
        self._forget_after(name)  # first: a crash before the record leaves no stale later record behind
        if state is not None:
            save_torch(self.layout.state(name), state)
        envelope = _Envelope(RECORD_FORMAT, __version__, name, seconds, encode(result, self.layout.root),
                             self._state_name(name) if state is not None else None)
        write_json(self.layout.record(name), encode(envelope))
        write_json(self.layout.status, {"status": "running", "completed_stages": self.completed,
                                        "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _state_name(self, name: str) -> str:
        """How a record names its stage's weights file: relative to the run folder."""
        return self.layout.state(name).relative_to(self.layout.root).as_posix()

    def _forget_after(self, name: str) -> None:
        """``name`` ran anew: later stages' records and epoch checkpoints describe another network, and its own
        epoch checkpoint is no longer needed."""
        layout = self.layout
        later = self.order[self.order.index(name) + 1:] if name in self.order else []
        for stage in later:
            layout.record(stage).unlink(missing_ok=True)
            layout.state(stage).unlink(missing_ok=True)
        for stage in [*later, name]:
            checkpoint = layout.checkpoint(stage)
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)

    def _refuse_pickled_records(self) -> None:
        """Earlier compressor versions kept pickled ``.stages/<stage>.pt`` records: they are never loaded."""
        old = [p.name for p in sorted(self.layout.stages.glob("*.pt")) if p.stem in self.order]
        if old:
            raise OutputDirError(f"{self.layout.stages}: {', '.join(old)} are pickled stage records of an earlier "
                                 f"compressor, which this version never loads; {_AGAIN}")


def _read(path: Path, name: str) -> _Envelope:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputDirError(f"{path}: cannot read this stage record ({type(exc).__name__}); {_AGAIN}") from None
    if not isinstance(data, dict) or data.get("record") != RECORD_FORMAT:
        raise OutputDirError(f"{path}: not a compressor stage record of format {RECORD_FORMAT}; {_AGAIN}")
    if data.get("compressor") != __version__:
        raise OutputDirError(f"{path}: written by compressor {data.get('compressor')}, this is {__version__}; {_AGAIN}")
    try:
        envelope = decode(_Envelope, data, where="record")
    except RecordMismatch as exc:
        raise OutputDirError(f"{path}: not a well-formed record of stage {name} ({exc}); {_AGAIN}") from None
    if envelope.stage != name:
        raise OutputDirError(f"{path}: not a well-formed record of stage {name} (it says stage {envelope.stage!r}); "
                             f"{_AGAIN}")
    return envelope


def _load_state(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: never runs code
    except Exception as exc:  # noqa: BLE001 - missing, truncated or not a plain state_dict
        raise OutputDirError(f"{path}: cannot read these recorded weights as a plain state_dict "
                             f"({type(exc).__name__}); {_AGAIN}") from None
    if not isinstance(state, dict):
        raise OutputDirError(f"{path}: holds a {type(state).__name__}, not a state_dict; {_AGAIN}")
    return state


def resumable_recipe(run_dir: Path, trust_model_code: bool = False):
    """The resolved recipe of an interrupted run folder; one clear line when it cannot be resumed. A recipe
    whose model is Python code the folder names (``model.arch: package.module:factory``) is refused unless
    ``trust_model_code``: resuming would import and call it."""
    from .config import load_recipe

    layout = RunLayout(Path(run_dir))
    if not layout.root.is_dir():
        raise OutputDirError(f"--resume {run_dir}: no such run folder")
    if not layout.resolved_recipe.is_file():
        raise OutputDirError(f"--resume {run_dir}: no {layout.resolved_recipe.name} in it, so it is not a compressor "
                             "run folder (or it stopped before its first stage: start it again without --resume)")
    recipe = load_recipe(layout.resolved_recipe, [], expand=False)
    code = _named_code(recipe)
    if code and not trust_model_code:
        raise OutputDirError(f"--resume {run_dir}: its recipe imports and calls {code}, code the run folder names; if "
                             "you trust this folder (you made it, or read its recipe.resolved.yaml), add "
                             "--trust-model-code")
    return recipe


def _named_code(recipe) -> str:
    """The Python code a recipe imports and calls ('' when none): a model factory, a custom task's functions."""
    names = [f"{recipe.model.arch!r} (model.arch)"] if recipe.model.user_factory else []
    if recipe.task.kind == "custom":
        names += [f"{getattr(recipe.task, f)!r} (task.{f})" for f in ("loaders", "loss", "metric")]
    return ", ".join(names)
