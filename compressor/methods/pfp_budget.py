"""PFP's budget allocation from one global epsilon, its sampling variant, and the re-weighting of kept
channels (see ``pfp.py`` for the method and the paper)."""

from __future__ import annotations

import math
import zlib

import torch

from ..errors import SurgeryError
from .base import Allocation
from .pfp import C_CONSTANT, DELTA

BUDGET_TOLERANCE = 0.005  # relative: the allocated cost must be within 0.5% of the budget
LOG_EPS_RANGE = (math.log(1e-300), math.log(1e150))  # the reference's bracket for epsilon


def allocate(method, space) -> Allocation | None:
    """Kept channels per group for the epsilon whose pruned network meets the budget (``space``: the
    ``AllocationSpace`` surgery hands over, with its rounding and exact cost model)."""
    if space.target is None:
        return None  # a plain ratio: PFP only scores, surgery decides the counts
    metric, pct = space.target
    fixed = space.fixed()
    terms = {p.info.key: (p.info, _terms(method, p.info)) for p in space.plans if not p.fixed}
    budget = space.base_cost(metric) * (1 - pct / 100)

    def cost(kept: dict[str, int]) -> int:
        return space.cost(kept, metric)

    def kept_at(log_eps: float) -> dict[str, int]:
        eps = math.exp(log_eps)
        kept = {key: space.rounding.nearest(info, max(1, math.ceil(_unique(t, eps) - 1e-9)))
                for key, (info, t) in terms.items()}
        return {**fixed, **kept}

    lo, hi = LOG_EPS_RANGE  # small eps: many samples, everything kept; large eps: the minimum per group
    if cost(kept_at(hi)) > budget:
        raise SurgeryError(f"method pfp: a {pct}% {metric} reduction is out of reach even at the minimum count per "
                           f"group (pruning.round_to {space.rounding.round_to}, min_channels {space.rounding.min_channels}); "
                           "lower the target")
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(kept_at(mid)) > budget else (lo, mid)
    log_eps, best = min(((lo, kept_at(lo)), (hi, kept_at(hi))), key=lambda pair: abs(cost(pair[1]) - budget))
    error = (cost(best) - budget) / budget
    adjusted = abs(error) > BUDGET_TOLERANCE
    if adjusted:  # rounding made the allocation jump over the budget: the closest plan to it within the tolerance
        best = space.closest(best, anchor=best)
    method.details = {"epsilon": math.exp(log_eps), "sample_size": method.sample_size, "budget_metric": metric,
                      "budget": round(budget), "allocated": cost(best),
                      "budget_error_pct": round(100 * (cost(best) - budget) / budget, 4),
                      "epsilon_allocation_error_pct": round(100 * error, 4), "adjusted_by_rounding_search": adjusted}
    return Allocation(best, rounding="nearest")


def _terms(method, info) -> dict:
    """The per-group quantities of the sample complexity: S = sum of sensitivities, p_c, alpha."""
    scores = method.score(info, None).double()
    total = float(scores.sum())
    positions, kernel = max((method.geometry[layer] for layer in info.consumer_slots if layer in method.geometry),
                            key=lambda g: (g[0] + 1) * g[1])
    alpha = 2 * C_CONSTANT * math.log(8 * (positions + 1) * kernel / DELTA)
    probs = scores / total if total > 0 else torch.full_like(scores, 1 / scores.numel())
    return {"coeff": alpha * total, "probs": probs}


def _unique(terms: dict, eps: float) -> float:
    """Expected number of distinct channels among m(eps) samples from p."""
    m = max(1.0, math.ceil(3 * (6 + 2 * eps) * terms["coeff"] / eps**2)) if terms["coeff"] > 0 else 1.0
    return float((1 - (1 - terms["probs"]) ** min(m, 1e18)).sum())


MAX_DRAWS_PER_CHANNEL = 1000


def sample_channels(scores: torch.Tensor, keep: int, seed: int, key: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """PFPNetRand with the allocated count: draw channels from p = s / sum s, with replacement, until ``keep``
    distinct ones are drawn (m draws in all); return them and their weights count / (m p).

    Channels that can (almost) never be drawn would make that loop endless: after ``MAX_DRAWS_PER_CHANNEL``
    draws per channel, or when ``keep`` exceeds the channels of positive probability, the missing ones are
    filled with the most probable undrawn channels at weight 1 (kept as they are, not re-weighted)."""
    probs = scores.double().clamp(min=0)
    probs = probs / probs.sum() if probs.sum() > 0 else torch.full_like(probs, 1 / probs.numel())
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    counts = torch.zeros_like(probs)
    target = min(keep, int((probs > 0).sum()))
    draws, limit = 0, MAX_DRAWS_PER_CHANNEL * probs.numel()
    while int((counts > 0).sum()) < target and draws < limit:
        for channel in torch.multinomial(probs.float(), max(keep, 16), replacement=True, generator=generator).tolist():
            draws += 1
            counts[channel] += 1
            if int((counts > 0).sum()) == target:
                break
    weights = torch.zeros_like(probs)
    drawn = counts > 0
    weights[drawn] = counts[drawn] / (draws * probs[drawn])
    missing = keep - int(drawn.sum())
    if missing > 0:
        undrawn = torch.nonzero(~drawn).flatten()
        fill = undrawn[torch.argsort(probs[undrawn], descending=True, stable=True)[:missing]]
        weights[fill] = 1.0
    kept = torch.nonzero(weights > 0).flatten()
    return kept, weights[kept]


def reweight(model, weights: dict, groups: dict) -> None:
    """Scale each kept channel's weights in every consuming layer by count / (m p) (before removal)."""
    for key, (kept, factor) in weights.items():
        for layer, slots in groups[key].consumer_slots.items():
            module = model.get_submodule(layer)
            scale = torch.ones(module.weight.shape[1], dtype=torch.float64)
            for channel, value in zip(kept.tolist(), factor.tolist()):
                scale[slots.layer_idx[slots.root_idx == channel]] = value
            with torch.no_grad():
                shape = (1, -1) + (1,) * (module.weight.dim() - 2)
                module.weight.mul_(scale.view(shape).to(module.weight.device, module.weight.dtype))
