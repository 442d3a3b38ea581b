"""Removing chosen channels through torch-pruning, and the check that the result still runs.

``apply_selection`` removes whole plans; ``remove_group`` one group on an existing graph (the protection
screen in ``protect.py`` goes group by group); ``check_forward`` runs the pruned network against the
original and refuses one that fails or changed its output shape.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import SurgeryError
from .graph import build_graph


def apply_selection(model: nn.Module, example: torch.Tensor, chosen: dict[str, list[int]]) -> list:
    """Remove ``chosen`` channels (group key -> indices) from ``model`` in place; returns the replayable history."""
    graph = build_graph(model, example)
    for key, idxs in chosen.items():
        remove_group(model, graph, key, idxs)
    return copy.deepcopy(graph.pruning_history())


def remove_group(model: nn.Module, graph, key: str, idxs: list[int]) -> None:
    """Remove channels ``idxs`` of the group rooted at layer ``key`` through ``graph`` (built on ``model``)."""
    module = model.get_submodule(key)
    pruner = graph.get_pruner_of_module(module)
    group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs)
    if not graph.check_pruning_group(group):
        raise SurgeryError(f"pruning {len(idxs)} channels of group {key} would remove every channel of a layer; "
                           f"lower the ratio or raise pruning.min_channels")
    group.prune()


def check_forward(original: nn.Module, pruned: nn.Module, example: torch.Tensor) -> None:
    """The pruned model must run and produce outputs of the original's shape."""
    was_training = pruned.training
    pruned.eval()
    try:
        with torch.no_grad():
            expected = original.eval()(example)
            got = pruned(example)
    except Exception as exc:
        raise SurgeryError(
            f"the pruned {type(pruned).__name__} fails in forward: {str(exc).strip().splitlines()[0]} "
            f"(does its forward hard-code a channel count, e.g. x.view(B, 1024)? use x.flatten(1))") from exc
    finally:
        pruned.train(was_training)
    if _shapes(got) != _shapes(expected):
        raise SurgeryError(f"the pruned {type(pruned).__name__} outputs shape {_shapes(got)} instead of "
                           f"{_shapes(expected)}; the output layer must not be pruned")


def _shapes(output) -> object:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (list, tuple)):
        return tuple(_shapes(o) for o in output)
    if isinstance(output, dict):
        return {k: _shapes(v) for k, v in output.items()}
    return type(output).__name__
