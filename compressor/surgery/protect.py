"""Protect what breaks: the groups torch-pruning cannot remove correctly are left whole, each with its reason.

A user's own network is the first thing they prune, and torch-pruning's dependency graph does not
understand every forward (a view with a hard-coded channel count, sizes stored for a ``torch.split``, a
channel shuffle, a layer subclass holding extra weight-shaped tensors, attention that mixes channels).
Rather than refuse the model, :func:`protect` finds the groups whose removal would break it and takes them
out of the plan; the rest is pruned, and every protected group and its reason reaches the console and the
report (``pruning.protected``).

Three checks, all before any channel of the real model goes:

- *Known hazards*, read off the group, where the pruned network would run but silently compute something
  else: a transpose or permute inside the group (a channel shuffle: torch-pruning maps channels through it
  as if it were the identity), and a grouped conv reading the group's channels beside others (a concat in
  front: removing some shifts its input slices, and torch-pruning keeps the first kept indices per slice).
- *The screen*: on a CPU copy, every group loses about half its channels (the rounding rules applied),
  all at once; if that copy still runs and keeps its output shapes, nothing is protected (the usual case:
  one trial). Otherwise the groups are removed one at a time, the forward checked after each, and a group
  whose removal raises or breaks the forward is protected (the copy is rebuilt from the groups that passed).
- *The method's own choice* (:func:`breaking`, from ``prune.decide``): the same trial on the channels the
  method chose, which can break what the screen's choice did not (a split piece emptied, ``torch.chunk``
  re-splitting evenly); groups the criterion cannot score are protected there too.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import SurgeryError
from .graph import GroupInfo, build_graph
from .plan import Rounding, spread_channels
from .remove import apply_selection, check_forward, remove_group

SCREEN_RATIO = 0.5
_REORDERING = ("TransposeBackward", "PermuteBackward")


def protect(model: nn.Module, example: torch.Tensor, groups: list, rounding: Rounding):
    """(the groups that may be pruned, {group key: why it is protected}, the probe) for ``groups`` of
    ``model``. The probe is (kept counts, the CPU copy with them removed) of the screen's trial, or None."""
    reasons = hazards(groups)
    remaining = [(info, group) for info, group in groups if info.key not in reasons]
    found, probe = screen(model, example, [info for info, _ in remaining], rounding)
    reasons.update(found)
    return [(info, group) for info, group in remaining if info.key not in reasons], reasons, probe


def hazards(groups: list) -> dict[str, str]:
    """Groups whose channels pass a channel-reordering op (a channel shuffle's transpose or permute) or feed a
    grouped conv beside other channels."""
    import torch_pruning as tp

    found = {}
    for info, group in groups:
        for item in group:
            module = item.dep.target.module
            if isinstance(module, tp.ops._ElementWiseOp) and str(module._grad_fn).startswith(_REORDERING):
                found[info.key] = ("channel shuffle: its channels pass a transpose/permute, which torch-pruning maps as "
                                   "the identity (pruning it would scramble the channels)")
                break
            if _shares_grouped_input(item):
                found[info.key] = (f"a grouped conv ({module.groups} groups) reads these channels beside others (a "
                                   "concat): removing some would shift its input slices, which torch-pruning does "
                                   "not follow")
                break
    return found


def _shares_grouped_input(item) -> bool:
    """A grouped (not depthwise) conv that reads the group's channels as part of a wider input."""
    module = item.dep.target.module
    grouped = isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups < module.in_channels
    return grouped and getattr(item.dep.handler, "__name__", "") == "prune_in_channels" and \
        len(item.idxs) != module.in_channels


def screen(model: nn.Module, example: torch.Tensor, infos: list[GroupInfo], rounding: Rounding):
    """({group key: reason} of the groups whose trial removal raises or breaks the forward of a CPU copy,
    (kept counts, the copy with the other groups' trial channels removed) or None when nothing was removed)."""
    chosen = {info.key: idxs for info in infos if (idxs := trial_channels(info, rounding))}
    if not chosen:
        return {}, None
    reasons, trial, passed = breaking(model, example, chosen)
    return reasons, ((_kept(infos, passed), trial) if passed else None)


def breaking(model: nn.Module, example: torch.Tensor, chosen: dict[str, list[int]]):
    """({group key: reason} of the groups in ``chosen`` whose removal raises or breaks the forward, the CPU
    copy with the others removed, those others). All at once first (one trial); group by group only when
    that fails. ``decide`` runs it on the method's own choice of channels, which the screen did not try."""
    example = example.detach().cpu()
    original = copy.deepcopy(model).cpu().eval()
    trial = copy.deepcopy(original)
    if _error(_remove_all, original, trial, example, chosen) is None:
        return {}, trial, dict(chosen)
    reasons: dict[str, str] = {}
    passed: dict[str, list[int]] = {}
    trial, graph = _fresh(original, example, passed)
    for key, idxs in chosen.items():
        problem = _error(_remove_one, original, trial, graph, example, key, idxs)
        if problem is None:
            passed[key] = idxs
            continue
        reasons[key] = problem
        trial, graph = _fresh(original, example, passed)
    return reasons, trial, passed


def trial_channels(info: GroupInfo, rounding: Rounding) -> list[int]:
    """The channels a screen removes from a group: about half, as the rounding rules allow, spread over the
    group (:func:`~compressor.surgery.plan.spread_channels`)."""
    keep = rounding.for_ratio(info, SCREEN_RATIO)
    if keep >= info.channels:
        lower = [k for k in rounding.ladder(info) if k < info.channels]
        if not lower:
            return []
        keep = lower[-1]
    return spread_channels(info, keep)


def _kept(infos: list[GroupInfo], removed: dict[str, list[int]]) -> dict[str, int]:
    return {info.key: info.channels - len(removed.get(info.key, [])) for info in infos}


def _remove_all(original: nn.Module, trial: nn.Module, example: torch.Tensor, chosen: dict[str, list[int]]) -> None:
    apply_selection(trial, example, chosen)
    check_forward(original, trial, example)


def _remove_one(original: nn.Module, trial: nn.Module, graph, example: torch.Tensor, key: str, idxs: list[int]) -> None:
    remove_group(trial, graph, key, idxs)
    check_forward(original, trial, example)


def _fresh(original: nn.Module, example: torch.Tensor, passed: dict[str, list[int]]):
    """A new copy with the groups that passed removed, and its graph for the next removals."""
    trial = copy.deepcopy(original)
    graph = build_graph(trial, example)
    for key, idxs in passed.items():
        remove_group(trial, graph, key, idxs)
    return trial, graph


def _error(action, *args) -> str | None:
    """None when ``action(*args)`` succeeds, else one line saying what went wrong."""
    try:
        action(*args)
    except SurgeryError as exc:
        return str(exc).split(" (does its forward")[0]
    except Exception as exc:  # noqa: BLE001 - torch-pruning and the user's forward raise anything
        text = str(exc).strip().splitlines()
        return f"torch-pruning fails removing it: {type(exc).__name__}: {text[0] if text else ''}"[:300]
    return None
