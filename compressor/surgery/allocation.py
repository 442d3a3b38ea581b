"""What a method's ``allocate`` sees (``methods.base.AllocationSpace``), and how its answer is rounded.

A method that decides its own channel counts (PFP's epsilon, functionality's threshold, the training-time
methods' final masks, SWP's dead filters) gets an :class:`Space`: the prunable groups with their requested
ratios, surgery's :class:`~.plan.Rounding`, the exact cost model and the recipe's reduction target. It returns
an ``Allocation``; :func:`settle` rounds every count it names and gives the groups it does not name the
recipe's count. Methods never import this module: surgery builds the space and hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import PruningConfig
from ..methods.base import Allocation
from .cost import CostModel
from .plan import GroupPlan, Rounding, kept_counts
from .search import local_search, target_of


@dataclass(frozen=True)
class Space:
    """The concrete ``AllocationSpace`` of one model under one pruning config."""

    plans: list[GroupPlan]
    rounding: Rounding
    target: tuple[str, float] | None
    cost_model: CostModel
    cfg: PruningConfig

    @classmethod
    def of(cls, plans: list[GroupPlan], cost: CostModel, cfg: PruningConfig) -> Space:
        return cls(plans, Rounding.of(cfg), target_of(cfg), cost, cfg)

    def cost(self, kept: dict[str, int], metric: str) -> int:
        return self.cost_model.params(kept) if metric == "params" else self.cost_model.macs(kept)

    def base_cost(self, metric: str) -> int:
        return self.cost_model.base_params if metric == "params" else self.cost_model.base_macs

    def fixed(self) -> dict[str, int]:
        return kept_counts([p for p in self.plans if p.fixed], self.rounding, 0.0)

    def closest(self, kept: dict[str, int], anchor: dict[str, int]) -> dict[str, int]:
        metric, pct = self.target
        return local_search(kept, self.plans, self.cost_model, self.cfg, metric, pct, anchor=anchor)


def settle(allocation: Allocation, space: Space) -> dict[str, int]:
    """Kept channels of every group: the method's counts rounded as it asked (a count that already is an
    allowed width, a group's full width included, stays as it is), the recipe's for the groups it left out."""
    recipe = kept_counts(space.plans, space.rounding, space.cfg.ratio or 0.0)
    kept = {}
    for plan in space.plans:
        info, count = plan.info, allocation.kept.get(plan.info.key)
        if count is None:
            kept[info.key] = recipe[info.key]
        elif count in space.rounding.ladder(info):
            kept[info.key] = count
        else:
            kept[info.key] = space.rounding.apply(info, count, allocation.rounding)
    return kept
