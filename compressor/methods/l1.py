"""Data-free baselines: L1 / L2 filter norm, FPGM and random, through torch-pruning importances.

- L1: "Pruning Filters for Efficient ConvNets", Li, Kadav, Durdanovic, Samet, Graf, ICLR 2017,
  https://arxiv.org/abs/1608.08710. Removes the filters with the smallest sum of absolute weights.
- L2: the same with the Euclidean norm (the criterion SFP/GHFP use).
- FPGM: "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks Acceleration",
  He, Liu, Wang, Hu, Yang, CVPR 2019, https://arxiv.org/abs/1811.00250. Removes the filters closest to
  the geometric median of their layer (the most replaceable ones), whatever their norm.
- random: uniform random scores (seeded by the recipe's seed); the floor every method must beat.

Departure from the papers: a torch-pruning group couples several layers (a conv, its BN and the next
layer's input slice; with ``residual: coupled``, every conv writing into a residual stream). Li et al. and
He et al. score the filter of one conv. ``reduction`` says how the per-layer scores of a group combine:
``mean`` (torch-pruning's default, also used for the measured anchors in our issues) or ``first`` (the
root conv's filters only, the papers' rule for a plain chain).
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from ..config.methods import FPGMOptions, L1Options, L2Options, RandomOptions
from .base import PruningMethod, register


class _TorchPruningImportance(PruningMethod):
    """A method whose score is a torch-pruning importance object (made on first use: torch-pruning is heavy)."""

    def __init__(self, options, seed: int = 0):
        super().__init__(options, seed)
        self._imp = None

    @abstractmethod
    def _importance(self):
        """The torch-pruning importance object that scores a group."""

    def score(self, info, group) -> torch.Tensor:
        if self._imp is None:
            self._imp = self._importance()
        scores = self._imp(group)
        if scores is None:  # a group without parameterised layers: nothing to tell channels apart
            return torch.zeros(len(group[0].idxs))
        return scores.detach().float().cpu()


@register(L1Options)
class L1(_TorchPruningImportance):
    summary = "filter L1 norm (Li et al., ICLR 2017); data-free"
    paper = "https://arxiv.org/abs/1608.08710"

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction=self.options.reduction, normalizer=None)


@register(L2Options)
class L2(_TorchPruningImportance):
    summary = "filter L2 norm (the SFP/GHFP criterion); data-free"

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction=self.options.reduction, normalizer=None)


@register(FPGMOptions)
class FPGM(_TorchPruningImportance):
    summary = "distance to the layer's geometric median (He et al., CVPR 2019); data-free"
    paper = "https://arxiv.org/abs/1811.00250"

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.FPGMImportance(p=2, group_reduction=self.options.reduction, normalizer=None)


@register(RandomOptions)
class Random(PruningMethod):
    summary = "uniform random scores, seeded; the floor every method must beat"

    def __init__(self, options, seed: int = 0):
        super().__init__(options, seed)
        self._gen = torch.Generator().manual_seed(seed)

    def score(self, info, group) -> torch.Tensor:
        return torch.rand(len(group[0].idxs), generator=self._gen)
