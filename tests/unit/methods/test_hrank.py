"""HRank: ranks of post-ReLU maps, checked against an independent numpy computation on maps of known rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.config import PruningConfig
from compressor.config.methods import HRankOptions
from compressor.errors import ModelError
from compressor.methods import CalibrationContext
from compressor.methods.hrank import HRank, map_ranks
from compressor.surgery.graph import example_input
from compressor.surgery.prune import analyse


def low_rank_maps(ranks: np.ndarray, size: int = 8, seed: int = 0) -> np.ndarray:
    """(B, C, size, size) non-negative maps; map (b, c) has rank ranks[b, c] (sum of r outer products)."""
    rng = np.random.default_rng(seed)
    maps = np.zeros(ranks.shape + (size, size), dtype=np.float32)
    for index in np.ndindex(ranks.shape):
        r = ranks[index]
        maps[index] = (rng.random((size, r)) + 0.1) @ (rng.random((r, size)) + 0.1) if r else 0
    return maps


def test_map_ranks_equal_numpy_on_maps_of_known_rank():
    ranks = np.random.default_rng(1).integers(0, 9, size=(5, 6))
    maps = low_rank_maps(ranks)
    expected = np.array([[np.linalg.matrix_rank(maps[b, c]) for c in range(6)] for b in range(5)])
    assert np.array_equal(expected, ranks)  # the construction is well conditioned
    assert np.array_equal(map_ranks(torch.from_numpy(maps)).numpy(), expected)


class Probe(nn.Module):
    """1x1 identity conv -> identity BN -> ReLU -> conv: the post-ReLU maps are the input images."""

    def __init__(self, channels: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=0.0)
        self.conv2 = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x):
        x = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def context(images: torch.Tensor) -> CalibrationContext:
    return CalibrationContext(batches=lambda: [(images[:3], None), (images[3:], None)], device=torch.device("cpu"),
                              num_images=len(images))


def test_scores_are_average_ranks_of_the_post_relu_maps():
    ranks = np.random.default_rng(2).integers(1, 9, size=(5, 6))
    images = torch.from_numpy(low_rank_maps(ranks))
    model = Probe().eval()
    layout = analyse(model, example_input((6, 8, 8)), PruningConfig(ratio=0.5, ignore=["conv2"]))
    method = HRank(HRankOptions(name="hrank"))
    method.calibrate(model, [info for info, _ in layout.groups], context(images))
    info, group = next((i, g) for i, g in layout.groups if i.key == "conv1")
    assert torch.allclose(method.score(info, group).double(), torch.from_numpy(ranks.mean(0)).double())


class SiluNet(Probe):
    def forward(self, x):
        x = self.conv2(F.silu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_conv_not_followed_by_relu_is_named():
    model = SiluNet().eval()
    layout = analyse(model, example_input((6, 8, 8)), PruningConfig(ratio=0.5, ignore=["conv2"]))
    method = HRank(HRankOptions(name="hrank"))
    with pytest.raises(ModelError, match="layer conv1: followed by Silu, not ReLU"):
        method.calibrate(model, [info for info, _ in layout.groups], context(torch.rand(4, 6, 8, 8)))


def test_residual_conv_is_scored_after_the_relu_that_follows_the_addition():
    from compressor.models.cifar_resnet import resnet20

    model = resnet20().eval()
    layout = analyse(model, example_input((3, 32, 32)), PruningConfig(ratio=0.5, residual="coupled"))
    method = HRank(HRankOptions(name="hrank", images=4))
    method.calibrate(model, [info for info, _ in layout.groups], context(torch.randn(4, 3, 32, 32)))
    assert "layer1.2.conv2" in method.ranks and "layer1.0.conv1" in method.ranks
    assert all(r.shape == (m.out_channels,) for name, r in method.ranks.items()
               for m in [model.get_submodule(name)])
    from compressor.methods.calibration import ReluProbe

    x = torch.randn(2, 3, 32, 32)
    maps = ReluProbe(model, ["layer1.2.conv2", "layer1.0.conv1"]).run(x)
    with torch.no_grad():  # conv2 of a block: the ReLU after the residual addition, i.e. the block's output
        block_out = model.layer1[:3](F.relu(model.bn1(model.conv1(x))))
        inner = F.relu(model.layer1[0].bn1(model.layer1[0].conv1(F.relu(model.bn1(model.conv1(x))))))
    assert torch.equal(maps["layer1.2.conv2"], block_out) and torch.equal(maps["layer1.0.conv1"], inner)
