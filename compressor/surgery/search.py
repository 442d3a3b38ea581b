"""How many channels each group keeps so that a MACs target is met within 1 point.

Everything here works on kept counts and a cost: the exact :class:`~compressor.surgery.cost.CostModel`, so
that no model is pruned while searching, or, for graphs it misses, :class:`~compressor.surgery.measured.
MeasuredCost`, which prunes and counts a copy per plan (then the search stays small: no exhaustive pass,
greedy single-group steps). First the uniform ratio is bisected. Rounding (``round_to``, small
layers) makes the reduction a step function of the ratio, which can jump over the target; then the plans
off the uniform ratio are searched: all of them when there are few (small networks, where this happens),
otherwise a beam search that moves single groups by one rounding step (down, up, or one down and another
up). Among the plans within the tolerance the most uniform one (smallest variance of kept fractions) wins.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ..config import PruningConfig
from ..errors import SurgeryError
from .cost import CostModel
from .plan import GroupPlan, Rounding, kept_counts

TOLERANCE_PCT = 1.0  # the achieved MACs reduction must be this close to the target
EXHAUSTIVE_LIMIT = 20_000  # search every combination of kept counts below this many
BEAM_WIDTH = 8
PAIR_GROUPS = 40  # above this many groups the beam moves single groups only
CANDIDATE_BUDGET = 50_000  # plans the beam may rank in all (about a second each 5,000 on the exact cost)
MEASURED_ROUNDS = 2  # greedy single-group steps when every plan is pruned and counted (MeasuredCost)


def target_of(cfg: PruningConfig) -> tuple[str, float] | None:
    """(metric, percent) of the recipe's reduction target: "macs" or "params" (conv/linear weights)."""
    if cfg.macs_reduction_pct is not None:
        return "macs", cfg.macs_reduction_pct
    if cfg.params_reduction_pct is not None:
        return "params", cfg.params_reduction_pct
    return None


@dataclass(frozen=True)
class Plan:
    kept: dict[str, int]  # group key -> channels kept
    ratio: float  # the uniform ratio (before single-group steps)
    moved: tuple[str, ...]  # groups the local search moved off the uniform ratio
    trials: tuple[dict, ...]  # what was evaluated (on the cost model)
    predicted_pct: float  # MACs reduction of ``kept`` according to the cost model
    latency: dict = field(default_factory=dict)  # pruning.latency_target: what was measured (latency_search)


def plan_for_ratio(plans: list[GroupPlan], cost: CostModel, cfg: PruningConfig, ratio: float) -> Plan:
    kept = kept_counts(plans, Rounding.of(cfg), ratio)
    return Plan(kept, ratio, (), (), cost.reduction_pct(kept))


def plan_for_target(plans: list[GroupPlan], cost: CostModel, cfg: PruningConfig, shortfall_ok: bool = False,
                    stuck: dict[str, str] | None = None) -> Plan:
    """The plan closest to the recipe's target. Out of reach: with ``shortfall_ok`` (groups were protected
    because removing them breaks the model) the most the other groups can give, else an error naming the
    groups ``stuck`` (key -> why they cannot move)."""
    metric, target = target_of(cfg)
    trials: list[dict] = []

    def evaluate(ratio: float) -> tuple[dict[str, int], float]:
        kept = kept_counts(plans, Rounding.of(cfg), ratio)
        value = cost.reduction_pct(kept, metric)
        trials.append({"ratio": round(ratio, 6), f"{metric}_reduction_pct": round(value, 3)})
        return kept, value

    deepest, most = evaluate(1.0)
    if most < target - TOLERANCE_PCT:
        if shortfall_ok:
            return Plan(deepest, 1.0, (), tuple(trials), most)
        raise SurgeryError(_out_of_reach(metric, target, most, cfg, stuck or {}))
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        kept, value = evaluate(mid)
        if abs(value - target) <= TOLERANCE_PCT / 2:
            return Plan(kept, mid, (), tuple(trials), value)
        lo, hi = (mid, hi) if value < target else (lo, mid)
        if hi - lo < 1e-7:
            break
    kept, value = evaluate(lo)
    if abs(value - target) <= TOLERANCE_PCT:
        return Plan(kept, lo, (), tuple(trials), value)
    kept = local_search(kept, plans, cost, cfg, metric, target)
    moved = tuple(k for k, v in kept.items() if v != kept_counts(plans, Rounding.of(cfg), lo)[k])
    return Plan(kept, lo, moved, tuple(trials), cost.reduction_pct(kept, metric))


def local_search(kept: dict[str, int], plans: list[GroupPlan], cost: CostModel, cfg: PruningConfig, metric: str,
                 target: float, anchor: dict[str, int] | None = None) -> dict[str, int]:
    """Among the plans within the tolerance reachable by rounding steps from ``kept`` (all of them when few):
    the most uniform one, or with an ``anchor`` plan the closest to it (a method's own allocation);
    raises SurgeryError when none is within the tolerance."""
    ladders = {p.info.key: Rounding.of(cfg).ladder(p.info) for p in plans if not p.fixed}
    channels = {p.info.key: p.info.channels for p in plans}

    def shape(k: dict[str, int]) -> float:
        if anchor is None:
            return _spread(k, channels)
        return sum((k[key] - anchor[key]) ** 2 / channels[key] ** 2 for key in ladders)

    def rank(k: dict[str, int]) -> tuple:
        error = abs(cost.reduction_pct(k, metric) - target)
        return (error > TOLERANCE_PCT, shape(k) if error <= TOLERANCE_PCT else error)

    exact = getattr(cost, "exact", True)  # a MeasuredCost prunes and counts a copy per plan: few evaluations
    if exact and math.prod(len(v) for v in ladders.values()) <= EXHAUSTIVE_LIMIT:
        candidates = (dict(kept, **dict(zip(ladders, combo))) for combo in itertools.product(*ladders.values()))
        best = min(candidates, key=rank)
    else:
        best = _beam(kept, ladders, rank, rounds=64 if exact else MEASURED_ROUNDS, pairs=exact,
                     width=BEAM_WIDTH if exact else 1)
    if rank(best)[0]:
        raise SurgeryError(
            f"pruning.{metric}_reduction_pct: cannot get within {TOLERANCE_PCT} point of {target}% (closest "
            f"{cost.reduction_pct(best, metric):.2f}%): the channel counts are too coarse (pruning.round_to {cfg.round_to}, "
            f"min_channels {cfg.min_channels}); lower round_to, set a ratio instead, or add per-layer ratios")
    return best


def _beam(kept: dict[str, int], ladders: dict[str, list[int]], rank, rounds: int = 64, pairs: bool = True,
          width: int = BEAM_WIDTH) -> dict[str, int]:
    beam, seen = [kept], {tuple(sorted(kept.items()))}
    pairs = pairs and len(ladders) <= PAIR_GROUPS  # pairs grow with the square of the groups (170 in MSDNet)
    for _ in range(rounds):
        if not rank(beam[0])[0] or len(seen) > CANDIDATE_BUDGET:
            break
        fresh = []
        for plan in beam:
            for move in _moves(plan, ladders, pairs):
                signature = tuple(sorted(move.items()))
                if signature not in seen:
                    seen.add(signature)
                    fresh.append(move)
        if not fresh:
            break
        beam = sorted(beam + fresh, key=rank)[:width]
    return beam[0]


def _moves(kept: dict[str, int], ladders: dict[str, list[int]], pairs: bool = True):
    """Plans one step away: one group down or up, or (with ``pairs``) one down and another up."""
    steps = {}
    for key, ladder in ladders.items():
        i = ladder.index(kept[key]) if kept[key] in ladder else None
        if i is None:
            continue
        steps[key] = [ladder[j] for j in (i - 1, i + 1) if 0 <= j < len(ladder)]
    for key, options in steps.items():
        for value in options:
            yield {**kept, key: value}
    if not pairs:
        return
    for down in steps:
        for up in steps:
            lower = [v for v in steps[down] if v < kept[down]]
            higher = [v for v in steps[up] if v > kept[up]]
            if down != up and lower and higher:
                yield {**kept, down: lower[0], up: higher[0]}


def _spread(kept: dict[str, int], channels: dict[str, int]) -> float:
    """Variance of the kept fractions: 0 for a uniform plan (max - min would be dominated by small groups,
    whose only choices are far apart)."""
    fractions = [kept[k] / channels[k] for k in kept]
    mean = sum(fractions) / len(fractions)
    return sum((f - mean) ** 2 for f in fractions) / len(fractions)


def _out_of_reach(metric: str, target: float, most: float, cfg: PruningConfig, stuck: dict[str, str]) -> str:
    hints = ["lower the target", "relax pruning.ignore / pruning.layers"]
    if cfg.residual == "internal":
        hints.append("use residual: coupled")
    if cfg.round_to > 1 or cfg.min_channels > 1:
        hints.append("lower pruning.round_to / min_channels")
    what = "MACs" if metric == "macs" else "conv/linear parameters"
    return (f"pruning.{metric}_reduction_pct: {target}% is out of reach; keeping the minimum "
            f"(max(round_to, min_channels) = {max(cfg.round_to, cfg.min_channels)} channels) in every allowed group "
            f"with residual: {cfg.residual} removes {most:.1f}% of {what}{_stuck(stuck)} ({'; '.join(hints)})")


def _stuck(stuck: dict[str, str], shown: int = 3) -> str:
    """'; groups that cannot move: 12 residual stream (layer1.0.conv2, ...), 1 output head (fc)'."""
    if not stuck:
        return ""
    by_reason: dict[str, list[str]] = {}
    for key, why in stuck.items():
        by_reason.setdefault(why, []).append(key)
    parts = [f"{len(keys)} {why} ({', '.join(keys[:shown])}{', ...' if len(keys) > shown else ''})"
             for why, keys in sorted(by_reason.items(), key=lambda item: -len(item[1]))]
    return "; groups that cannot move: " + ", ".join(parts)
