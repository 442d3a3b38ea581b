"""Functionality-oriented pruning: repeated filters go, the rest stay, and folding keeps the function."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.config import PruningConfig
from compressor.config.methods import FunctionalityOptions
from compressor.methods import CalibrationContext
from compressor.methods.functionality import Functionality
from compressor.surgery import prune

UNIQUE = [0, 1, 2, 5]  # filters 3, 4, 6, 7 copy 0, 1, 2, 5


class Duplicated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def duplicated_model() -> nn.Module:
    torch.manual_seed(0)
    model = Duplicated()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
        for copy_of, original in zip([3, 4, 6, 7], [0, 1, 2, 5]):
            model.conv1.weight[copy_of] = model.conv1.weight[original]
            for tensor in (model.bn1.weight, model.bn1.bias, model.bn1.running_mean, model.bn1.running_var):
                tensor[copy_of] = tensor[original]
    return model.eval()


def one_of_each_unique(weight: torch.Tensor) -> bool:
    """The kept filters are exactly one copy of each distinct filter of the duplicated model."""
    unique = duplicated_model().conv1.weight.detach()[UNIQUE]
    kept = weight.detach()
    matches = [[bool(torch.equal(k, u)) for u in unique] for k in kept]
    return len(kept) == len(unique) and all(sum(row) == 1 for row in matches) and all(
        sum(col) == 1 for col in zip(*matches))


def context(images: torch.Tensor) -> CalibrationContext:
    return CalibrationContext(batches=lambda: [(images[:16], None), (images[16:], None)], device=torch.device("cpu"),
                              num_images=len(images))


def test_duplicates_are_pruned_to_the_unique_filters_without_changing_outputs():
    model = duplicated_model()
    reference = copy.deepcopy(model)
    images = torch.randn(32, 3, 12, 12)
    method = Functionality(FunctionalityOptions(name="functionality", threshold=0.999))
    cfg = PruningConfig(residual="internal", ignore=["conv2"])  # no ratio: the threshold decides
    surgery = prune(model, (3, 12, 12), method, cfg, context(images))
    assert model.conv1.out_channels == 4 and surgery.allocation == "method"
    assert one_of_each_unique(model.conv1.weight)  # exactly the unique filters stay (whichever copy matters more)
    test = torch.randn(10, 3, 12, 12)
    with torch.no_grad():
        diff = (model(test) - reference(test)).abs().max().item()
    assert diff < 1e-5, diff


def test_without_folding_the_same_pruning_changes_outputs():
    """The fold is what keeps the function: with compensation none the pruned model differs."""
    model = duplicated_model()
    reference = copy.deepcopy(model)
    method = Functionality(FunctionalityOptions(name="functionality", threshold=0.999))
    prune(model, (3, 12, 12), method, PruningConfig(residual="internal", ignore=["conv2"], compensation="none"),
          context(torch.randn(32, 3, 12, 12)))
    test = torch.randn(10, 3, 12, 12)
    with torch.no_grad():
        assert (model(test) - reference(test)).abs().max().item() > 1e-2


def test_scores_rank_repeats_lowest_with_a_ratio():
    model = duplicated_model()
    method = Functionality(FunctionalityOptions(name="functionality"))
    prune(model, (3, 12, 12), method, PruningConfig(ratio=0.5, residual="internal", ignore=["conv2"]),
          context(torch.randn(32, 3, 12, 12)))
    assert one_of_each_unique(model.conv1.weight)


def test_threshold_mode_rounds_up_and_respects_min_channels():
    model = duplicated_model()
    method = Functionality(FunctionalityOptions(name="functionality", threshold=0.999))
    cfg = PruningConfig(residual="internal", ignore=["conv2"], round_to=8)  # 4 repeats of 8: keep 8 (no removal)
    surgery = prune(model, (3, 12, 12), method, cfg, context(torch.randn(32, 3, 12, 12)))
    assert model.conv1.out_channels == 8 and surgery.pruned_groups == ()
    model = duplicated_model()
    cfg = PruningConfig(residual="internal", ignore=["conv2"], round_to=1, min_channels=6)
    prune(model, (3, 12, 12), Functionality(FunctionalityOptions(name="functionality", threshold=0.999)), cfg,
          context(torch.randn(32, 3, 12, 12)))
    assert model.conv1.out_channels == 6  # only repeats go, but never below min_channels
