"""``pruning.latency_target``: the plan whose *measured* speedup on the target backend meets the target.

1. A latency model (:class:`~.latency_model.LatencyModel`): each group's channel chain (or its layers) timed
   on the backend over a grid of its widths, cached on disk per backend, machine and batch.
2. An allocation for a budget: ``knapsack`` keeps, per group, only the widths the model says are faster than
   every wider one (:func:`~.knapsack.fast_widths`; onnxruntime CPU runs output widths in blocks of 16 here)
   and picks one per group for the least importance lost (the method's scores: l1, fpgm, hrank, pfp,
   functionality all plug in; :func:`~.knapsack.knapsack`) on the model's additive group curves.
   ``uniform`` is one ratio for every group, as a MACs target gives, bisected on the model instead of MACs.
3. Whole-graph correction: isolated layer times do not add up to the graph's, so every candidate is pruned
   on a copy, exported and timed interleaved with the unpruned graph (the ``LatencyOracle``), and the share of
   the model's latency the next candidate removes is corrected from what was measured (secant between the
   closest candidates on either side of the aim once both exist), until a candidate lands within half the
   tolerance of the aim or ``rounds`` are spent (then the closest one). The aim is the target plus half the
   tolerance, so that the accepted candidates measure between the target and the target plus the tolerance:
   the final model is timed again by the profile stage, whose gate allows the tolerance *below* the target, and
   a candidate accepted just under the target failed that gate on run-to-run noise alone (seen: the quickstart,
   1.41x-1.58x for one plan in four runs). A search that ends short of the target by more
   than the tolerance stops the run (a model that misses its latency gate is not worth fine-tuning): with the
   best reachable speedup when the deepest plan the groups allow was timed, else asking for more rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import SurgeryError
from ..progress import log
from .knapsack import Option, fast_widths, importance_lost, knapsack
from .latency_model import LatencyModel
from .plan import GroupPlan, Rounding, kept_counts

FAST_MARGIN = 0.005  # a width must save more than this share of its layers' time over every wider one
NUDGES = 3  # attempts to move off a plan already measured before stopping at the granularity


class LatencyOracle(Protocol):
    """What the search needs from a backend (``stages/latency.py`` implements it; tests use a fake)."""

    backend: str
    batch: int
    baseline_ms: float  # whole-graph median of the unpruned model

    def layer_ms(self, specs) -> dict[str, float]:
        """LayerSpec.key -> median ms of each layer alone (``profiling.layer_latency.LayerTimer.ms``)."""

    def speedup(self, chosen: dict[str, list[int]]) -> float:
        """Baseline / pruned whole-graph latency with ``chosen`` channels removed, measured interleaved."""


@dataclass(frozen=True)
class Goal:
    speedup: float | None
    ms: float | None
    tolerance: float  # fraction of the target speedup
    allocation: str  # knapsack | uniform
    rounds: int

    @classmethod
    def of(cls, target) -> Goal:
        return cls(target.speedup, target.ms, target.tolerance_pct / 100, target.allocation, target.rounds)

    def target(self, baseline_ms: float) -> float:
        return self.speedup if self.speedup is not None else baseline_ms / self.ms


@dataclass(frozen=True)
class LatencyPlan:
    kept: dict[str, int]
    target: float  # the speedup asked for
    speedup: float  # measured speedup of ``kept``
    trials: tuple[dict, ...]  # one per whole-graph measurement
    model: dict  # what the latency model predicted and how it was built


def plan_for_latency(plans: list[GroupPlan], model: LatencyModel, rounding: Rounding, value: dict,
                     oracle: LatencyOracle, goal: Goal, select: Callable[[dict[str, int]], dict]) -> LatencyPlan:
    """The kept channels of every group whose measured speedup meets ``goal``; ``select(kept)`` says which
    channels a plan removes (the method's lowest-scoring ones); ``value``: group key -> (channel scores, weight),
    see :func:`allocator`."""
    allocate, deepest = allocator(plans, model, rounding, value, goal.allocation)
    target = goal.target(oracle.baseline_ms)
    if target <= 1.0:
        raise SurgeryError(f"pruning.latency_target.ms {goal.ms}: the unpruned model already runs in "
                           f"{oracle.baseline_ms:.3f} ms on {oracle.backend} at batch {oracle.batch}; nothing to do")
    trials: list[dict] = []
    measured: set[tuple] = set()

    def measure(kept: dict[str, int], fraction: float) -> float:
        measured.add(_signature(kept))
        speedup = oracle.speedup(select(kept))
        trials.append(_trial(len(trials) + 1, fraction, kept, model, speedup))
        log(f"  latency round {len(trials)}: model {model.base_ms / model.ms(kept):.3f}x, measured {speedup:.3f}x "
            f"(target {target:.3f}x on {oracle.backend}, batch {oracle.batch})")
        return speedup

    kept, speedup = search(allocate, measure, target * (1 + goal.tolerance / 2), goal, deepest)
    if abs(speedup / target - 1) > goal.tolerance:
        reachable = max(t["measured_speedup"] for t in trials)
        if reachable < target * (1 - goal.tolerance):  # a model short of the target fails its gate: stop now
            bottom = _signature(allocate(deepest)) in measured  # the deepest plan was timed
            raise SurgeryError(_unreachable(target, reachable, oracle, goal, deepest) if bottom else
                               _not_reached(target, reachable, oracle, goal, len(trials)))
        log(f"  note: the closest measured speedup, {speedup:.3f}x, is outside {goal.tolerance:.0%} of the target "
            f"{target:.3f}x after {len(trials)} rounds (the width steps are too coarse); raise "
            f"latency_target.rounds or lower round_to")
    summary = {"base_ms": round(model.base_ms, 6), "predicted_ms": round(model.ms(kept), 6),
               "allocation": goal.allocation, "deepest_fraction": round(deepest, 6)}
    return LatencyPlan(kept, target, speedup, tuple(trials), summary)


def search(allocate: Callable[[float], dict], measure: Callable[[dict, float], float], target: float, goal: Goal,
           deepest: float) -> tuple[dict[str, int], float]:
    """Measure candidates (``allocate(fraction of the model's latency removed)``), correcting the fraction,
    until one is within half the tolerance; the closest one measured (ties: the faster)."""
    seen: dict[tuple, tuple[dict, float, float]] = {}  # plan -> (kept, speedup, fraction)
    below = above = None  # (fraction, speedup) closest to the target on either side
    fraction = min(1 - 1 / target, deepest)
    for _ in range(goal.rounds):
        fresh = _fresh(allocate, fraction, seen, target, below, above, deepest)
        if fresh is None:
            break
        kept, fraction = fresh
        speedup = measure(kept, fraction)
        seen[_signature(kept)] = (kept, speedup, fraction)
        if abs(speedup / target - 1) <= goal.tolerance / 2:
            break
        if speedup < target:
            below = (fraction, speedup) if below is None or fraction > below[0] else below
            if fraction >= deepest - 1e-9:
                break  # the deepest plan is measured: nothing faster to try
        else:
            above = (fraction, speedup) if above is None or fraction < above[0] else above
        fraction = _next_fraction(fraction, speedup, target, below, above, deepest)
    kept, speedup, _ = min(seen.values(), key=lambda s: (abs(s[1] / target - 1), -s[1]))
    return kept, speedup


def _next_fraction(fraction: float, speedup: float, target: float, below, above, deepest: float) -> float:
    """The share of the model's latency to remove next: secant in 1/speedup between the brackets, or, with one
    side only, the last candidate's measured-to-predicted removal applied to the target's."""
    if below is not None and above is not None:
        (f0, s0), (f1, s1) = below, above
        if abs(1 / s0 - 1 / s1) < 1e-12:
            return (f0 + f1) / 2
        return f0 + (f1 - f0) * (1 / s0 - 1 / target) / (1 / s0 - 1 / s1)
    removed, wanted = 1 - 1 / speedup, 1 - 1 / target
    if removed <= 1e-3:
        return min(deepest, max(fraction * 2, fraction + 0.05))
    return min(deepest, max(0.0, fraction * wanted / removed))


def _fresh(allocate, fraction: float, seen: dict, target: float, below, above, deepest: float):
    """(plan, fraction) for ``fraction``, or nudged halfway toward the bracket still open when that plan was
    measured already; None when nudging finds nothing new (the width steps are coarser than the tolerance)."""
    low = below[0] if below else 0.0
    high = above[0] if above else deepest
    for _ in range(NUDGES + 1):
        kept = allocate(fraction)
        earlier = seen.get(_signature(kept))
        if earlier is None:
            return kept, fraction
        fraction = (fraction + high) / 2 if earlier[1] < target else (fraction + low) / 2
    return None


def _signature(kept: dict[str, int]) -> tuple:
    return tuple(sorted(kept.items()))


def allocator(plans: list[GroupPlan], model: LatencyModel, rounding: Rounding, value: dict, how: str):
    """(allocate(fraction) -> kept, the deepest fraction allowed): plans removing ``fraction`` of the model's
    latency, by ``knapsack`` or one ``uniform`` ratio. ``value[key] = (scores, weight)``: a width gives up
    ``weight`` x the share of the group's score its removed channels hold (surgery weighs each group by the
    MACs it controls, so that the knapsack keeps the most important multiply-adds per millisecond)."""
    if how == "uniform":
        return _uniform(plans, model, rounding)
    fixed = kept_counts([p for p in plans if p.fixed], rounding, 0.0)
    free = {p.info.key: p.info.channels for p in plans if not p.fixed}
    ladders = {k: fast_widths(model.curves[k].widths, lambda w, k=k: model.group_ms(k, w),
                              FAST_MARGIN * model.group_ms(k, c)) for k, c in free.items()}
    lost = {k: importance_lost(value[k][0], ladders[k]) for k in free}
    options = {k: [Option(w, model.group_ms(k, c) - model.group_ms(k, w), value[k][1] * lost[k][w])
                   for w in ladders[k]] for k, c in free.items()}
    floor = {**fixed, **{k: v[0] for k, v in ladders.items()}}
    deepest = 1 - model.ms(floor) / model.base_ms

    def allocate(fraction: float) -> dict[str, int]:
        chosen = knapsack(options, fraction * model.base_ms - (model.base_ms - model.ms(fixed)))
        return {**fixed, **(chosen or floor)}

    return allocate, deepest


def _uniform(plans: list[GroupPlan], model: LatencyModel, rounding: Rounding):
    deepest_kept = kept_counts(plans, rounding, 1.0)
    deepest = 1 - model.ms(deepest_kept) / model.base_ms

    def allocate(fraction: float) -> dict[str, int]:
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            if 1 - model.ms(kept_counts(plans, rounding, mid)) / model.base_ms < fraction:
                lo = mid
            else:
                hi = mid
        return kept_counts(plans, rounding, hi)

    return allocate, deepest


def _trial(index: int, fraction: float, kept: dict[str, int], model: LatencyModel, speedup: float) -> dict:
    return {"round": index, "fraction": round(fraction, 6), "predicted_ms": round(model.ms(kept), 6),
            "predicted_speedup": round(model.base_ms / model.ms(kept), 4), "measured_speedup": round(speedup, 4),
            "channels_kept": sum(kept.values())}


def _not_reached(target: float, reachable: float, oracle: LatencyOracle, goal: Goal, rounds: int) -> str:
    return (f"pruning.latency_target: {target:.2f}x on {oracle.backend} at batch {oracle.batch} not reached in "
            f"{rounds} whole-graph rounds (the fastest candidate measured {reachable:.2f}x); raise "
            f"pruning.latency_target.rounds (now {goal.rounds}) or lower the target")


def _unreachable(target: float, reachable: float, oracle: LatencyOracle, goal: Goal, deepest: float) -> str:
    asked = f"speedup {goal.speedup:g}" if goal.speedup is not None else f"ms {goal.ms:g}"
    return (f"pruning.latency_target: {asked} ({target:.2f}x) is out of reach on {oracle.backend} at batch "
            f"{oracle.batch}: the best reachable speedup measured {reachable:.2f}x (the deepest plan the groups "
            f"allow removes {deepest:.0%} of the layers' modelled time); lower the target, use "
            f"residual: coupled, relax pruning.ignore / min_channels / round_to, or choose another batch")
