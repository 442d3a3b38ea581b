"""The MACs-target search: within 1 point whenever some plan is, refusing honestly otherwise."""

from __future__ import annotations

import itertools

import pytest
import torch

from compressor.config import PruningConfig
from compressor.errors import SurgeryError
from compressor.models.cifar_resnet import quicknet, resnet20
from compressor.surgery.plan import Rounding
from compressor.surgery.prune import analyse, plan_counts
from compressor.surgery.search import TOLERANCE_PCT

SHAPE = (3, 32, 32)


def layout_of(model, cfg):
    return analyse(model.eval(), torch.randn(1, *SHAPE), cfg)


@pytest.mark.parametrize("target", [20, 35, 50])
def test_coarse_rounding_still_reaches_the_target(target):
    """quicknet with round_to 8: the uniform ratio jumps over 35% (33.7% -> 40.2%); single-group steps land."""
    cfg = PruningConfig(macs_reduction_pct=target, residual="internal", round_to=8)
    layout = layout_of(quicknet(), cfg)
    plan = plan_counts(layout, cfg)
    assert abs(layout.cost.reduction_pct(plan.kept) - target) <= TOLERANCE_PCT
    assert all(plan.kept[k] % 8 == 0 for k in plan.kept)


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_search_succeeds_exactly_when_some_plan_is_within_tolerance():
    """Brute force over every kept-count combination of quicknet's three internal groups."""
    for target in range(10, 80, 3):
        cfg = PruningConfig(macs_reduction_pct=target, residual="internal", round_to=8)
        layout = layout_of(quicknet(), cfg)
        ladders = [Rounding.of(cfg).ladder(p.info) for p in layout.plans]
        keys = [p.info.key for p in layout.plans]
        reachable = any(abs(layout.cost.reduction_pct(dict(zip(keys, combo))) - target) <= TOLERANCE_PCT
                        for combo in itertools.product(*ladders))
        if reachable:
            plan = plan_counts(layout, cfg)
            assert abs(plan.predicted_pct - target) <= TOLERANCE_PCT, target
        else:
            with pytest.raises(SurgeryError):
                plan_counts(layout, cfg)


def test_uniform_ratio_is_used_when_it_lands():
    cfg = PruningConfig(macs_reduction_pct=50, residual="internal")
    layout = layout_of(resnet20(), cfg)
    plan = plan_counts(layout, cfg)
    assert plan.moved == () and abs(plan.predicted_pct - 50) <= TOLERANCE_PCT / 2


@pytest.mark.parametrize("cfg,match", [
    (PruningConfig(macs_reduction_pct=97, residual="internal"), "out of reach.*use residual: coupled"),
    (PruningConfig(macs_reduction_pct=97, residual="coupled", round_to=8), "out of reach.*lower pruning.round_to"),
    (PruningConfig(ratio=0.5, round_to=1000), "removes no channel"),
    (PruningConfig(ratio=0.99, min_channels=1000), "removes no channel"),
])
def test_refusals_say_why(cfg, match):
    with pytest.raises(SurgeryError, match=match):
        plan_counts(layout_of(resnet20(), cfg), cfg)


def test_out_of_reach_under_coupled_does_not_suggest_coupled():
    cfg = PruningConfig(macs_reduction_pct=99, residual="coupled", min_channels=8)
    with pytest.raises(SurgeryError) as info:
        plan_counts(layout_of(resnet20(), cfg), cfg)
    assert "use residual: coupled" not in str(info.value) and "min_channels" in str(info.value)


def test_beam_search_on_a_large_space_reaches_the_target(monkeypatch):
    from compressor.surgery import search

    monkeypatch.setattr(search, "EXHAUSTIVE_LIMIT", 1)  # force the beam search
    cfg = PruningConfig(macs_reduction_pct=35, residual="coupled", round_to=8)
    layout = layout_of(quicknet(), cfg)
    plan = plan_counts(layout, cfg)
    assert abs(plan.predicted_pct - 35) <= TOLERANCE_PCT
