"""PFP: sensitivities against a brute-force loop; the epsilon budget solver against its target."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.config import PruningConfig
from compressor.config.methods import PFPOptions
from compressor.methods import CalibrationContext
from compressor.methods.pfp import PFP, input_sensitivity
from compressor.methods.pfp_budget import sample_channels
from compressor.models.cifar_resnet import resnet20
from compressor.surgery.graph import example_input
from compressor.surgery.prune import analyse, decide

EPS = torch.finfo(torch.float32).eps


def brute_force(weight: torch.Tensor, x: torch.Tensor, padding: int) -> torch.Tensor:
    """The definition, one contribution at a time (METHODS.md §5.1): s_c = max over x, f, p, (u, v) of
    w a / z, separately on the positive and the negative weights; negative inputs split into a+ and -a-."""
    x = torch.cat([x.clamp(min=0), (-x).clamp(min=0)]) if (x < 0).any() else x
    xp = F.pad(x, (padding,) * 4).double()
    w = weight.double()
    n_out, n_in, k, _ = w.shape
    h_out, w_out = x.shape[2] + 2 * padding - k + 1, x.shape[3] + 2 * padding - k + 1
    best = torch.zeros(n_in, dtype=torch.float64)
    for b, f, i, j in itertools.product(range(x.shape[0]), range(n_out), range(h_out), range(w_out)):
        patch = xp[b, :, i:i + k, j:j + k]
        for part in (w[f].clamp(min=0), w[f].clamp(max=0)):
            contributions = part * patch
            z = contributions.sum()
            if abs(z) <= EPS:
                continue
            best = torch.maximum(best, (contributions / z).flatten(1).max(1).values)
    return best


def test_conv_sensitivity_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    conv.weight.data = torch.randn(4, 3, 3, 3, generator=gen)
    x = torch.randn(2, 3, 5, 5, generator=gen)  # mixed signs: exercises the a+ / -a- split
    assert torch.allclose(input_sensitivity(conv, x).double(), brute_force(conv.weight, x, 1), rtol=1e-4)


def test_post_relu_input_and_linear_layer():
    gen = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=0, bias=True)
    x = torch.rand(3, 2, 6, 6, generator=gen)  # non-negative: no split
    assert torch.allclose(input_sensitivity(conv, x).double(), brute_force(conv.weight, x, 0), rtol=1e-4)
    linear = nn.Linear(5, 4)
    v = torch.rand(6, 5, generator=gen)
    as_conv = linear.weight.detach().view(4, 5, 1, 1)
    assert torch.allclose(input_sensitivity(linear, v).double(), brute_force(as_conv, v.view(6, 5, 1, 1), 0), rtol=1e-4)


def calibrated(cfg: PruningConfig, variant: str = "deterministic"):
    torch.manual_seed(0)
    model = resnet20().eval()
    images = torch.randn(16, 3, 32, 32)
    ctx = CalibrationContext(batches=lambda: [(images[:8], None), (images[8:], None)], device=torch.device("cpu"),
                             num_images=16)
    method = PFP(PFPOptions(name="pfp", variant=variant))
    return model, method, ctx


@pytest.mark.parametrize("cfg", [PruningConfig(params_reduction_pct=40, residual="internal"),
                                 PruningConfig(macs_reduction_pct=50, residual="internal"),
                                 PruningConfig(params_reduction_pct=30, residual="coupled")])
@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_epsilon_budget_lands_within_half_a_percent(cfg):
    model, method, ctx = calibrated(cfg)
    decision = decide(model, (3, 32, 32), method, cfg, ctx)
    details = method.details
    assert abs(details["budget_error_pct"]) <= 0.5
    assert details["adjusted_by_rounding_search"] is False  # the epsilon allocation itself met the budget
    metric = "params" if cfg.params_reduction_pct else "macs"
    kept = {p.info.key: p.info.channels - len(decision.chosen.get(p.info.key, [])) for p in decision.layout.plans}
    cost = decision.layout.cost
    achieved = cost.params(kept) if metric == "params" else cost.macs(kept)
    assert achieved == details["allocated"]
    kept_sizes = sorted(set(kept.values()))
    assert len(kept_sizes) > 2  # the allocation is not uniform: it follows the sensitivities


def test_sampling_draws_exactly_the_allocated_count():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    for keep in (1, 2, 4, 5):
        kept, weight = sample_channels(probs, keep=keep, seed=0, key="g")
        assert len(kept) == keep and torch.all(weight > 0)
    kept, weight = sample_channels(probs, keep=5, seed=0, key="g")
    assert weight[kept.tolist().index(4)] == 1.0  # never drawable: kept as it is, not re-weighted


def test_sampling_ends_when_a_channel_is_almost_never_drawn():
    probs = torch.tensor([1.0, 1.0, 1.0, 1e-30])
    kept, weight = sample_channels(probs, keep=4, seed=0, key="g")
    assert kept.tolist() == [0, 1, 2, 3] and weight[3] == 1.0


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_sampling_variant_keeps_the_plan_and_reweights_kept_channels():
    cfg = PruningConfig(macs_reduction_pct=50, residual="internal", round_to=8)
    model, method, ctx = calibrated(cfg, variant="sampling")
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    decision = decide(model, (3, 32, 32), method, cfg, ctx)
    kept = {p.info.key: p.info.channels - len(decision.chosen.get(p.info.key, [])) for p in decision.layout.plans}
    assert all(k % 8 == 0 for k in kept.values())  # the rounding holds: exactly the allocated count is drawn
    assert abs(decision.layout.cost.reduction_pct(kept) - 50) <= 1.0
    method.before_removal(model, decision.chosen)
    key = next(iter(decision.chosen))
    kept_idx, factors = method._weights[key]
    for layer in method._groups[key].consumer_slots:
        after = model.get_submodule(layer).weight.detach()
        expected = original[f"{layer}.weight"][:, kept_idx] * factors.view(1, -1, 1, 1).float()
        assert torch.allclose(after[:, kept_idx], expected, rtol=1e-5)


def test_sample_size_follows_the_formula():
    model, method, ctx = calibrated(PruningConfig(ratio=0.5))
    layout = analyse(model, example_input((3, 32, 32)), PruningConfig(ratio=0.5))
    method.calibrate(model, [i for i, _ in layout.groups], ctx)
    assert method.sample_size == 16  # the formula asks ~180 for this network; capped by the 16 calibration images


def test_allocation_terms_match_hand_computation():
    """alpha = 2 c ln(8 (P+1) kappa / delta); m(eps) = ceil(3 (6 + 2 eps) alpha S / eps^2);
    unique = sum_c 1 - (1 - p_c)^m."""
    import math
    from types import SimpleNamespace

    from compressor.methods.pfp_budget import _terms, _unique

    scores = torch.tensor([0.5, 0.3, 0.2, 0.0])
    method = SimpleNamespace(score=lambda info, group: scores, geometry={"conv": (64, 9)})
    info = SimpleNamespace(consumer_slots={"conv": None}, channels=4, slices=1)
    terms = _terms(method, info)
    alpha = 2 * 3 * math.log(8 * 65 * 9 / 1e-16)
    assert terms["coeff"] == pytest.approx(alpha * 1.0)
    eps = 40.0
    m = math.ceil(3 * (6 + 2 * eps) * alpha / eps**2)
    expected = sum(1 - (1 - p) ** m for p in [0.5, 0.3, 0.2, 0.0])
    assert _unique(terms, eps) == pytest.approx(expected)
