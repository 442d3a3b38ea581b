"""Surgery: physically remove the channels a method scored lowest, through the DependencyGraph.

``prune(model, ...)`` = ``decide`` + ``carry_out``. ``decide``: find the prunable groups (the head and
``pruning.ignore`` are protected; with ``residual: internal`` the residual-stream groups are left alone),
let a data-informed method calibrate, decide how many channels each group keeps (the method's allocation,
or ratios / a MACs or params target searched on the exact cost model), score every group once and choose
the channels (lowest scores, unless the method chooses). ``carry_out``: let the method adjust weights,
remove the channels, compensate (``pruning.compensation``), and run the pruned model against the original.
A layerwise schedule calls ``carry_out`` once per group with fine-tuning in between.

``preflight(model, ...)`` does everything that does not need scores (groups, rules, the counts, a trial
prune and forward) so that a bad plan is reported before the run folder exists or any time is spent.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..config import PruningConfig
from ..errors import SurgeryError
from ..methods.base import PruningMethod
from .allocation import Space, settle
from .compensate import CompensationResult, compensate
from .cost import CostModel
from .graph import GroupInfo, build_graph, dead_end_layers, describe_groups, example_input, select_layers
from .heads import heads_for
from .measured import choose_cost
from .plan import GroupPlan, Rounding, group_ratios, keep_pieces, select_pruned, selection
from .protect import breaking, protect
from .remove import apply_selection, check_forward
from .search import Plan, plan_for_ratio, plan_for_target, target_of


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
    history: list  # torch-pruning's steps [root layer, output side, removed indices], replayable (surgery.history)
    groups: tuple[GroupResult, ...]
    skipped: dict[str, str]  # group key -> why it was not pruned
    widths: tuple[dict, ...]
    global_ratio: float
    macs_before: int
    macs_after: int
    search: tuple[dict, ...] = field(default=())  # MACs-target search trials on the cost model
    protected: dict[str, str] = field(default_factory=dict)  # group key -> why removing it would break the model
    compensation: tuple[dict, ...] = field(default=())  # what each carry_out step compensated
    allocation: str = "recipe"  # "recipe" (ratios / target) or "method" (the method decided the counts)
    latency: dict = field(default_factory=dict)  # pruning.latency_target: target, measured rounds, latency model

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
    cost: CostModel  # or a MeasuredCost where the exact model misses the graph's channel-to-MACs mapping
    protected: dict[str, str] = field(default_factory=dict)  # groups left whole because removing them breaks the model
    exact: CostModel | None = None  # the geometry-based cost model (the latency model reads its layers)


def analyse(model: nn.Module, example: torch.Tensor, cfg: PruningConfig) -> Layout:
    groups, skipped, graph = prunable_groups(model, example, cfg)
    groups, protected, probe = protect(model, example, groups, Rounding.of(cfg))
    ratios = layer_ratio_map(model, example, cfg)
    infos = [info for info, _ in groups]
    plans = group_ratios(infos, cfg, cfg.ratio or 0.0, ratios)
    _check_rules_used(plans, cfg)
    exact = CostModel.build(model, example, groups, graph)
    cost = choose_cost(exact, model, example, infos, probe)
    return Layout(groups, skipped, plans, cost, protected, exact)


def layer_ratio_map(model: nn.Module, example: torch.Tensor, cfg: PruningConfig) -> dict[str, float]:
    """``pruning.layer_ratios`` by layer name: one entry per conv layer in module order, the head excluded."""
    if not cfg.layer_ratios:
        return {}
    heads = set(heads_for(model, example, cfg.heads))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd) and n not in heads]
    if len(convs) != len(cfg.layer_ratios):
        shown = ", ".join(convs[:4]) + (", ..." if len(convs) > 4 else "")
        raise SurgeryError(f"pruning.layer_ratios: {len(cfg.layer_ratios)} entries, but {type(model).__name__} has "
                           f"{len(convs)} conv layers ({shown}); give one removal ratio per conv layer, in module order")
    return dict(zip(convs, cfg.layer_ratios))


def plan_counts(layout: Layout, cfg: PruningConfig) -> Plan:
    """Kept channels per group, from the ratios or the target; refuses a plan that removes nothing."""
    if target_of(cfg) is not None:
        plan = plan_for_target(layout.plans, layout.cost, cfg, shortfall_ok=bool(layout.protected), stuck=layout.skipped)
    else:
        plan = plan_for_ratio(layout.plans, layout.cost, cfg, cfg.ratio or 0.0)
    requested = any(p.ratio > 0 for p in layout.plans if p.fixed) or (cfg.ratio or 0) > 0 or target_of(cfg)
    if requested and not layout.protected and all(plan.kept[p.info.key] == p.info.channels for p in layout.plans):
        widest = max(p.info.channels for p in layout.plans)
        raise SurgeryError(f"pruning removes no channel: rounded to multiples of pruning.round_to {cfg.round_to} and "
                           f"kept above pruning.min_channels {cfg.min_channels}, every group keeps all its channels "
                           f"(the widest has {widest}); lower round_to / min_channels or raise the ratio")
    return plan


def preflight(model: nn.Module, input_shape: tuple[int, int, int], cfg: PruningConfig) -> Plan | None:
    """Check the plan without scores: groups, rules, counts, and a trial prune that must still run.
    Returns None when the recipe leaves the amount to the method (e.g. functionality's threshold)."""
    example = example_input(input_shape)
    trial = copy.deepcopy(model).cpu().eval()
    layout = analyse(trial, example, cfg)
    if not cfg.sets_amount or cfg.latency_target is not None:  # a latency target is searched by measuring
        return None
    plan = plan_counts(layout, cfg)
    first = {p.info.key: torch.arange(p.info.channels, 0, -1).float() for p in layout.plans}  # any order will do
    apply_selection(trial, example, selection(layout.plans, first, plan.kept))
    check_forward(copy.deepcopy(model).cpu().eval(), trial, example)
    return plan


@dataclass(frozen=True)
class Decision:
    """Which channels go, decided once on the unpruned model."""

    layout: Layout
    plan: Plan
    chosen: dict[str, list[int]]  # group key -> channel indices to remove
    original: nn.Module  # an unpruned copy: the reference for compensation, widths and checks
    example: torch.Tensor
    allocation: str


def decide(model: nn.Module, input_shape: tuple[int, int, int], method: PruningMethod, cfg: PruningConfig,
           ctx=None, oracle=None) -> Decision:
    """Which channels go. With ``pruning.latency_target``, ``oracle`` (``surgery.latency_search.LatencyOracle``)
    measures the candidates on the target backend."""
    example = example_input(input_shape, next(model.parameters()).device)
    original = copy.deepcopy(model).eval()
    layout = analyse(model, example, cfg)
    if method.needs_calibration:
        if ctx is None:
            raise ValueError(f"method {method.name} needs calibration data")
        method.calibrate(model, [info for info, _ in layout.groups], ctx)
    if cfg.latency_target is not None:
        scores, unscored = _score(method, layout.groups)
        plan, allocated_by = _latency_plan(layout, cfg, method, scores, oracle), "recipe"
    else:
        space = Space.of(layout.plans, layout.cost, cfg)
        allocation = method.allocate(space)
        if allocation is not None:
            kept = settle(allocation, space)
            plan, allocated_by = Plan(kept, cfg.ratio or 0.0, (), (), layout.cost.reduction_pct(kept)), "method"
        else:
            plan, allocated_by = plan_counts(layout, cfg), "recipe"
        scores, unscored = _score(method, layout.groups)
    chosen = _choose(method, layout, scores, plan.kept)
    broken = {}
    if chosen:  # the method's own channels, which no trial has removed yet
        broken, _, chosen = breaking(model, example, chosen)
    if unscored or broken:
        layout = dataclasses.replace(layout, protected={**layout.protected, **unscored, **broken})
    return Decision(layout, plan, chosen, original, example, allocated_by)


def _choose(method: PruningMethod, layout: Layout, scores: dict[str, torch.Tensor], kept: dict[str, int]) -> dict:
    """Channels to remove per group: the method's choice, else its lowest-scoring ones; every piece keeps one."""
    chosen = {}
    for p in layout.plans:
        key = p.info.key
        if key not in scores:
            continue
        idxs = method.choose(key, scores[key], kept[key], p.info.slices)
        idxs = select_pruned(scores[key], kept[key], p.info.slices) if idxs is None else idxs
        idxs = keep_pieces(idxs, scores[key], p.info.pieces)
        if idxs:
            chosen[key] = idxs
    return chosen


def _latency_plan(layout: Layout, cfg: PruningConfig, method: PruningMethod, scores: dict, oracle) -> Plan:
    """The plan whose measured speedup meets ``pruning.latency_target`` (``latency_search``)."""
    from ..progress import log
    from .latency_model import LatencyModel
    from .latency_search import Goal, plan_for_latency

    if oracle is None:
        raise ValueError("pruning.latency_target needs a latency oracle (stages.latency.WholeGraph)")
    rounding = Rounding.of(cfg)
    plans = [p if p.info.key in scores else dataclasses.replace(p, ratio=0.0, fixed=True) for p in layout.plans]
    model = LatencyModel.of_plans(layout.exact, plans, rounding, oracle.layer_ms)
    table = oracle.describe().get("layer_table", {})
    log(f"  latency model: {len(model.curves)} groups ({len(model.blocks)} timed as blocks) on {oracle.backend}, batch "
        f"{oracle.batch}; {table.get('measured_now', '?')} graphs timed now, table {table.get('path', '-')}")
    exact = layout.exact
    value = {k: (scores[k].tolist(), (exact.base_macs - exact.macs({k: 0})) / exact.base_macs) for k in model.curves}
    found = plan_for_latency(plans, model, rounding, value, oracle, Goal.of(cfg.latency_target),
                             lambda kept: _choose(method, layout, scores, kept))
    summary = {"target_speedup": round(found.target, 4), "measured_speedup": round(found.speedup, 4),
               "backend": oracle.backend, "batch": oracle.batch, "baseline_ms": round(oracle.baseline_ms, 6),
               "tolerance_pct": cfg.latency_target.tolerance_pct, "rounds": list(found.trials),
               "model": {**found.model, **oracle.describe()}}
    return Plan(found.kept, 0.0, (), found.trials, layout.cost.reduction_pct(found.kept), summary)


def carry_out(model: nn.Module, decision: Decision, method: PruningMethod, cfg: PruningConfig, ctx=None,
              keys: list[str] | None = None) -> tuple[list, CompensationResult]:
    """Remove the decided channels of ``keys`` (default: all) from ``model``, then compensate against the network
    as it was just before this removal (the original one in one-shot; in a layerwise schedule, the network
    already pruned and fine-tuned by the earlier steps)."""
    chosen = {k: v for k, v in decision.chosen.items() if keys is None or k in keys}
    kind = method.default_compensation if cfg.compensation == "auto" else cfg.compensation
    if kind != "none" and ctx is None:
        raise ValueError(f"compensation {kind} needs calibration data")
    before = decision.original if keys is None else copy.deepcopy(model).eval()
    method.before_removal(model, chosen)
    history = apply_selection(model, decision.example, chosen)
    done = compensate(kind, before, model, [info for info, _ in decision.layout.groups], chosen, ctx,
                      cfg.compensation_images)
    check_forward(decision.original, model, decision.example)
    return history, done


def summarize(model: nn.Module, decision: Decision, cfg: PruningConfig, history: list,
              compensations: list[CompensationResult]) -> Surgery:
    from ..profiling.macs import count_torch

    shape = tuple(decision.example.shape[1:])
    dead = frozenset(dead_end_layers(decision.original, decision.example))  # not in the export: not counted
    before, after = count_torch(decision.original, shape, dead).macs, count_torch(model, shape, dead).macs
    _check_cost_model(decision, before, after)
    return Surgery(history=history, groups=_results(decision),
                   skipped=decision.layout.skipped, protected=decision.layout.protected,
                   widths=width_table(decision.original, model),
                   global_ratio=decision.plan.ratio, macs_before=before, macs_after=after, search=decision.plan.trials,
                   compensation=tuple(c.to_json() for c in compensations), allocation=decision.allocation,
                   latency=decision.plan.latency)


def prune(model: nn.Module, input_shape: tuple[int, int, int], method: PruningMethod, cfg: PruningConfig,
          ctx=None, oracle=None) -> Surgery:
    """Prune ``model`` in place (one-shot) and return it with everything the report needs."""
    decision = decide(model, input_shape, method, cfg, ctx, oracle)
    history, done = carry_out(model, decision, method, cfg, ctx)
    return summarize(model, decision, cfg, history, [done])


def _check_cost_model(decision: Decision, before: int, after: int) -> None:
    """What was counted should be what the plan predicted; where it is not (a graph the cost model misses,
    or a measured cost whose trial removed other channels than the method chose) say so: the report
    carries the counted numbers, and a MACs gate judges those."""
    from ..progress import log

    cost, removed = decision.layout.cost, decision.chosen
    kept = {p.info.key: p.info.channels - len(removed.get(p.info.key, [])) for p in decision.layout.plans}
    predicted = cost.macs(kept)
    if predicted != after or cost.base_macs != before:
        log(f"  note: the pruned model counts {after:,} MACs ({100 * (1 - after / before):.2f}% fewer) where the plan "
            f"predicted {predicted:,} ({100 * (1 - predicted / cost.base_macs):.2f}% fewer); the report uses the count")


def prunable_groups(model: nn.Module, example: torch.Tensor, cfg: PruningConfig):
    """(GroupInfo, tp Group) pairs that may be pruned, and why the others may not."""
    heads = heads_for(model, example, cfg.heads)
    ignored = sorted({n for names in select_layers(model, cfg.ignore, "pruning.ignore").values() for n in names})
    modules = dict(model.named_modules())
    graph = build_graph(model, example)
    protected = [modules[n] for n in heads + ignored]
    every = describe_groups(model, graph, skip=[])
    allowed = {info.key for info, _ in describe_groups(model, graph, skip=protected)}
    groups, skipped = [], {}
    for info, group in every:
        if info.key not in allowed:
            skipped[info.key] = "output head" if set(info.producers) & set(heads) else "pruning.ignore"
        elif info.residual and cfg.residual == "internal":
            skipped[info.key] = "residual stream (residual: internal)"
        else:
            groups.append((info, group))
    if not groups:
        raise SurgeryError(f"no prunable channel group in {type(model).__name__} with residual: {cfg.residual} "
                           f"and ignore {list(cfg.ignore)} ({len(skipped)} groups protected)")
    return groups, skipped, graph


def _score(method: PruningMethod, groups) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Scores per group key, and the groups the method could not score (torch-pruning's magnitude importance
    sizes its scores from the first layer it scores, which for a group rooted at a depthwise conv reached
    through an index mapping is not the group's width): those are protected, not guessed."""
    scores, unscored = {}, {}
    for info, group in groups:
        value = torch.as_tensor(method.score(info, group)).detach().float().flatten().cpu()
        if value.numel() != info.channels:
            unscored[info.key] = (f"method {method.name} cannot score it ({value.numel()} scores for its "
                                  f"{info.channels} channels)")
            continue
        scores[info.key] = value
    return scores, unscored


def _check_rules_used(plans: list[GroupPlan], cfg: PruningConfig) -> None:
    used = {p.rule for p in plans}
    for i, rule in enumerate(cfg.layers):
        if f"layers[{i}]" not in used:
            stream = ", or residual-stream layers, which residual: internal leaves alone" if cfg.residual == "internal" else ""
            raise SurgeryError(f"pruning.layers[{i}].match: {rule.match!r} matches no prunable group (the layers it "
                               f"names are protected or matched by an earlier rule{stream})")


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


def _results(decision: Decision) -> tuple[GroupResult, ...]:
    rows = []
    for p in decision.layout.plans:
        info: GroupInfo = p.info
        moved = info.key in decision.plan.moved
        rule = "method" if decision.allocation == "method" else "global (search step)" if moved else p.rule
        rows.append(GroupResult(key=info.key, channels=info.channels,
                                kept=info.channels - len(decision.chosen.get(info.key, [])),
                                requested_ratio=p.ratio if p.fixed else decision.plan.ratio, rule=rule,
                                residual=info.residual, producers=info.producers))
    return tuple(rows)

