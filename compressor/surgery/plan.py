"""How many channels each group loses, and which ones.

A plan is computed from scores (one per channel, higher = keep) that a method produced once on the
unpruned model. Rounding is ours, not torch-pruning's (its ``round_to`` silently skips groups containing a
grouped conv, DESIGN.md §5): the kept count of every group is a multiple of ``round_to`` and of the number
of grouped-conv slices, and in a grouped conv the same positions are removed from every slice.
:class:`Rounding` is the only place these rules live; methods that propose counts get an instance of it
(``methods.base.Rounding``), never the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import PruningConfig
from .graph import GroupInfo, match_name


@dataclass(frozen=True)
class GroupPlan:
    info: GroupInfo
    ratio: float  # requested fraction removed
    rule: str  # where the ratio came from: "global", "layers[i]"
    fixed: bool  # a per-layer rule: not scaled by the MACs-target search


def group_ratios(groups: list[GroupInfo], cfg: PruningConfig, global_ratio: float,
                 layer_ratios: dict[str, float] | None = None) -> list[GroupPlan]:
    """The requested ratio of every group: the first matching ``pruning.layers`` rule, else the
    ``layer_ratios`` entry of the group's first layer in module order, else the global ratio."""
    plans = []
    order = {name: i for i, name in enumerate(layer_ratios or {})}
    for info in groups:
        rule = _first_rule(info, cfg)
        listed = sorted((n for n in info.producers if n in order), key=order.get)
        if rule is not None:
            index, ratio = rule
            plans.append(GroupPlan(info, ratio, f"layers[{index}]", fixed=True))
        elif listed:
            plans.append(GroupPlan(info, layer_ratios[listed[0]], f"layer_ratios[{order[listed[0]]}]", fixed=True))
        else:
            plans.append(GroupPlan(info, global_ratio, "global", fixed=False))
    return plans


def _first_rule(info: GroupInfo, cfg: PruningConfig) -> tuple[int, float] | None:
    for i, rule in enumerate(cfg.layers):
        if any(match_name(rule.match, name, f"pruning.layers[{i}].match") for name in info.producers):
            return i, rule.ratio
    return None


def kept_channels(channels: int, ratio: float, multiple: int, minimum: int) -> int:
    """Channels kept when removing ``ratio`` of ``channels``: floor(ratio x channels) go, as in HRank's and
    torch-pruning's code; then rounded to the nearest multiple, never below ``minimum``."""
    if ratio <= 0:
        return channels
    return _nearest(channels - math.floor(ratio * channels + 1e-9), channels, multiple, minimum)


def _nearest(keep: int | float, channels: int, multiple: int, minimum: int) -> int:
    keep = max(multiple, int(round(keep / multiple)) * multiple)
    keep = max(keep, math.ceil(minimum / multiple) * multiple)
    return min(keep, channels)


@dataclass(frozen=True)
class Rounding:
    """Which kept counts a group may take: multiples of lcm(``round_to``, its grouped-conv slices), at least
    ``min_channels`` (and one multiple), or all its channels."""

    round_to: int = 1
    min_channels: int = 1

    @classmethod
    def of(cls, cfg: PruningConfig) -> Rounding:
        return cls(cfg.round_to, cfg.min_channels)

    def multiple(self, info: GroupInfo) -> int:
        return math.lcm(self.round_to, info.slices)

    def minimum(self, info: GroupInfo) -> int:
        """``min_channels``, and one channel of each of the group's pieces (a layer never loses every channel)."""
        return max(self.min_channels, len(info.pieces))

    def for_ratio(self, info: GroupInfo, ratio: float) -> int:
        """The kept count when ``ratio`` of the group's channels go (:func:`kept_channels`)."""
        return kept_channels(info.channels, ratio, self.multiple(info), self.minimum(info))

    def up(self, info: GroupInfo, keep: int) -> int:
        """The smallest allowed count holding ``keep`` channels: a channel a method kept is never dropped."""
        multiple = self.multiple(info)
        return min(info.channels, math.ceil(max(keep, self.minimum(info), 1) / multiple) * multiple)

    def nearest(self, info: GroupInfo, keep: int) -> int:
        """The allowed count nearest to ``keep``."""
        return _nearest(keep, info.channels, self.multiple(info), self.minimum(info))

    def apply(self, info: GroupInfo, keep: int, how: str) -> int:
        """``keep`` rounded ``up`` or to the ``nearest`` allowed count (a method's :class:`Allocation`)."""
        return self.up(info, keep) if how == "up" else self.nearest(info, keep)

    def ladder(self, info: GroupInfo) -> list[int]:
        """Every count the group may keep: multiples of its step from its minimum, and its full width."""
        step = self.multiple(info)
        low = max(step, math.ceil(self.minimum(info) / step) * step)
        return sorted({*range(low, info.channels + 1, step), info.channels})


def select_pruned(scores: torch.Tensor, keep: int, slices: int = 1) -> list[int]:
    """Indices of the lowest-scoring channels to remove so that ``keep`` remain (stable for ties).

    With ``slices > 1`` (a grouped conv), scores are averaged over the slices and the same positions are
    removed in every slice.
    """
    channels = scores.numel()
    if keep >= channels:
        return []
    if slices == 1:
        order = torch.argsort(scores.float(), stable=True)
        return sorted(order[: channels - keep].tolist())
    size = channels // slices
    per_slice = torch.argsort(scores.float().view(slices, size).mean(0), stable=True)
    drop = per_slice[: (channels - keep) // slices].tolist()
    return sorted(s * size + j for s in range(slices) for j in drop)


def keep_pieces(drop: list[int], scores: torch.Tensor, pieces) -> list[int]:
    """``drop`` changed as little as possible so that every piece keeps a channel: in a piece that would lose
    all, its best-scoring channel stays and the lowest-scoring channel that can go (outside every piece
    about to be emptied) goes instead; the count is unchanged where possible."""
    drop = set(drop)
    for piece in pieces:
        if not piece <= drop:
            continue
        keep = max(piece, key=lambda i: (float(scores[i]), -i))
        drop.discard(keep)
        spare = [i for i in range(scores.numel()) if i not in drop and i != keep
                 and not any(i in p and len(p - drop) == 1 for p in pieces)]
        if spare:
            drop.add(min(spare, key=lambda i: (float(scores[i]), i)))
    return sorted(drop)


def spread_channels(info: GroupInfo, keep: int) -> list[int]:
    """Channels to remove from a group so that ``keep`` remain when no scores exist (trials, cost counts):
    spread over the group (every other channel first, the same positions in every grouped-conv slice) as
    scores spread them, so that no concat input or split piece is emptied by the choice of channels alone."""
    size = info.channels // info.slices
    order = [*range(1, size, 2), *range(0, size, 2)]  # the lowest "score" goes first
    scores = torch.empty(size)
    scores[torch.as_tensor(order, dtype=torch.long)] = torch.arange(size, dtype=torch.float)
    scores = scores.repeat(info.slices)
    return keep_pieces(select_pruned(scores, keep, info.slices), scores, info.pieces)


def kept_counts(plans: list[GroupPlan], rounding: Rounding, global_ratio: float) -> dict[str, int]:
    """Channels each group keeps: its rule's ratio, or ``global_ratio`` for the others, rounded."""
    return {p.info.key: rounding.for_ratio(p.info, p.ratio if p.fixed else global_ratio) for p in plans}


def selection(plans: list[GroupPlan], scores: dict[str, torch.Tensor], kept: dict[str, int]) -> dict[str, list[int]]:
    """Channels to remove per group key so that ``kept[key]`` remain: the lowest-scoring ones."""
    chosen = {}
    for plan in plans:
        score = scores[plan.info.key]
        idxs = keep_pieces(select_pruned(score, kept[plan.info.key], plan.info.slices), score, plan.info.pieces)
        if idxs:
            chosen[plan.info.key] = idxs
    return chosen
