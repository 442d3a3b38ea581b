"""Surgery: physically remove the channels a method scored lowest, through the DependencyGraph.

``prune(model, ...)`` works in four steps: find the prunable groups (the head and ``pruning.ignore`` are
protected; with ``residual: internal`` the residual-stream groups are left alone), score every group once
with the method, turn ratios (or a MACs target, by bisection on a copy) into channel indices, and apply
them. Every pruned model is run forward and compared in output shape with the original before it is
returned.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import SurgeryError
from ..methods.base import PruningMethod
from ..recipe import PruningConfig
from .graph import GroupInfo, build_graph, describe_groups, example_input, find_heads, select_layers
from .plan import GroupPlan, group_ratios, kept_channels, selection

MACS_TOLERANCE_PCT = 1.0  # the achieved MACs reduction must be this close to the target


@dataclass(frozen=True)
class GroupResult:
    key: str
    channels: int
    kept: int
    requested_ratio: float
    rule: str
    residual: bool
    producers: tuple[str, ...]


@dataclass(frozen=True)
class Surgery:
    model: nn.Module
    history: list
    groups: tuple[GroupResult, ...]
    skipped: dict[str, str]  # group key -> why it was not pruned
    widths: tuple[dict, ...]
    global_ratio: float
    macs_before: int
    macs_after: int
    search: tuple[dict, ...] = field(default=())  # MACs-target search trials: ratio -> reduction

    @property
    def macs_reduction_pct(self) -> float:
        return 100.0 * (1 - self.macs_after / self.macs_before)


def prune(model: nn.Module, input_shape: tuple[int, int, int], method: PruningMethod,
          cfg: PruningConfig) -> Surgery:
    """Prune ``model`` in place and return it with everything the report needs."""
    from ..profiling.macs import count_torch

    example = example_input(input_shape)
    original = copy.deepcopy(model).eval()
    groups, skipped = prunable_groups(model, example, cfg)
    scores = _score(method, groups)
    plans = group_ratios([info for info, _ in groups], cfg, cfg.ratio or 0.0)
    _check_rules_used(plans, cfg)
    macs_before = count_torch(original, input_shape).macs
    trials: list[dict] = []
    steps: dict[str, float] = {}
    if cfg.macs_reduction_pct is not None:
        ratio, steps, trials = search_ratio(original, example, plans, scores, cfg, macs_before)
    else:
        ratio = cfg.ratio or 0.0
    chosen = selection(plans, scores, cfg.round_to, cfg.min_channels, ratio, steps)
    history = apply_selection(model, example, chosen)
    check_forward(original, model, example)
    macs_after = count_torch(model, input_shape).macs
    return Surgery(model=model, history=history, groups=_results(plans, chosen, ratio, steps), skipped=skipped,
                   widths=width_table(original, model), global_ratio=ratio, macs_before=macs_before,
                   macs_after=macs_after, search=tuple(trials))


def prunable_groups(model: nn.Module, example: torch.Tensor, cfg: PruningConfig):
    """(GroupInfo, tp Group) pairs that may be pruned, and why the others may not."""
    heads = find_heads(model, example)
    ignored = sorted({n for names in select_layers(model, cfg.ignore, "pruning.ignore").values() for n in names})
    modules = dict(model.named_modules())
    graph = build_graph(model, example)
    protected = [modules[n] for n in heads + ignored]
    every = describe_groups(model, graph, skip=[])
    allowed = {info.key for info, _ in describe_groups(model, graph, skip=protected)}
    groups, skipped = [], {}
    for info, group in every:
        if info.key not in allowed:
            skipped[info.key] = "classifier head" if set(info.producers) & set(heads) else "pruning.ignore"
        elif info.residual and cfg.residual == "internal":
            skipped[info.key] = "residual stream (residual: internal)"
        else:
            groups.append((info, group))
    if not groups:
        raise SurgeryError(f"no prunable channel group in {type(model).__name__} with residual: {cfg.residual} "
                           f"and ignore {list(cfg.ignore)} ({len(skipped)} groups protected)")
    return groups, skipped


def _score(method: PruningMethod, groups) -> dict[str, torch.Tensor]:
    scores = {}
    for info, group in groups:
        value = torch.as_tensor(method.score(group)).detach().float().flatten().cpu()
        if value.numel() != info.channels:
            raise RuntimeError(f"method {method.name} returned {value.numel()} scores for group {info.key} "
                               f"with {info.channels} channels")
        scores[info.key] = value
    return scores


def _check_rules_used(plans: list[GroupPlan], cfg: PruningConfig) -> None:
    used = {p.rule for p in plans}
    for i, rule in enumerate(cfg.layers):
        if f"layers[{i}]" not in used:
            raise SurgeryError(
                f"pruning.layers[{i}].match: {rule.match!r} matches no prunable group (the layers it names are "
                f"protected, matched by an earlier rule, or residual-stream layers under residual: {cfg.residual})")


def apply_selection(model: nn.Module, example: torch.Tensor, chosen: dict[str, list[int]]) -> list:
    """Remove ``chosen`` channels (group key -> indices) from ``model`` in place; returns the replayable history."""
    graph = build_graph(model, example)
    for key, idxs in chosen.items():
        module = model.get_submodule(key)
        pruner = graph.get_pruner_of_module(module)
        group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs)
        if not graph.check_pruning_group(group):
            raise SurgeryError(f"pruning {len(idxs)} channels of group {key} would remove every channel of a layer; "
                               f"lower the ratio or raise pruning.min_channels")
        group.prune()
    return copy.deepcopy(graph.pruning_history())


def search_ratio(original: nn.Module, example: torch.Tensor, plans: list[GroupPlan], scores: dict,
                 cfg: PruningConfig, macs_before: int) -> tuple[float, dict[str, float], list[dict]]:
    """Find the global ratio whose MACs reduction is within 1 point of ``cfg.macs_reduction_pct``.

    Bisection on the uniform ratio first. Rounding (``round_to``, small layers) can make the uniform
    ratio jump over the target; then single groups take their next rounding step one at a time
    (``steps``: group key -> ratio) until the reduction lands within the tolerance.
    """
    target, trials = cfg.macs_reduction_pct, []

    def reduction(ratio: float, steps: dict[str, float] | None = None) -> float:
        from ..profiling.macs import count_torch

        trial = copy.deepcopy(original)
        chosen = selection(plans, scores, cfg.round_to, cfg.min_channels, ratio, steps)
        apply_selection(trial, example, chosen)
        value = 100.0 * (1 - count_torch(trial, tuple(example.shape[1:])).macs / macs_before)
        trials.append({"ratio": round(ratio, 6), "steps": len(steps or {}), "macs_reduction_pct": round(value, 3)})
        return value

    lo, hi = (0.0, reduction(0.0)), (0.99, reduction(0.99))
    if hi[1] < target - MACS_TOLERANCE_PCT:
        raise SurgeryError(
            f"pruning.macs_reduction_pct: {target}% is out of reach; pruning every allowed group to the minimum "
            f"removes {hi[1]:.1f}% of MACs with residual: {cfg.residual} "
            f"(lower the target, relax pruning.ignore/layers, or use residual: coupled)")
    for _ in range(24):
        if abs(lo[1] - target) <= MACS_TOLERANCE_PCT / 2 or hi[0] - lo[0] < 1e-4:
            break
        mid = (lo[0] + hi[0]) / 2
        value = reduction(mid)
        lo, hi = ((mid, value), hi) if value < target else (lo, (mid, value))
    for ratio, value in (lo, hi):
        if abs(value - target) <= MACS_TOLERANCE_PCT:
            return ratio, {}, trials
    return lo[0], _refine(lo[0], plans, cfg, target, reduction), trials


def _refine(ratio: float, plans: list[GroupPlan], cfg: PruningConfig, target: float, reduction) -> dict[str, float]:
    """Greedy fine steps from the best plan below target: one rounding step at a time, taken from the group
    that keeps the largest fraction of its channels (the plan stays as uniform as it can), skipping steps
    that overshoot, until the reduction is within the tolerance."""
    def multiple(plan: GroupPlan) -> int:
        return math.lcm(cfg.round_to, plan.info.slices)

    movable = [p for p in plans if not p.fixed]
    kept = {p.info.key: kept_channels(p.info.channels, ratio, multiple(p), cfg.min_channels) for p in movable}
    steps: dict[str, float] = {}
    while True:
        order = sorted(movable, key=lambda p: (-kept[p.info.key] / p.info.channels, -p.info.channels))
        for plan in order:
            key, step = plan.info.key, multiple(plan)
            new = kept[key] - step
            if new < max(step, cfg.min_channels):
                continue
            trial = {**steps, key: 1 - new / plan.info.channels}
            value = reduction(ratio, trial)
            if value > target + MACS_TOLERANCE_PCT:
                continue  # overshoots; a smaller group's step may fit
            steps, kept[key] = trial, new
            if value >= target - MACS_TOLERANCE_PCT:
                return steps
            break
        else:
            raise SurgeryError(
                f"pruning.macs_reduction_pct: cannot get within {MACS_TOLERANCE_PCT} point of {target}%: the channel "
                f"counts are too coarse (pruning.round_to {cfg.round_to}); lower round_to, set a ratio instead, "
                f"or add per-layer ratios")


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
    if got.shape != expected.shape:
        raise SurgeryError(f"the pruned {type(pruned).__name__} outputs shape {tuple(got.shape)} instead of "
                           f"{tuple(expected.shape)}; the output layer must not be pruned")


def width_table(original: nn.Module, pruned: nn.Module) -> tuple[dict, ...]:
    """Per conv/linear layer: channels in and out before and after."""
    after = dict(pruned.named_modules())
    rows = []
    for name, module in original.named_modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        new = after[name]
        rows.append({"layer": name, "type": type(module).__name__,
                     "in_before": _chans(module, "in"), "in_after": _chans(new, "in"),
                     "out_before": _chans(module, "out"), "out_after": _chans(new, "out")})
    return tuple(rows)


def _chans(module: nn.Module, side: str) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features if side == "in" else module.out_features
    return module.in_channels if side == "in" else module.out_channels


def _results(plans: list[GroupPlan], chosen: dict[str, list[int]], ratio: float,
             steps: dict[str, float]) -> tuple[GroupResult, ...]:
    rows = []
    for plan in plans:
        info: GroupInfo = plan.info
        rule = "global (search step)" if info.key in steps else plan.rule
        rows.append(GroupResult(key=info.key, channels=info.channels,
                                kept=info.channels - len(chosen.get(info.key, [])),
                                requested_ratio=plan.ratio if plan.fixed else steps.get(info.key, ratio), rule=rule,
                                residual=info.residual, producers=info.producers))
    return tuple(rows)
