"""``compress inspect``: what the recipe's pruning would do to the model, without running anything heavy.

:func:`inspect_recipe` builds the model and loads its checkpoint as the load stage does, finds the prunable
channel groups (``surgery.prune.analyse``: the groups left alone and why, the groups protected because removing
them breaks the model, the cost model) and plans the kept channels per group (``plan_counts``: the recipe's
ratios or its MACs / params target, searched on the cost model). No data is read, nothing is scored, trained,
pruned or exported (the protection screen trial-prunes a CPU copy, as every run does). When the method decides
the amounts itself (``pruning`` sets none, or a method such as SWP or functionality with a threshold), only the
groups and the unpruned cost are shown: the counts are decided at run time.

MACs are multiply-accumulates of Conv/Gemm/MatMul layers per image, on the PyTorch model (the convention of
``profiling.macs``); params are the weights and biases of the conv/linear layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import Recipe

SHOWN_LAYERS = 3  # layer names shown per group on the console (the JSON has them all)
MACS_NOTE = "multiply-accumulates of Conv/Gemm/MatMul layers per image, on the PyTorch model"


@dataclass(frozen=True)
class GroupRow:
    key: str  # the root layer's name
    channels: int
    kept: int | None  # None when the method decides at run time
    residual: bool
    slices: int  # >1: a grouped conv, the same positions go in every slice
    producers: tuple[str, ...]  # layers losing output channels
    consumers: tuple[str, ...]  # layers losing input channels
    rule: str  # where the group's ratio comes from: global, layers[i], layer_ratios[i], search step

    @property
    def kept_pct(self) -> float | None:
        return None if self.kept is None else 100.0 * self.kept / self.channels


@dataclass(frozen=True)
class Inspection:
    recipe: str
    model: str
    input_shape: tuple[int, int, int]
    method: str
    residual: str
    groups: tuple[GroupRow, ...]
    skipped: dict[str, str]  # group key -> why the recipe leaves it alone
    protected: dict[str, str]  # group key -> why removing it would break the model
    allocation: str  # "recipe" (ratios / target, counts below), "method" or "latency" (decided at run time)
    cost_model: str  # "exact" or "measured" (trial-pruned copies counted)
    macs_before: int
    params_before: int
    macs_after: int | None = None
    params_after: int | None = None
    target: dict | None = None  # {metric, pct, tolerance_pct, predicted_pct, reached}
    notes: tuple[str, ...] = field(default=())
    heads: tuple[str, ...] = ()  # the output layers, kept whole
    heads_rule: str = "auto"  # "auto" (surgery.graph.find_heads) or "pruning.heads"

    @property
    def crossing(self) -> dict[str, tuple[str, ...]]:
        """Groups whose layers lie in more than one top-level module (a backbone's channels read by the neck or
        the heads): group key -> those modules."""
        found = {}
        for g in self.groups:
            parts = tuple(dict.fromkeys(name.split(".")[0] for name in (*g.producers, *g.consumers)))
            if len(parts) > 1:
                found[g.key] = parts
        return found
    @property
    def reduction_pct(self) -> dict[str, float] | None:
        if self.macs_after is None or self.params_after is None:
            return None
        return {"macs": 100.0 * (1 - self.macs_after / self.macs_before),
                "params": 100.0 * (1 - self.params_after / self.params_before)}

    def to_json(self) -> dict:
        reduction = self.reduction_pct
        return {"recipe": self.recipe, "model": self.model, "input_shape": list(self.input_shape),
                "method": self.method, "residual": self.residual, "allocation": self.allocation,
                "groups": [{**asdict(g), "producers": list(g.producers), "consumers": list(g.consumers)}
                           for g in self.groups],
                "skipped": dict(self.skipped), "protected": dict(self.protected),
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "reduction_pct": None if reduction is None else {k: round(v, 3) for k, v in reduction.items()},
                "target": self.target, "cost_model": self.cost_model, "macs": MACS_NOTE, "notes": list(self.notes),
                "heads": list(self.heads), "heads_rule": self.heads_rule,
                "crossing": {k: list(v) for k, v in self.crossing.items()}}

    def head_lines(self) -> list[str]:
        """The protected output layers and the rule that found them, and the groups across top-level modules."""
        rule = ("pruning.heads" if self.heads_rule == "pruning.heads" else
                "auto: every Conv/Linear whose result reaches a model output through parameter-free ops; "
                "set pruning.heads to override")
        lines = [f"output layers kept whole ({rule}): {', '.join(self.heads) or 'none'}"]
        crossing = self.crossing
        if crossing:
            shown = "; ".join(f"{k} ({' -> '.join(v)})" for k, v in list(crossing.items())[:SHOWN_LAYERS * 2])
            more = f" and {len(crossing) - SHOWN_LAYERS * 2} more" if len(crossing) > SHOWN_LAYERS * 2 else ""
            lines.append(f"{len(crossing)} group(s) span more than one top-level module: {shown}{more}")
        return lines

    def group_cells(self) -> list[tuple[str, ...]]:
        """One row of strings per group, in model order, for the console table."""
        rows = []
        for g in self.groups:
            kept = "-" if g.kept is None else f"{g.kept}/{g.channels} ({g.kept_pct:.0f}%)"
            rows.append((g.key, str(g.channels), kept, "yes" if g.residual else "no", str(g.slices),
                         _names(g.producers), _names(g.consumers), g.rule))
        return rows

    def not_pruned_cells(self) -> list[tuple[str, str, str]]:
        return ([(k, "skipped", why) for k, why in self.skipped.items()]
                + [(k, "protected", why) for k, why in self.protected.items()])

    def summary_lines(self) -> list[str]:
        cost = "exact cost model" if self.cost_model == "exact" else "counted on trial-pruned copies"
        if self.allocation in ("method", "latency"):
            decided = (f"decided by method {self.method} at run time" if self.allocation == "method" else
                       "searched by measuring at run time")
            return [f"MACs: {_mega(self.macs_before)} M ({MACS_NOTE}); conv/linear params: "
                    f"{_kilo(self.params_before)} k",
                    f"channel counts: {decided}; the groups above are what it may prune", *self.notes]
        reduction = self.reduction_pct or {}
        lines = [f"MACs: {_mega(self.macs_before)} -> {_mega(self.macs_after)} M (-{reduction['macs']:.2f}%; "
                 f"{MACS_NOTE}; {cost})",
                 f"conv/linear params: {_kilo(self.params_before)} -> {_kilo(self.params_after)} k "
                 f"(-{reduction['params']:.2f}%)"]
        if self.target is not None:
            t = self.target
            state = "reached" if t["reached"] else "NOT reached"
            lines.append(f"target: {t['metric']}_reduction_pct {t['pct']}% (within {t['tolerance_pct']} point): "
                         f"{state}, predicted {t['predicted_pct']:.2f}%")
        return [*lines, *self.notes]


def inspect_recipe(recipe: Recipe) -> Inspection:
    """The pruning ``recipe`` would do to its model: groups and kept counts, what is left alone, the cost."""
    from ..surgery.graph import example_input
    from ..surgery.heads import heads_for
    from ..surgery.prune import analyse

    model, shape = _model(recipe)
    cfg = recipe.pruning
    layout = analyse(model, example_input(shape), cfg)
    heads = tuple(heads_for(model, example_input(shape), cfg.heads))
    by_method = not cfg.sets_amount or recipe.method.allocates
    base = dict(recipe=recipe.name, model=f"{recipe.model.arch} ({type(model).__name__})", input_shape=shape,
                method=recipe.method.name, residual=cfg.residual, skipped=dict(layout.skipped),
                protected=dict(layout.protected), heads=heads, heads_rule="auto" if cfg.heads is None else "pruning.heads",
                cost_model="exact" if getattr(layout.cost, "exact", True) else "measured",
                macs_before=int(layout.cost.base_macs), params_before=int(layout.cost.base_params))
    if cfg.latency_target is not None:
        target = recipe.latency_target
        note = (f"pruning.latency_target: the counts are searched at run time by timing on {target.backend}, batch "
                f"{target.batch} ({target.allocation} allocation; per-layer tables cached in "
                f"{target.cache or 'the default cache'}), then checked on the whole graph")
        return Inspection(groups=tuple(_row(p, None, p.rule) for p in layout.plans), allocation="latency",
                          notes=(note,), **base)
    if by_method:
        return Inspection(groups=tuple(_row(p, None, p.rule) for p in layout.plans), allocation="method", **base)
    return _planned(recipe, layout, base)


def _model(recipe: Recipe):
    """The unpruned model on the CPU in eval mode, with its checkpoint, and its input shape (as ``load_inputs``)."""
    from ..models import build_model, load_checkpoint
    from ..surgery.graph import select_layers

    model, shape = build_model(recipe.model, recipe.data.num_classes if recipe.data is not None else None)
    cfg = recipe.model
    if cfg.checkpoint is not None:
        load_checkpoint(model, cfg.checkpoint, key=cfg.checkpoint_key, trust=cfg.trust_checkpoint, model_name=cfg.arch)
    model = model.cpu().eval()
    for i, rule in enumerate(recipe.pruning.layers):  # a rule that names no layer: the message the run gives
        select_layers(model, [rule.match], f"pruning.layers[{i}].match")
    return model, tuple(int(s) for s in shape)


def _planned(recipe: Recipe, layout, base: dict) -> Inspection:
    from ..methods import PruningMethod, method_for
    from ..surgery.prune import plan_counts
    from ..surgery.search import TOLERANCE_PCT, target_of

    cfg = recipe.pruning
    plan = plan_counts(layout, cfg)
    rows = tuple(_row(p, plan.kept[p.info.key], "global (search step)" if p.info.key in plan.moved else p.rule)
                 for p in layout.plans)
    notes = []
    target = target_of(cfg)
    summary = None
    if target is not None:
        metric, pct = target
        predicted = layout.cost.reduction_pct(plan.kept, metric)
        reached = abs(predicted - pct) <= TOLERANCE_PCT
        summary = {"metric": metric, "pct": pct, "tolerance_pct": TOLERANCE_PCT, "predicted_pct": round(predicted, 3),
                   "reached": reached}
        if not reached and layout.protected:
            notes.append(f"the target is out of reach with {len(layout.protected)} protected group(s): the run prunes "
                         "what the other groups can give and says so")
    if method_for(recipe.method).allocate is not PruningMethod.allocate:
        notes.append(f"method {recipe.method.name} may set the per-group counts itself at run time; the totals "
                     "follow the recipe's amount")
    return Inspection(groups=rows, allocation="recipe", macs_after=int(layout.cost.macs(plan.kept)),
                      params_after=int(layout.cost.params(plan.kept)), target=summary, notes=tuple(notes), **base)


def _row(plan, kept: int | None, rule: str) -> GroupRow:
    info = plan.info
    return GroupRow(key=info.key, channels=info.channels, kept=kept, residual=info.residual, slices=info.slices,
                    producers=tuple(info.producers), consumers=tuple(info.consumers), rule=rule)


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:SHOWN_LAYERS])
    return f"{len(names)}: {shown}" + (", ..." if len(names) > SHOWN_LAYERS else "")


def _mega(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}"


def _kilo(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e3:.1f}"
