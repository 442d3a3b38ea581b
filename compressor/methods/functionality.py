"""Functionality-oriented filter pruning.

Qin, Yu, Liu, Chen: "Functionality-Oriented Convolutional Filter Pruning" (arXiv 1810.07322, first titled
"Interpretable Convolutional Filter Pruning"; ICLR 2019 submission) and "Demystifying Neural Network Filter
Pruning" (arXiv 1811.02639). Claims: CNNs are redundant because filters repeat each other's functionality;
magnitude criteria miss such repeats; removing repeats precisely needs little or no retraining.

No code was published, and we could not read the papers' bodies (see ../shared/METHODS.md §2); this file
is our reconstruction, built from the abstracts:

- Functionality of a filter = its responses on calibration images, as the next layer sees them (the input
  maps of every layer consuming the channel, over all images and positions), instead of the paper's
  activation-maximisation visualisations (hundreds of gradient steps per filter).
- Repetition = Pearson correlation between two filters' responses. Going from the most important filter
  down, each filter's redundancy r is its highest correlation with a more important one (its "group").
- Importance = the filter's contribution to the next layer: variance of its response times the squared
  norm of the consuming weights. Score = importance x (1 - r^2), the part of that contribution a more
  important filter does not already carry; exact duplicates score 0 and go first. Summed over consumers.
- How many go: with ``threshold`` set, every filter with r >= threshold in every consumer goes (the
  "grouping": each joins its most correlated, more important filter) and the recipe needs no ratio;
  otherwise the recipe's ratio or MACs target removes the lowest scores.
- No retraining: the removed filters' responses are folded into the next layer (``pruning.compensation:
  auto`` means ``fold`` here: each removed response regressed on the kept ones plus a constant, exact for
  duplicates); ``least_squares`` re-fits the next layer instead.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config.methods import FunctionalityOptions
from ..errors import SurgeryError
from .base import Allocation, AllocationSpace, CalibrationContext, PruningMethod, register
from .calibration import input_grams, observable


@register(FunctionalityOptions)
class Functionality(PruningMethod):
    summary = "removes filters repeating a more important one's responses, folded into the next layer (Qin et al.)"
    paper = "https://arxiv.org/abs/1810.07322"
    needs_calibration = True
    default_compensation = "fold"

    def calibrate(self, model, groups: list, ctx: CalibrationContext) -> None:
        layers = sorted({layer for info in groups for layer, slots in info.consumer_slots.items()
                         if observable(model.get_submodule(layer)) and _one_position_per_channel(slots)})
        grams, _ = input_grams(model, layers, ctx, self.options.images, "functionality: responses")
        self.stats = {info.key: _group_stats(model, info, grams) for info in groups}

    def score(self, info, group) -> torch.Tensor:
        return self.stats[info.key][0].float()

    def allocate(self, space: AllocationSpace) -> Allocation | None:
        """Threshold mode: every repeat goes, the kept count rounded *up* (a kept count never drops a filter that
        is not a repeat); groups with a per-layer rule keep their rule's count."""
        if self.options.threshold is None:
            return None
        fixed, kept = space.fixed(), {}
        for plan in space.plans:
            info = plan.info
            redundant = int((self.stats[info.key][1] >= self.options.threshold).sum())
            kept[info.key] = fixed[info.key] if plan.fixed else space.rounding.up(info, info.channels - redundant)
        channels = {p.info.key: p.info.channels for p in space.plans}
        self.details = {"threshold": self.options.threshold,
                        "redundant_filters": {k: channels[k] - v for k, v in kept.items() if v < channels[k]}}
        return Allocation(kept, rounding="up")

    def choose(self, key: str, scores: torch.Tensor, keep: int, slices: int) -> list[int] | None:
        """With a threshold, exactly the redundant filters go (lowest scores first if fewer may)."""
        if self.options.threshold is None or slices > 1:
            return None
        score, redundancy = self.stats[key]
        redundant = [i for i in torch.argsort(score, stable=True).tolist() if redundancy[i] >= self.options.threshold]
        return sorted(redundant[: scores.numel() - keep])


def _one_position_per_channel(slots) -> bool:
    """False for a layer reached through an index mapping (a flatten gives a channel many input positions)."""
    return len(set(slots.root_idx.tolist())) == len(slots.root_idx)


def _group_stats(model: nn.Module, info, grams: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, redundancy) per group channel: summed over consumers, and the least redundant consumer."""
    score = torch.zeros(info.channels, dtype=torch.float64)
    redundancy = torch.ones(info.channels, dtype=torch.float64)
    used = 0
    for layer, slots in info.consumer_slots.items():
        if layer not in grams:
            continue  # not scorable here (grouped conv, or several positions per channel through a flatten)
        order = torch.argsort(slots.root_idx)
        positions = slots.layer_idx[order]
        weight = model.get_submodule(layer).weight.detach().double().cpu().transpose(0, 1).flatten(1)[positions]
        s, r = _scores(grams[layer], positions, weight.pow(2).sum(1))
        score += s
        redundancy = torch.minimum(redundancy, r)
        used += 1
    if used == 0:
        raise SurgeryError(f"method functionality: group {info.key} feeds no conv (groups=1) or linear layer whose "
                           "inputs it could observe; ignore it with pruning.ignore or use another method")
    return score, redundancy


def _scores(gram: torch.Tensor, positions: torch.Tensor, weight_energy: torch.Tensor) -> tuple:
    """Importance x (1 - r^2) and r, for the channels at ``positions`` of one consumer's input."""
    count = gram[-1, -1]
    mean = gram[positions, -1] / count
    cov = gram[positions][:, positions] / count - torch.outer(mean, mean)
    var = cov.diagonal().clamp(min=0)
    std = var.sqrt()
    corr = cov / torch.outer(std, std).clamp(min=1e-30)
    importance = var * weight_energy
    order = torch.argsort(importance, descending=True, stable=True)
    redundancy = torch.zeros(len(positions), dtype=torch.float64)
    for rank, channel in enumerate(order.tolist()[1:], start=1):
        better = order[:rank]
        redundancy[channel] = corr[channel, better].clamp(-1, 1).max()
    dead = var <= 1e-12 * var.max().clamp(min=1e-30)
    redundancy[dead] = 1.0  # a constant response carries nothing the intercept of the fold cannot
    return importance * (1 - redundancy.clamp(min=0) ** 2), redundancy
