"""Channel counts and index selection (our own rounding, not torch-pruning's)."""

from __future__ import annotations

import pytest
import torch

from compressor.surgery.plan import kept_channels, select_pruned


@pytest.mark.parametrize("channels,ratio,multiple,minimum,expected", [
    (64, 0.0, 8, 1, 64),     # no pruning keeps everything, even if not a multiple
    (64, 0.5, 1, 1, 32),
    (64, 0.3, 8, 1, 48),     # remove floor(19.2) = 19, keep 45 -> nearest multiple of 8
    (16, 0.6, 1, 1, 7),      # HRank's reference: int(0.6 * 16) = 9 removed
    (64, 0.95, 1, 1, 4),     # HRank's VGG first layer: int(60.8) = 60 removed, 4 kept
    (16, 0.99, 1, 1, 1),     # never below one channel
    (16, 0.99, 1, 4, 4),     # nor below min_channels
    (16, 0.99, 8, 1, 8),     # nor below one multiple
    (10, 0.5, 8, 1, 8),
    (12, 0.9, 8, 1, 8),
    (6, 0.5, 8, 1, 6),       # a multiple larger than the group: keep all
])
def test_kept_channels(channels, ratio, multiple, minimum, expected):
    assert kept_channels(channels, ratio, multiple, minimum) == expected


def test_select_pruned_lowest_scores_stable_ties():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3])
    assert select_pruned(scores, keep=3) == [1, 3]
    assert select_pruned(scores, keep=5) == []
    assert select_pruned(torch.zeros(4), keep=2) == [0, 1]  # ties: first positions go first


def test_select_pruned_slices_removes_same_positions_everywhere():
    # 2 slices of 4; position 2 is weakest on average, then position 0
    scores = torch.tensor([0.2, 0.9, 0.0, 0.8, 0.3, 0.7, 0.1, 0.9])
    assert select_pruned(scores, keep=4, slices=2) == [0, 2, 4, 6]
