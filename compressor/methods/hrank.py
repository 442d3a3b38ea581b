"""HRank: Filter Pruning using High-Rank Feature Map.

Lin, Ji, Wang, Zhang, Zhang, Tian, Shao, CVPR 2020 (oral), https://arxiv.org/abs/2002.10179, reference code
lmbxmu/HRank (commit c03ac85).

What it removes and from what score: every filter is scored by the average numerical rank of its post-ReLU
feature maps over g calibration images (the paper: the average is stable whatever the images; g = 500);
the filters with the lowest average rank go. ``torch.linalg.matrix_rank`` with its default tolerance
(max(H, W) * eps * largest singular value), batched over images and channels, as the reference's
``torch.matrix_rank``.

Where the map is taken: after conv -> [BN] -> ReLU; for a conv writing into a residual sum, after the ReLU
that follows the addition (the reference does this for the second conv of every block); a conv followed by
another activation (ReLU6, SiLU, ...) or by no ReLU at all is an error naming the layer. A group with
several producing convs (a residual stream under ``residual: coupled``) scores each channel by the mean of
its producers' ranks.

Departures from the reference code, each controlled by the recipe:
- Pruning is physical (dependency-graph surgery), not masking: the reference zeroes filters and keeps the
  network's size (its issue #14). Under ``residual: internal`` only block-internal channels go; the
  reference also masks the residual-stream convs, which a physical network can only do with
  ``residual: coupled`` (stream channels removed across a whole stage).
- Calibration images are the recipe's un-augmented calibration subset of the training split (the
  reference uses 5 shuffled, augmented batches of 128 = 640 images); ``images`` sets g (default 500).
- Schedule: ``pruning.schedule: one-shot`` (default) prunes every layer at once and fine-tunes once;
  ``layerwise`` is the reference's loop (prune one layer, fine-tune ``pruning.layerwise_epochs``, next
  layer), with ranks computed once, before pruning, as the reference does. The reference fine-tunes 15
  epochs per layer (825 epochs for ResNet-56) and selects its checkpoints on the test set; we never do.
- ImageNet ResNet-50 stem: the reference ranks ``conv1`` on the output of the max-pool that follows its
  ReLU; we rank the ReLU's output before the pool. Pooling changes the map's size and can change its rank,
  so the stem's order may differ from the reference's. It matters only under ``residual: coupled``: under
  ``internal`` (the shipped ``hrank_resnet50_imagenet`` recipe) the stem feeds the residual stream and is
  kept whole, so its rate of 0.2 is not applied.
- Per-layer removal rates: ``pruning.layer_ratios`` takes the reference's ``compress_rate`` lists
  (recipes ``hrank_*``); a MACs target with a global ratio works as for every method.
"""

from __future__ import annotations

import torch

from ..config.methods import HRankOptions
from .base import CalibrationContext, PruningMethod, register
from .calibration import ReluProbe, calibration_batches, per_channel


@register(HRankOptions)
class HRank(PruningMethod):
    summary = "average rank of post-ReLU feature maps (Lin et al., CVPR 2020); data-informed"
    paper = "https://arxiv.org/abs/2002.10179"
    needs_calibration = True

    def calibrate(self, model, groups: list, ctx: CalibrationContext) -> None:
        layers = sorted({layer for info in groups for layer in info.producer_slots})
        self.ranks = average_ranks(model, layers, ctx, self.options.images)

    def score(self, info, group) -> torch.Tensor:
        return per_channel(self.ranks, info.producer_slots, info.channels).float()


def average_ranks(model, layers: list[str], ctx: CalibrationContext, images: int) -> dict[str, torch.Tensor]:
    """Mean numerical rank of each channel's post-ReLU map, per layer, over ``images`` calibration images."""
    probe = ReluProbe(model, layers)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    for batch in calibration_batches(ctx, images, "HRank: ranks of feature maps"):
        for layer, maps in probe.run(batch).items():
            ranks = map_ranks(maps).sum(0)
            sums[layer] = sums[layer] + ranks if layer in sums else ranks
        seen += batch.shape[0]
    return {layer: total / max(seen, 1) for layer, total in sums.items()}


def map_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps -> (B, C) numerical ranks (float32, default tolerance, as the reference)."""
    return torch.linalg.matrix_rank(maps.float()).double().cpu()

