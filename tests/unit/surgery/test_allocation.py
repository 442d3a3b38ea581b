"""A method's Allocation, as surgery rounds it: allowed widths stay, others are rounded as asked, groups the
method leaves out keep the recipe's count."""

from __future__ import annotations

import torch

from compressor.config import PruningConfig
from compressor.methods.base import Allocation
from compressor.models.cifar_resnet import quicknet
from compressor.surgery.allocation import Space, settle
from compressor.surgery.prune import analyse


def space(cfg: PruningConfig) -> Space:
    layout = analyse(quicknet().eval(), torch.randn(1, 3, 32, 32), cfg)
    return Space.of(layout.plans, layout.cost, cfg)


def test_an_allowed_width_is_kept_even_when_rounding_would_move_it():
    """16 channels with round_to 3: 16 (the full width) and 15 are allowed; nearest(16) alone would give 15."""
    s = space(PruningConfig(round_to=3, residual="internal", ratio=0.5))
    first = s.plans[0].info
    assert first.channels == 16 and s.rounding.nearest(first, 16) == 15
    kept = settle(Allocation({first.key: 16, s.plans[1].info.key: 10}, rounding="nearest"), s)
    assert kept[first.key] == 16 and kept[s.plans[1].info.key] == 9  # 10 is not a multiple of 3: nearest is 9


def test_up_rounding_never_drops_a_kept_channel_and_honours_min_channels():
    s = space(PruningConfig(round_to=8, min_channels=12, residual="internal", ratio=0.5))
    a, b = s.plans[0].info, s.plans[1].info
    kept = settle(Allocation({a.key: 9, b.key: 1}, rounding="up"), s)
    assert kept[a.key] == 16 and kept[b.key] == 16  # 9 -> 16; 1 -> at least 12 -> 16


def test_groups_the_method_leaves_out_keep_the_recipes_count():
    s = space(PruningConfig(round_to=1, residual="internal", ratio=0.5))
    named = s.plans[0].info.key
    kept = settle(Allocation({named: 3}), s)
    assert kept[named] == 3
    assert all(kept[p.info.key] == s.rounding.for_ratio(p.info, 0.5) for p in s.plans[1:])
