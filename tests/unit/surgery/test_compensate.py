"""Compensation brings a pruned network closer to the original, without any training."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor.config import PruningConfig
from compressor.config.methods import L1Options
from compressor.methods import CalibrationContext
from compressor.methods.l1 import L1
from compressor.models.cifar_resnet import resnet20
from compressor.models.vgg import vgg16_bn
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


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_fold_and_least_squares_reduce_the_error():
    plain = output_error(resnet20, "none")
    fold = output_error(resnet20, "fold")
    least_squares = output_error(resnet20, "least_squares")
    assert fold < plain and least_squares < plain, (plain, fold, least_squares)


@pytest.mark.slow  # VGG-16 at CIFAR size, four prunes: about 15 s
def test_consumers_also_pruned_on_their_outputs_and_under_determined_fits():
    """VGG: every conv both consumes a pruned group and produces one. With 64 calibration images the 4x4 and 2x2
    layers have fewer samples than 5 per weight: least squares leaves them (and says so) instead of overfitting."""
    plain = output_error(vgg16_bn, "none")
    assert output_error(vgg16_bn, "fold") < plain
    torch.manual_seed(0)
    model = randomize_bn(vgg16_bn())
    cfg = PruningConfig(ratio=0.4, residual="internal", compensation="least_squares")
    result = prune(model, (3, 32, 32), L1(L1Options(name="l1")), cfg, context(torch.randn(64, 3, 32, 32)))
    skipped = result.compensation[0]["skipped"]
    assert "features.40" in skipped and "under-determined" in skipped["features.40"]
    assert "features.3" in result.compensation[0]["layers"]


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


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
@pytest.mark.parametrize("compensation", ["fold", "least_squares"])
def test_layerwise_with_compensation_on_coupled_groups(compensation):
    """Each step compensates against the network as it was before that step (widths already changed)."""
    from compressor.surgery import carry_out, decide, summarize

    torch.manual_seed(0)
    model = randomize_bn(resnet20())
    reference = copy.deepcopy(model)
    cfg = PruningConfig(ratio=0.3, residual="coupled", compensation=compensation)
    ctx = context(torch.randn(64, 3, 32, 32))
    method = L1(L1Options(name="l1"))
    decision = decide(model, (3, 32, 32), method, cfg, ctx)
    history, done = [], []
    for key in sorted(decision.chosen):
        steps, result = carry_out(model, decision, method, cfg, ctx, keys=[key])
        history += steps
        done.append(result)
        with torch.no_grad():
            for p in model.parameters():  # stand-in for the fine-tuning between steps
                p.mul_(1.001)
    surgery = summarize(model, decision, cfg, history, done)
    assert surgery.macs_after < surgery.macs_before and all(r.layers for r in done)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all() and model(x).shape == reference(x).shape


class Chain(torch.nn.Module):
    """conv1 -> ReLU -> conv2 (with or without bias, no BatchNorm after it)."""

    def __init__(self, bias: bool):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(6, 4, 1, bias=bias)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("bias", [True, False])
def test_fold_puts_a_removed_constant_channel_into_the_bias_or_fits_without_it(bias):
    torch.manual_seed(0)
    model = Chain(bias).eval()
    with torch.no_grad():  # channel 5 is a constant 0.7 after the ReLU
        model.conv1.weight[5] = 0
        model.conv1.bias[5] = 0.7
    reference = copy.deepcopy(model)
    cfg = PruningConfig(layers=[{"match": "conv1", "ratio": 1 / 6}], compensation="fold")
    method = L1(L1Options(name="l1", reduction="first"))
    prune(model, (3, 8, 8), method, cfg, context(torch.randn(64, 3, 8, 8)))
    assert model.conv1.out_channels == 5
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        target = reference.conv2(torch.relu(reference.conv1(x)))
        error = (model.conv2(torch.relu(model.conv1(x))) - target).pow(2).mean()
    if bias:  # the constant moved into conv2's bias: exact (a 1x1 consumer has no padded border)
        assert error < 1e-10
    else:  # nowhere to put a constant: the regression has none; in the mean it does no worse than dropping
        with torch.no_grad():
            dropped = copy.deepcopy(reference)
            dropped.conv2.weight[:, 5] = 0
            baseline = (dropped.conv2(torch.relu(dropped.conv1(x))) - target).pow(2).mean()
        assert error <= baseline * 1.05
