"""Surgery: physically remove the channels a method scored lowest, through the DependencyGraph.

``prune(model, ...)``: find the prunable groups (the head and ``pruning.ignore`` are protected; with
``residual: internal`` the residual-stream groups are left alone), decide how many channels each keeps
(ratios, or a MACs target searched on the exact cost model), score every group once with the method,
remove the lowest-scoring channels, and run the pruned model forward against the original.

``preflight(model, ...)`` does everything that does not need scores (groups, rules, the counts, a trial
prune and forward) so that a bad plan is reported before the run folder exists or any time is spent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import SurgeryError
from ..methods.base import PruningMethod
from ..recipe import PruningConfig
from .cost import CostModel
from .graph import GroupInfo, build_graph, describe_groups, example_input, find_heads, select_layers
from .plan import GroupPlan, group_ratios, selection
from .search import TOLERANCE_PCT, Plan, plan_for_ratio, plan_for_target


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
    search: tuple[dict, ...] = field(default=())  # MACs-target search trials on the cost model

    @property
    def pruned_groups(self) -> tuple[GroupResult, ...]:
        return tuple(g for g in self.groups if g.kept < g.channels)

    @property
    def macs_reduction_pct(self) -> float:
        return 100.0 * (1 - self.macs_after / self.macs_before)


@dataclass(frozen=True)
class Layout:
    """The prunable groups of a model under a pruning config, their planned ratios and their cost."""

    groups: list  # (GroupInfo, torch-pruning Group)
    skipped: dict[str, str]
    plans: list[GroupPlan]
    cost: CostModel


def analyse(model: nn.Module, example: torch.Tensor, cfg: PruningConfig) -> Layout:
    groups, skipped, graph = prunable_groups(model, example, cfg)
    plans = group_ratios([info for info, _ in groups], cfg, cfg.ratio or 0.0)
    _check_rules_used(plans, cfg)
    return Layout(groups, skipped, plans, CostModel.build(model, example, groups, graph))


def plan_counts(layout: Layout, cfg: PruningConfig) -> Plan:
    """Kept channels per group, from the ratios or the MACs target; refuses a plan that removes nothing."""
    if cfg.macs_reduction_pct is not None:
        plan = plan_for_target(layout.plans, layout.cost, cfg)
    else:
        plan = plan_for_ratio(layout.plans, layout.cost, cfg, cfg.ratio or 0.0)
    requested = any(p.ratio > 0 for p in layout.plans if p.fixed) or (cfg.ratio or 0) > 0 or cfg.macs_reduction_pct
    if requested and all(plan.kept[p.info.key] == p.info.channels for p in layout.plans):
        widest = max(p.info.channels for p in layout.plans)
        raise SurgeryError(f"pruning removes no channel: rounded to multiples of pruning.round_to {cfg.round_to} and "
                           f"kept above pruning.min_channels {cfg.min_channels}, every group keeps all its channels "
                           f"(the widest has {widest}); lower round_to / min_channels or raise the ratio")
    return plan


def preflight(model: nn.Module, input_shape: tuple[int, int, int], cfg: PruningConfig) -> Plan:
    """Check the plan without scores: groups, rules, counts, and a trial prune that must still run."""
    example = example_input(input_shape)
    trial = copy.deepcopy(model).cpu().eval()
    layout = analyse(trial, example, cfg)
    plan = plan_counts(layout, cfg)
    first = {p.info.key: torch.arange(p.info.channels, 0, -1).float() for p in layout.plans}  # any order will do
    apply_selection(trial, example, selection(layout.plans, first, plan.kept))
    check_forward(copy.deepcopy(model).cpu().eval(), trial, example)
    return plan


def prune(model: nn.Module, input_shape: tuple[int, int, int], method: PruningMethod,
          cfg: PruningConfig) -> Surgery:
    """Prune ``model`` in place and return it with everything the report needs."""
    from ..profiling.macs import count_torch

    example = example_input(input_shape)
    original = copy.deepcopy(model).eval()
    layout = analyse(model, example, cfg)
    plan = plan_counts(layout, cfg)
    scores = _score(method, layout.groups)
    chosen = selection(layout.plans, scores, plan.kept)
    history = apply_selection(model, example, chosen)
    check_forward(original, model, example)
    macs_before, macs_after = count_torch(original, input_shape).macs, count_torch(model, input_shape).macs
    _check_target(cfg, macs_before, macs_after)
    return Surgery(model=model, history=history, groups=_results(layout.plans, plan), skipped=layout.skipped,
                   widths=width_table(original, model), global_ratio=plan.ratio, macs_before=macs_before,
                   macs_after=macs_after, search=plan.trials)


def _check_target(cfg: PruningConfig, before: int, after: int) -> None:
    """The counted reduction must meet the target the cost model planned for (a guard on the cost model)."""
    if cfg.macs_reduction_pct is None:
        return
    achieved = 100.0 * (1 - after / before)
    if abs(achieved - cfg.macs_reduction_pct) > TOLERANCE_PCT:
        raise SurgeryError(f"pruning.macs_reduction_pct: planned {cfg.macs_reduction_pct}% but the pruned model "
                           f"counts {achieved:.2f}%: this architecture maps channels to MACs in a way the cost "
                           "model does not capture; set pruning.ratio instead and report this model to us")


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
    return groups, skipped, graph


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
            stream = ", or residual-stream layers, which residual: internal leaves alone" if cfg.residual == "internal" else ""
            raise SurgeryError(f"pruning.layers[{i}].match: {rule.match!r} matches no prunable group (the layers it "
                               f"names are protected or matched by an earlier rule{stream})")


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


def _results(plans: list[GroupPlan], plan: Plan) -> tuple[GroupResult, ...]:
    rows = []
    for p in plans:
        info: GroupInfo = p.info
        moved = info.key in plan.moved
        rows.append(GroupResult(key=info.key, channels=info.channels, kept=plan.kept[info.key],
                                requested_ratio=p.ratio if p.fixed else plan.ratio,
                                rule="global (search step)" if moved else p.rule,
                                residual=info.residual, producers=info.producers))
    return tuple(rows)
