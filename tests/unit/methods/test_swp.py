"""SWP: skeleton gradients and the L1 sub-gradient, threshold masks, dead filters' BN, masked == pruned."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from compressor.config import FinetuneConfig, PruningConfig
from compressor.config.methods import SWPOptions
from compressor.methods.swp import SWP, rescale_filters, skeleton_layers
from compressor.models.cifar_resnet import resnet20
from compressor.surgery import prune
from compressor.surgery.graph import example_input
from compressor.surgery.prune import analyse
from compressor.training import finetune
from compressor.training.finetune import _block_gradients, _refreeze

SHAPE = (3, 32, 32)
CFG = PruningConfig(residual="internal")


def started(alpha=1e-3, threshold=0.05, model=None, mode="scratch"):
    torch.manual_seed(0)
    model = model or resnet20()
    layout = analyse(model, example_input(SHAPE), CFG)
    method = SWP(SWPOptions(name="swp", epochs=1, alpha=alpha, threshold=threshold, mode=mode))
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


def test_finetune_mode_starts_from_the_trained_stripe_norms_and_computes_the_same_network():
    reference = resnet20().eval()
    with torch.no_grad():
        reference.layer1[0].conv1.weight[2, :, 0, 0] = 0  # a stripe already zero: pruned from the start
    model, method = started(model=copy.deepcopy(reference), mode="finetune")
    assert method.options.mode == "finetune" and SWPOptions(name="swp").mode == "finetune"  # the default
    conv = model.get_submodule("layer1.0.conv1")
    skeleton = conv.parametrizations.weight[0].skeleton
    norms = reference.layer1[0].conv1.weight.detach().norm(dim=1)
    assert torch.allclose(skeleton, norms / norms.flatten(1).amax(1).view(-1, 1, 1), atol=1e-6)
    assert torch.allclose(skeleton.flatten(1).amax(1), torch.ones(conv.out_channels))
    assert skeleton[2, 0, 0] == 0 and method.stripe_counts(model)["layer1.0.conv1"] == (16 * 9 - 1, 16 * 9)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference(x), atol=1e-5)


def test_rescale_keeps_the_effective_weight_and_each_filters_peak_at_one():
    model, _ = started(mode="finetune")
    conv = model.get_submodule("layer2.0.conv1")
    skeleton = conv.parametrizations.weight[0].skeleton
    with torch.no_grad():
        skeleton.mul_(torch.rand(conv.out_channels, 1, 1) + 0.2)  # as if the L1 pull had shrunk each filter
        skeleton[0] = 0  # a filter with no stripe stays untouched
        before = conv.weight.clone()
    rescale_filters(conv)
    assert torch.allclose(conv.weight, before, atol=1e-6)
    assert torch.allclose(skeleton[1:].abs().flatten(1).amax(1), torch.ones(conv.out_channels - 1))
    assert (skeleton[0] == 0).all()


def test_finetune_mode_prunes_the_weakest_stripes_first_and_keeps_every_filter():
    torch.manual_seed(0)
    images, labels = torch.randn(64, *SHAPE), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    model = resnet20()
    with torch.no_grad():  # a spread of stripe magnitudes, as in a trained network
        for name in skeleton_layers(model):
            weight = model.get_submodule(name).weight
            weight.mul_(torch.rand(weight.shape[0], 1, *weight.shape[2:]) * 0.9 + 0.1)
    model, method = started(alpha=1.0, threshold=0.05, model=model, mode="finetune")
    start = {name: s.detach().clone() for name, s in method.skeletons(model).items()}
    cfg = FinetuneConfig(epochs=2, lr=0.05, schedule="constant", momentum=0.0, weight_decay=0.0)
    finetune(model, loader, loader, cfg, torch.device("cpu"), hooks=method, keep_best=False)
    ends = {name: s.detach().clone() for name, s in method.skeletons(model).items()}
    method.finish(model)
    sparsity = method.details["stripe_sparsity"]
    assert 0.05 < sparsity < 1 - 1 / 9  # progressive: some stripes, never whole filters
    assert not method.details["filters_without_stripes"]
    weak, strong = [], []
    for name, initial in start.items():
        pruned = ends[name] == 0
        assert (ends[name].abs().flatten(1).amax(1) == 1).all()  # each filter keeps its peak
        weak.append(initial[pruned])
        strong.append(initial[~pruned])
    assert torch.cat(weak).mean() < torch.cat(strong).mean() - 0.2  # the trained magnitudes lead


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


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_skeleton_training_resumes_from_its_epoch_checkpoint_exactly(tmp_path):
    from compressor.training import LoopOptions

    def train(folder, stop_at=None):
        model, method = started(alpha=0.5, threshold=0.2, mode="finetune")
        if stop_at is not None:
            original = method.end_epoch

            def end_epoch(model_, epoch):
                original(model_, epoch)
                if epoch == stop_at:
                    raise KeyboardInterrupt

            method.end_epoch = end_epoch
        torch.manual_seed(0)
        images, labels = torch.randn(48, *SHAPE), torch.randint(0, 10, (48,))
        loader = DataLoader(TensorDataset(images, labels), batch_size=16)
        cfg = FinetuneConfig(epochs=3, lr=0.05, momentum=0.9)
        options = LoopOptions(checkpoint=folder / "m.pt", seed=2, name="swp training")
        result = finetune(model, loader, loader, cfg, torch.device("cpu"), hooks=method, keep_best=False,
                          options=options)
        method.finish(model)
        return model, method, result.resumed_from

    straight, straight_method, _ = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", stop_at=3)
    resumed, resumed_method, resumed_from = train(tmp_path / "b")
    assert resumed_from == 2
    assert resumed_method.details["history"] == straight_method.details["history"]
    assert resumed_method.details["stripe_sparsity"] == straight_method.details["stripe_sparsity"] > 0
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_fine_tuning_after_swp_keeps_pruned_stripes_at_zero():
    from compressor.methods.base import get_method

    torch.manual_seed(0)
    model = resnet20()
    conv = model.layer1[0].conv1
    with torch.no_grad():
        conv.weight[3, :, 0, 2] = 0  # a pruned stripe
        conv.weight[5] = 0  # a filter with none left (its BN would have been removed with it)
    hooks = get_method("swp").finetune_hooks(model)
    assert get_method("l1").finetune_hooks(model) is None
    images, labels = torch.randn(32, *SHAPE), torch.randint(0, 10, (32,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    cfg = FinetuneConfig(epochs=1, lr=0.1, momentum=0.9, weight_decay=0.01)
    finetune(model, loader, loader, cfg, torch.device("cpu"), hooks=hooks)
    assert (conv.weight[3, :, 0, 2] == 0).all() and (conv.weight[5] == 0).all()
    assert (conv.weight[3, :, 1, 1] != 0).all()  # the rest trains
