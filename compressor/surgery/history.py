"""Saving a pruned model so that it can be rebuilt: plain state_dict + pruning history (no pickled modules).

``pruning_history.json`` holds how to build the unpruned model (arch, kwargs, input shape, classes) and
torch-pruning's history (root layer, output/input side, removed indices, in order). Reloading builds the
unpruned model, replays the history on a fresh DependencyGraph, then loads the state_dict strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from .._io import save_torch, write_json
from ..artifacts import HISTORY_FILE, STATE_FILE, RunLayout
from ..errors import CheckpointError
from .graph import build_graph, example_input

HISTORY_FORMAT = 1


def save_pruned(folder: Path, model: nn.Module, history: list, model_config: dict, num_classes: int | None,
                input_shape: tuple[int, int, int]) -> dict[str, Path]:
    """Write ``model.pt`` (state_dict) and ``pruning_history.json`` into ``folder``."""
    folder = Path(folder)
    record = {"format": HISTORY_FORMAT, "model": model_config, "num_classes": num_classes,
              "input_shape": list(input_shape), "history": history}
    state = save_torch(folder / STATE_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    hist = write_json(folder / HISTORY_FILE, record)
    return {"state_dict": state, "history": hist}


def replay(model: nn.Module, history: list, input_shape: tuple[int, int, int]) -> nn.Module:
    """Apply a recorded pruning history to a freshly built, unpruned model (in place)."""
    graph = build_graph(model, example_input(input_shape))
    graph.load_pruning_history([list(step) for step in history])
    return model


def load_pruned(folder: Path) -> nn.Module:
    """Rebuild a pruned model from a run's ``pruned/`` folder (or the run folder itself)."""
    from ..config import ModelConfig
    from ..models import build_model

    folder = Path(folder)
    if RunLayout(folder).history.is_file():
        folder = RunLayout(folder).pruned
    path = folder / HISTORY_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: point at a run folder or its pruned/ subfolder")
    record = json.loads(path.read_text())
    if record.get("format") != HISTORY_FORMAT:
        raise CheckpointError(f"{path}: unsupported history format {record.get('format')!r}")
    config = ModelConfig.model_validate({k: v for k, v in record["model"].items() if k in ModelConfig.model_fields})
    model, _ = build_model(config.model_copy(update={"checkpoint": None}), record["num_classes"])
    replay(model, record["history"], tuple(record["input_shape"]))
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
