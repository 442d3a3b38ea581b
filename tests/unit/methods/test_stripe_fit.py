"""SWP mode reconstruct (``methods/stripe_fit.py``): stripe choice, the per-filter least-squares fit, the layer-by-
layer reconstruction on a network, and the stripe graph of the result."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from compressor.config.methods import SWPOptions
from compressor.errors import SurgeryError
from compressor.methods import CalibrationContext, build_method
from compressor.methods.stripe_budget import Budget, LayerCost, allocate, drops_for, layer_costs, reduction_pct
from compressor.methods.stripe_fit import _statistics, fit_stripes, greedy_stripes, reconstruct
from compressor.profiling.macs import count_onnx, count_torch

from ..export.nets import randomize_bn
from ..export.test_stripe import ConvNet, run_ort


def one_conv_net(weight: torch.Tensor) -> nn.Module:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return nn.Sequential(conv)


def batches(n=4, c=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = [(torch.randn(8, c, 10, 10, generator=gen), torch.zeros(8, dtype=torch.long)) for _ in range(n)]
    return lambda: iter(data)


def test_the_fit_recovers_a_layer_exactly_when_the_pruned_stripes_carried_nothing():
    torch.manual_seed(0)
    truth = torch.randn(6, 4, 3, 3)
    keep = torch.rand(6, 3, 3) < 0.5
    keep[:, 1, 1] = True
    truth = truth * keep.unsqueeze(1)  # the stripes to prune are zero already: they carry nothing
    original = one_conv_net(truth)
    noisy = one_conv_net(truth + 0.3 * torch.randn_like(truth))  # what the fit starts from does not matter
    stats = _statistics(noisy, original, "0", batches(), torch.device("cpu"), 0)
    assert stats.shift is None and stats.weight is None and not stats.addend  # no bias, no BatchNorm, no addition
    assert torch.equal(greedy_stripes(stats.gram, stats.cross, stats.energy, 4, (3, 3), int((~keep).sum())), keep)
    fitted = fit_stripes(stats.gram, stats.cross, keep, 4)
    assert stats.rows == 4 * 8 * 100  # every position of a 10x10 output is sampled (fewer than POSITIONS)
    assert (fitted.float() - truth).abs().max() < 1e-4
    assert (fitted[~keep.unsqueeze(1).expand_as(fitted)] == 0).all()


class Block(nn.Module):
    """``bn(conv(x)) + shortcut(x)``: a residual block's last conv, written the way users write it."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.shortcut = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.inplace = inplace

    def forward(self, x):
        out = self.bn(self.conv(x))
        if self.inplace:
            out += self.shortcut(x)
            return out
        return self.shortcut(x) + out


def _sparse_block(inplace: bool = True) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    block = randomize_bn(Block(inplace)).eval()
    keep = torch.rand(6, 3, 3) < 0.5
    keep[:, 1, 1] = True
    with torch.no_grad():
        block.conv.weight.mul_(keep.unsqueeze(1))  # the stripes to prune carry nothing
    return block, keep


@pytest.mark.parametrize("inplace", [True, False])
def test_a_conv_feeding_an_addition_through_batchnorm_makes_up_for_the_other_addends_error(inplace):
    original, keep = _sparse_block(inplace)
    model = copy.deepcopy(original)
    delta = torch.randn(6, 4, 3, 3) * keep.unsqueeze(1)  # an error in the other addend the conv's stripes can express
    with torch.no_grad():
        model.shortcut.weight.sub_(delta)
    stats = _statistics(model, original, "conv", batches(), torch.device("cpu"), 0)
    assert stats.addend and stats.weight is not None and stats.shift[0] == -1  # the constant: into the running mean
    report = reconstruct(model, original, ["conv"], Budget(share="layer", sparsity=float((~keep).sum()) / keep.numel()),
                         batches(), torch.device("cpu"))["conv"]
    assert report["addend_matched"] and report["stripes"] == int(keep.sum())
    x = next(batches()())[0]
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max() < 1e-4  # the sum is the original's, not each addend alone
        sigma_over_gamma = (original.bn.running_var + original.bn.eps).sqrt() / original.bn.weight
        expected = original.conv.weight + delta * sigma_over_gamma.view(-1, 1, 1, 1)
        assert (model.conv.weight - expected).abs().max() < 1e-3


def test_the_fitted_constant_goes_into_the_batchnorms_running_mean():
    torch.manual_seed(4)
    first, conv = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 6, 3, padding=0, bias=False)
    original = randomize_bn(nn.Sequential(first, conv, nn.BatchNorm2d(6), nn.ReLU())).eval()
    model = copy.deepcopy(original)
    with torch.no_grad():
        model[0].bias.add_(torch.randn(4))  # the conv's input is shifted by a constant per channel
    before = model[2].running_mean.clone()
    report = reconstruct(model, original, ["1"], Budget(share="layer", sparsity=0.0), batches(), torch.device("cpu"))
    assert not report["1"]["addend_matched"] and report["1"]["error_refit"] < 1e-8
    x = next(batches()())[0]
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max() < 1e-4  # exact only with the constant (padding 0: W x + c)
        assert (model[1].weight - original[1].weight).abs().max() < 1e-3
    assert not torch.allclose(model[2].running_mean, before)


def test_an_output_going_anywhere_else_is_matched_alone():
    relu_after = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
    stats = _statistics(relu_after, relu_after, "0", batches(), torch.device("cpu"), 0)
    assert not stats.addend and stats.weight is None and stats.shift[0] == 1  # the constant: into the conv's bias


def test_the_fit_beats_plain_removal_on_the_calibration_sample():
    torch.manual_seed(1)
    weight = torch.randn(6, 4, 3, 3)
    model, original = one_conv_net(weight), one_conv_net(weight)
    report = reconstruct(model, original, ["0"], Budget(sparsity=0.6), batches(), torch.device("cpu"))["0"]
    assert report["stripes"] == 54 - round(0.6 * 54)
    assert report["error_refit"] < report["error_pruned"]
    alive = model[0].weight.detach().abs().sum(1) != 0
    assert int(alive.sum()) == report["stripes"]


@pytest.fixture(scope="module")
def reconstructed():
    torch.manual_seed(0)
    model = randomize_bn(ConvNet()).eval()
    original = ConvNet().eval()
    original.load_state_dict(model.state_dict())
    method = build_method(SWPOptions(name="swp", mode="reconstruct", sparsity=0.7))
    data = [(torch.randn(16, 3, 16, 16), torch.zeros(16, dtype=torch.long)) for _ in range(4)]
    method.calibrate(model, [], CalibrationContext(batches=lambda: iter(data), device=torch.device("cpu"),
                                                   num_images=64))
    return model, original, method


def test_reconstruct_mode_prunes_every_kxk_conv_and_keeps_the_network_close(reconstructed):
    model, original, method = reconstructed
    details = method.details
    assert details["mode"] == "reconstruct" and abs(details["stripe_sparsity"] - 0.7) < 0.02
    for name in method.layers:
        row = details["layers"][name]
        assert row["error_refit"] <= row["error_pruned"] + 1e-9, (name, row)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        fitted = (model(x) - original(x)).norm() / original(x).norm()
        zeroed = copy.deepcopy(original)
        for name in method.layers:  # the same stripes removed, nothing re-fitted
            keep = model.get_submodule(name).weight.abs().sum(1, keepdim=True) != 0
            zeroed.get_submodule(name).weight.mul_(keep)
        plain = (zeroed(x) - original(x)).norm() / original(x).norm()
    assert fitted < plain
    assert not method.options.trains and method.needs_calibration


@pytest.mark.slow  # an ONNX export and the stripe rewrite: seconds
def test_stripe_graph_of_a_reconstructed_network_matches_its_dense_slim_export(reconstructed, tmp_path):
    from compressor.export import export_onnx
    from compressor.export.hybrid import export_stripe

    model, _, _ = reconstructed
    path = tmp_path / "model.onnx"
    export_onnx(model, torch.randn(1, 3, 16, 16), path)
    result = export_stripe(path, tmp_path / "model.stripe.onnx", batch=2, threads=1, form="stripe")
    assert any(c.form == "stripe" for c in result.choices)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    stripe = onnx.load(str(tmp_path / "model.stripe.onnx"))
    assert np.abs(run_ort(onnx.load(str(path)), x) - run_ort(stripe, x)).max() < 1e-4


def test_layers_the_recipe_ignores_keep_every_stripe():
    torch.manual_seed(0)
    model = randomize_bn(ConvNet()).eval()
    before = model.conv3.weight.detach().clone()
    data = [(torch.randn(8, 3, 16, 16), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    method = build_method(SWPOptions(name="swp", mode="reconstruct", sparsity=0.5))
    method.calibrate(model, [], CalibrationContext(batches=lambda: iter(data), device=torch.device("cpu"),
                                                   num_images=16, skip_layers=frozenset({"conv3"})))
    assert "conv3" not in method.details["layers"] and torch.equal(model.conv3.weight, before)
    assert abs(method.details["stripe_sparsity"] - 0.5) < 0.02  # of the layers it pruned


def test_sparsity_goes_with_mode_reconstruct():
    with pytest.raises(ValueError, match="method.sparsity goes with method.mode: reconstruct"):
        SWPOptions(name="swp", sparsity=0.5)
    assert SWPOptions(name="swp", mode="reconstruct").sparsity is None  # the budget may be pruning.macs_reduction_pct


def two_convs() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3))


def test_layer_costs_are_the_stripe_graphs_matmuls_or_the_dense_conv():
    costs = layer_costs(two_convs(), ["0", "2"], torch.randn(1, 4, 10, 10))
    assert costs["0"] == LayerCost(stripes=54, most=48, dense=6 * 4 * 9 * 100, per_stripe=(4 + 6) * 100)
    assert costs["2"] == LayerCost(stripes=72, most=64, dense=8 * 6 * 9 * 25, per_stripe=(6 + 8) * 100)  # stride 2
    assert costs["0"].macs(0) == costs["0"].dense and costs["0"].macs(48) == 6 * 1000  # dense until it pays


@pytest.mark.parametrize("share", ["global", "layer"])
def test_a_macs_budget_is_met_on_the_stripe_graph(share):
    model = two_convs()
    network = count_torch(model, (4, 10, 10)).macs
    budget = Budget(share=share, macs_pct=20, network_macs=network)
    drops = drops_for(model, ["0", "2"], budget, batches(), torch.device("cpu"), 0)
    costs = layer_costs(model, ["0", "2"], torch.randn(1, 4, 10, 10))
    achieved = reduction_pct(costs, drops, network)
    assert 20 <= achieved < 20 + 100 * costs["0"].per_stripe / network + 1e-9  # met, by at most one stripe more
    one_less = {**drops, "0": drops["0"] - 1}
    assert reduction_pct(costs, one_less, network) < 20  # and not by removing more than needed


def test_a_macs_target_the_stripes_cannot_reach_is_refused_naming_the_field():
    model = two_convs()
    budget = Budget(macs_pct=60, network_macs=count_torch(model, (4, 10, 10)).macs)
    with pytest.raises(SurgeryError, match=r"pruning.macs_reduction_pct: 60 is more than SWP can remove: .* at most "
                                           r"\d+\.\d% of the network's MACs"):
        drops_for(model, ["0", "2"], budget, batches(), torch.device("cpu"), 0)


@pytest.mark.slow  # an ONNX export and the stripe rewrite: seconds
def test_the_macs_target_holds_on_the_exported_stripe_graph(tmp_path):
    from compressor.export import export_onnx
    from compressor.export.hybrid import export_stripe

    model = randomize_bn(ConvNet()).eval()
    network = count_torch(model, (3, 16, 16)).macs
    data = [(torch.randn(16, 3, 16, 16), torch.zeros(16, dtype=torch.long)) for _ in range(2)]
    method = build_method(SWPOptions(name="swp", mode="reconstruct"))
    method.calibrate(model, [], CalibrationContext(batches=lambda: iter(data), device=torch.device("cpu"),
                                                   num_images=32, macs_reduction_pct=30, network_macs=network))
    export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "model.onnx")
    export_stripe(tmp_path / "model.onnx", tmp_path / "model.stripe.onnx", batch=2, threads=1, form="stripe")
    stripe_graph = count_onnx(tmp_path / "model.stripe.onnx").macs  # every pruned KxK conv as stripes
    dense = count_onnx(tmp_path / "model.onnx").macs
    costs = layer_costs(model, method.layers, data[0][0])
    kept = {name: row["stripes"] for name, row in method.details["layers"].items()}
    drops = {n: c.stripes - kept[n] for n, c in costs.items()}
    assert stripe_graph == dense - sum(c.dense - c.macs(drops[n]) for n, c in costs.items())  # the cost model, exact
    assert all(c.macs(drops[n]) < c.dense for n, c in costs.items() if drops[n])  # no removal that saves nothing
    assert method.details["macs_reduction_pct_stripe_graph"] >= 30 and method.details["macs_target_pct"] == 30


def test_a_global_budget_takes_the_stripes_that_carry_nothing_first():
    torch.manual_seed(0)
    a, b = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.Conv2d(6, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        dead = torch.rand(6, 3, 3) < 0.5
        dead[:, 1, 1] = False
        a.weight.mul_(~dead.unsqueeze(1))  # layer a: these stripes are zero, layer b: every stripe works
    model = nn.Sequential(a, nn.ReLU(), b)
    drops = allocate(model, ["0", "2"], int(dead.sum()), batches(), torch.device("cpu"))
    assert drops == {"0": int(dead.sum()), "2": 0}
