"""Compensation brings a pruned network closer to the original, without any training."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor.methods import CalibrationContext
from compressor.methods.l1 import L1, L1Options
from compressor.models.cifar_resnet import resnet20
from compressor.models.vgg import vgg16_bn
from compressor.recipe import PruningConfig
from compressor.surgery import prune

from .test_prune import randomize_bn


def context(images: torch.Tensor) -> CalibrationContext:
    return CalibrationContext(batches=lambda: [(images[i:i + 16], None) for i in range(0, len(images), 16)],
                              device=torch.device("cpu"), num_images=len(images), seed=0)


def output_error(build, compensation: str, ratio: float = 0.4) -> float:
    torch.manual_seed(0)
    model = randomize_bn(build())
    reference = copy.deepcopy(model)
    calibration = torch.randn(64, 3, 32, 32)
    cfg = PruningConfig(ratio=ratio, residual="internal", compensation=compensation)
    prune(model, (3, 32, 32), L1(L1Options(name="l1")), cfg, context(calibration))
    test = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        expected = reference(test)
        return ((model(test) - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("build", [resnet20, vgg16_bn])
def test_fold_and_least_squares_reduce_the_error(build):
    plain = output_error(build, "none")
    fold = output_error(build, "fold")
    least_squares = output_error(build, "least_squares")
    assert fold < plain and least_squares < plain, (plain, fold, least_squares)


def test_least_squares_reproduces_a_removed_duplicate_exactly():
    torch.manual_seed(0)
    model = randomize_bn(resnet20())
    block = model.layer1[0]
    with torch.no_grad():  # channel 15 repeats channel 0 after BN, with 100x smaller weights: L1 removes it
        block.conv1.weight[15] = block.conv1.weight[0] / 100
        block.bn1.running_mean[15] = block.bn1.running_mean[0] / 100
        block.bn1.running_var[15] = block.bn1.running_var[0] / 10_000
        block.bn1.eps = 0.0
        block.bn1.weight[15], block.bn1.bias[15] = block.bn1.weight[0], block.bn1.bias[0]
    reference = copy.deepcopy(model)
    cfg = PruningConfig(layers=[{"match": "layer1.0.conv1", "ratio": 1 / 16}], residual="internal",
                        compensation="least_squares")
    prune(model, (3, 32, 32), L1(L1Options(name="l1", reduction="first")), cfg, context(torch.randn(64, 3, 32, 32)))
    assert model.layer1[0].conv1.out_channels == 15
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight[:15])  # 15 went
    test = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = reference(test)
        assert ((model(test) - expected).abs().max() / expected.abs().max()).item() < 1e-4
