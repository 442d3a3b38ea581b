"""The data-free baselines score channels as their papers say, through torch-pruning importances."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compressor.config.methods import FPGMOptions, L1Options, L2Options, RandomOptions
from compressor.errors import RecipeError
from compressor.methods import build_method, get_method, list_methods
from compressor.surgery import build_graph


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


def first_group():
    model = Chain()
    graph = build_graph(model, torch.randn(1, 3, 8, 8))
    group = graph.get_pruning_group(model.conv1, graph.get_pruner_of_module(model.conv1).prune_out_channels,
                                    list(range(6)))
    return model, group


def test_l1_first_is_the_filter_norm_of_li_et_al():
    model, group = first_group()
    scores = build_method(L1Options(name="l1", reduction="first")).score(None, group)
    assert torch.allclose(scores, model.conv1.weight.abs().sum((1, 2, 3)))


def test_l2_mean_averages_producer_and_consumer_slices():
    model, group = first_group()
    scores = build_method(L2Options(name="l2")).score(None, group)
    own = model.conv1.weight.pow(2).sum((1, 2, 3))
    consumer = model.conv2.weight.pow(2).sum((0, 2, 3))
    assert torch.allclose(scores, (own + consumer) / 2)


def test_fpgm_scores_distance_to_the_others():
    model, group = first_group()
    scores = build_method(FPGMOptions(name="fpgm", reduction="first")).score(None, group)
    w = model.conv1.weight.detach().pow(2).flatten(1)  # torch-pruning's FPGM works on |w|^p
    expected = torch.cdist(w, w).sum(0)
    assert torch.allclose(scores, expected, rtol=1e-5)


def test_random_is_seeded():
    _, group = first_group()
    a = build_method(RandomOptions(name="random"), seed=3).score(None, group)
    b = build_method(RandomOptions(name="random"), seed=3).score(None, group)
    c = build_method(RandomOptions(name="random"), seed=4).score(None, group)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (6,)


def test_registry_lists_every_method_with_a_summary():
    names = [cls.name for cls in list_methods()]
    assert {"l1", "l2", "fpgm", "random"} <= set(names)
    assert all(cls.summary and "\n" not in cls.summary for cls in list_methods())
    with pytest.raises(RecipeError, match="did you mean 'fpgm'"):
        get_method("fpmg")
