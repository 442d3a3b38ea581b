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

from typing import Literal

import torch

from .base import MethodOptions, PruningMethod, register

Reduction = Literal["mean", "first", "max", "sum"]


class _NormOptions(MethodOptions):
    reduction: Reduction = "mean"


class L1Options(_NormOptions):
    name: Literal["l1"]


class L2Options(_NormOptions):
    name: Literal["l2"]


class FPGMOptions(_NormOptions):
    name: Literal["fpgm"]


class RandomOptions(MethodOptions):
    name: Literal["random"]


class _TorchPruningImportance(PruningMethod):
    """A method whose score is a torch-pruning importance object."""

    def _importance(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, info, group) -> torch.Tensor:
        if not hasattr(self, "_imp"):
            self._imp = self._importance()
        scores = self._imp(group)
        if scores is None:  # a group without parameterised layers: nothing to tell channels apart
            return torch.zeros(len(group[0].idxs))
        return scores.detach().float().cpu()


@register
class L1(_TorchPruningImportance):
    name = "l1"
    summary = "filter L1 norm (Li et al., ICLR 2017); data-free"
    paper = "https://arxiv.org/abs/1608.08710"
    Options = L1Options

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction=self.options.reduction, normalizer=None)


@register
class L2(_TorchPruningImportance):
    name = "l2"
    summary = "filter L2 norm (the SFP/GHFP criterion); data-free"
    Options = L2Options

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction=self.options.reduction, normalizer=None)


@register
class FPGM(_TorchPruningImportance):
    name = "fpgm"
    summary = "distance to the layer's geometric median (He et al., CVPR 2019); data-free"
    paper = "https://arxiv.org/abs/1811.00250"
    Options = FPGMOptions

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.FPGMImportance(p=2, group_reduction=self.options.reduction, normalizer=None)


@register
class Random(PruningMethod):
    name = "random"
    summary = "uniform random scores, seeded; the floor every method must beat"
    Options = RandomOptions

    def score(self, info, group) -> torch.Tensor:
        if not hasattr(self, "_gen"):
            self._gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(len(group[0].idxs), generator=self._gen)
