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
from compressor.methods import CalibrationContext, build_method
from compressor.methods.stripe_fit import _statistics, allocate, fit_stripes, greedy_stripes, reconstruct

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
    gram, cross, target_sq, rows = _statistics(noisy, original, "0", batches(), torch.device("cpu"), 0)
    assert torch.equal(greedy_stripes(gram, cross, target_sq, 4, (3, 3), int((~keep).sum())), keep)  # found
    fitted = fit_stripes(gram, cross, keep, 4)
    assert rows == 4 * 8 * 100  # every position of a 10x10 output is sampled (fewer than POSITIONS)
    assert (fitted.float() - truth).abs().max() < 1e-4
    assert (fitted[~keep.unsqueeze(1).expand_as(fitted)] == 0).all()


def test_the_fit_beats_plain_removal_on_the_calibration_sample():
    torch.manual_seed(1)
    weight = torch.randn(6, 4, 3, 3)
    model, original = one_conv_net(weight), one_conv_net(weight)
    report = reconstruct(model, original, ["0"], 0.6, batches(), torch.device("cpu"))["0"]
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


def test_sparsity_goes_with_mode_reconstruct():
    with pytest.raises(ValueError, match="method.sparsity goes with method.mode: reconstruct"):
        SWPOptions(name="swp", mode="reconstruct")
    with pytest.raises(ValueError, match="method.sparsity goes with"):
        SWPOptions(name="swp", sparsity=0.5)


def test_a_global_budget_takes_the_stripes_that_carry_nothing_first():
    torch.manual_seed(0)
    a, b = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.Conv2d(6, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        dead = torch.rand(6, 3, 3) < 0.5
        dead[:, 1, 1] = False
        a.weight.mul_(~dead.unsqueeze(1))  # layer a: these stripes are zero, layer b: every stripe works
    model = nn.Sequential(a, nn.ReLU(), b)
    budget = int(dead.sum()) / (2 * 54)
    drops = allocate(model, ["0", "2"], budget, batches(), torch.device("cpu"))
    assert drops == {"0": int(dead.sum()), "2": 0}
