"""SWP: skeleton gradients and the L1 sub-gradient, threshold masks, dead filters' BN, masked == pruned."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from compressor.methods.swp import SWP, SWPOptions, skeleton_layers
from compressor.models.cifar_resnet import resnet20
from compressor.recipe import FinetuneConfig, PruningConfig
from compressor.surgery import prune
from compressor.surgery.graph import example_input
from compressor.surgery.prune import analyse
from compressor.training import finetune
from compressor.training.finetune import _block_gradients, _refreeze

SHAPE = (3, 32, 32)
CFG = PruningConfig(residual="internal")


def started(alpha=1e-3, threshold=0.05, model=None):
    torch.manual_seed(0)
    model = model or resnet20()
    layout = analyse(model, example_input(SHAPE), CFG)
    method = SWP(SWPOptions(name="swp", epochs=1, alpha=alpha, threshold=threshold))
    method.begin(model, [info for info, _ in layout.groups])
    return model, method


def test_skeleton_on_every_kxk_conv_and_identity_at_start():
    reference = resnet20().eval()
    model = copy.deepcopy(reference)
    model, method = started(model=model)
    assert method.layers == skeleton_layers(reference) and "conv1" in method.layers
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference(x), atol=1e-6)  # I = 1: the same network


def test_skeleton_gradient_is_the_chain_rule_plus_the_l1_subgradient():
    model, method = started(alpha=0.01)
    conv = model.get_submodule("layer1.0.conv1")
    skeleton = conv.parametrizations.weight[0].skeleton
    with torch.no_grad():
        skeleton[0, 0, 0] = -0.5  # a negative entry: sign -1
    x = torch.randn(4, *SHAPE)
    weight = conv.parametrizations.weight.original
    captured = {}
    conv.register_forward_hook(lambda m, i, o: captured.__setitem__("w", m.weight))
    effective_grad = torch.autograd.grad(model(x).square().sum(), [skeleton])[0]
    skeleton.grad = effective_grad.clone()
    method.before_step(model)
    assert torch.allclose(skeleton.grad, effective_grad + 0.01 * torch.sign(skeleton), atol=1e-6)
    w_eff = weight * skeleton.detach().unsqueeze(1)
    assert torch.allclose(captured["w"].detach(), w_eff.detach())


def test_threshold_prunes_entries_and_they_stay_zero_through_steps():
    model, method = started(threshold=0.05)
    skeleton = model.get_submodule("layer2.1.conv1").parametrizations.weight[0].skeleton
    with torch.no_grad():
        skeleton[:3] = 0.04  # at or below delta: pruned
        skeleton[3, 1, 1] = -0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(4, *SHAPE)).square().mean().backward()
        method.before_step(model)
        frozen = method.frozen()
        _block_gradients(frozen)
        optimizer.step()
        _refreeze(frozen, optimizer)
    assert (skeleton[:3] == 0).all() and skeleton[3, 1, 1] == 0
    assert (optimizer.state[skeleton]["momentum_buffer"][:3] == 0).all()  # no drift back (reference issue #21)
    assert (skeleton[4:].abs() > 0.05).all()  # the others train on


def test_dead_filters_lose_their_bn_and_are_removed_exactly():
    model, method = started()
    dead = [1, 4, 5]
    with torch.no_grad():
        model.get_submodule("layer1.1.conv1").parametrizations.weight[0].skeleton[dead] = 0
        model.get_submodule("layer3.0.conv2").parametrizations.weight[0].skeleton[2] = 0  # residual: stays
        model.get_submodule("layer1.1.conv1").parametrizations.weight[0].skeleton[0, 1, 1] = 0  # one stripe
        bn = model.layer1[1].bn1
        bn.weight.normal_()
        bn.bias.normal_()
    method.before_step(model)
    assert (model.layer1[1].bn1.weight[dead] == 0).all() and (model.layer1[1].bn1.bias[dead] == 0).all()
    method.finish(model)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    assert method.removable["layer1.1.conv1"] == dead
    assert all(not v for k, v in method.removable.items() if k != "layer1.1.conv1")
    assert (model.layer1[1].conv1.weight[0, :, 1, 1] == 0).all()
    masked = copy.deepcopy(model).eval()
    result = prune(model, SHAPE, method, CFG)
    assert model.layer1[1].conv1.out_channels == 16 - len(dead)
    assert model.layer3[0].conv2.out_channels == 64
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert (masked(x) - model.eval()(x)).abs().max() < 1e-4
    assert result.groups


def test_training_with_the_skeleton_prunes_stripes():
    torch.manual_seed(0)
    images, labels = torch.randn(64, *SHAPE), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    model, method = started(alpha=1.0, threshold=0.3)
    with torch.no_grad():  # half the entries start at 0.5: the L1 pull (0.05 per step) takes them under delta
        for skeleton in method.skeletons(model).values():
            skeleton[: skeleton.shape[0] // 2] = 0.5
    cfg = FinetuneConfig(epochs=2, lr=0.05, schedule="constant", momentum=0.0, weight_decay=0.0)
    finetune(model, loader, loader, cfg, torch.device("cpu"), hooks=method, keep_best=False)
    method.finish(model)
    assert method.details["stripes_kept"] == method.details["stripes_total"] // 2
    assert [h["epoch"] for h in method.details["history"]] == [1, 2]
    weight = model.get_submodule("layer1.0.conv1").weight
    assert isinstance(model.get_submodule("layer1.0.conv1"), nn.Conv2d) and weight.requires_grad
