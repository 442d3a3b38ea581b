"""pruning.latency_target's search on a fake backend whose latency is a known function of the widths.

The fake backend times a layer as its multiply-adds with both channel counts padded up to a multiple of 8
(blocked kernels: widths 9..16 cost what 16 costs), and the whole graph as a fixed overhead (half the layers'
time) plus 1.3x the sum of the layers (isolated times that do not add up to the graph's). The search must find
fast widths, correct the model with the whole-graph measurements until the speedup is within the tolerance, and stop with the best
reachable speedup when the target is out of reach.
"""

from __future__ import annotations

import math

import pytest
import torch

from compressor.config import LatencyTarget, PruningConfig
from compressor.errors import SurgeryError
from compressor.models.cifar_resnet import resnet20
from compressor.profiling.layer_latency import BlockSpec, LayerSpec, out_hw
from compressor.surgery.latency_model import LatencyModel
from compressor.surgery.latency_search import Goal, plan_for_latency, search
from compressor.surgery.plan import Rounding, spread_channels
from compressor.surgery.prune import analyse

OVERHEAD = 0.5  # the whole graph's fixed part, as a share of the layers' time at full width
PAD = 8


def padded(c: int) -> int:
    return PAD * math.ceil(c / PAD)


def layer_ms(spec: LayerSpec) -> float:
    hw = math.prod(out_hw(spec))
    own = padded(spec.cin) * padded(spec.cout) * math.prod(spec.kernel) * hw / spec.groups / 2e6
    return own + (padded(spec.fed_from) * padded(spec.cin) * math.prod(spec.in_hw) / 2e6 if spec.fed_from else 0.0)


def fake_time(specs) -> dict[str, float]:
    out = {}
    for spec in specs:
        if isinstance(spec, BlockSpec):
            out[spec.key] = sum(layer_ms(s) for s in (*spec.stem, *spec.heads))
        else:
            out[spec.key] = layer_ms(spec)
    return out


class FakeOracle:
    """Whole graph = overhead + 1.3 x the layers' fake times at the widths the removed channels leave."""

    backend, batch = "fake", 32

    def __init__(self, layout):
        self.layout = layout
        self.exact = layout.exact
        self.measured = 0
        self.overhead = 0.0
        self.overhead = OVERHEAD * self._graph({})
        self.baseline_ms = self._graph({})

    def layer_ms(self, specs):
        return fake_time(specs)

    def speedup(self, chosen):
        self.measured += 1
        kept = {p.info.key: p.info.channels - len(chosen.get(p.info.key, [])) for p in self.layout.plans}
        return self.baseline_ms / self._graph(kept)

    def describe(self):
        return {}

    def _graph(self, kept):
        total = 0.0
        channels = self.exact.channels
        for layer in self.exact.layers.values():
            cut = lambda cuts: sum(m * (channels[k] - kept[k]) for k, m in cuts if k in kept)  # noqa: E731
            spec = LayerSpec.of(layer).at(int(layer.cin - cut(layer.in_cuts)), int(layer.cout - cut(layer.out_cuts)))
            total += layer_ms(spec)
        return self.overhead + 1.3 * total


def setup(residual: str = "internal"):
    model = resnet20(shortcut="A").eval()
    cfg = PruningConfig(residual=residual, ratio=0.1)
    layout = analyse(model, torch.randn(1, 3, 32, 32), cfg)
    rounding = Rounding.of(cfg)
    model_ = LatencyModel.of_plans(layout.exact, layout.plans, rounding, fake_time)
    value = {p.info.key: ([1.0] * p.info.channels, 1.0) for p in layout.plans}
    select = lambda kept: {p.info.key: spread_channels(p.info, kept[p.info.key])  # noqa: E731
                           for p in layout.plans if kept[p.info.key] < p.info.channels}
    return layout, model_, rounding, value, select


def goal(**kw) -> Goal:
    return Goal.of(LatencyTarget(**{"speedup": 1.5, **kw}))


@pytest.mark.parametrize("allocation,pad", [("knapsack", 8), ("uniform", 1)])
def test_the_loop_corrects_the_model_until_the_measured_speedup_is_within_tolerance(allocation, pad, monkeypatch):
    monkeypatch.setitem(globals(), "PAD", pad)  # one uniform ratio moves every group across a block of 8 at once
    layout, model, rounding, value, select = setup()
    oracle = FakeOracle(layout)
    found = plan_for_latency(layout.plans, model, rounding, value, oracle, goal(allocation=allocation), select)
    assert 1.5 <= found.speedup <= 1.5 * 1.05  # aimed at target + half the tolerance: the gate's noise margin
    assert 1 < len(found.trials) <= 8  # the model alone is off (overhead, 1.3x): at least one correction
    aim = 1.5 * 1.025
    assert aim <= found.trials[0]["predicted_speedup"] <= aim * 1.04  # round 1: the model's own answer, rounded up
    assert oracle.measured == len(found.trials)


def test_knapsack_widths_are_the_measured_fast_ones():
    layout, model, rounding, value, select = setup()
    found = plan_for_latency(layout.plans, model, rounding, value, FakeOracle(layout), goal(), select)
    assert all(w % 8 == 0 for w in found.kept.values())  # 9..15 cost what 16 costs: never chosen
    assert any(w < layout.plans[i].info.channels for i, w in enumerate(found.kept.values()))


def test_an_ms_target_is_the_baseline_over_the_milliseconds():
    layout, model, rounding, value, select = setup()
    oracle = FakeOracle(layout)
    found = plan_for_latency(layout.plans, model, rounding, value, oracle,
                             Goal.of(LatencyTarget(ms=oracle.baseline_ms / 1.8)), select)
    assert found.target == pytest.approx(1.8)
    assert found.speedup == pytest.approx(1.8, rel=0.05)


def test_an_unreachable_target_names_the_best_reachable_speedup():
    layout, model, rounding, value, select = setup()
    oracle = FakeOracle(layout)
    with pytest.raises(SurgeryError) as err:
        plan_for_latency(layout.plans, model, rounding, value, oracle, goal(speedup=40.0), select)
    message = str(err.value)
    assert "pruning.latency_target" in message and "out of reach" in message
    deepest = oracle.speedup(select({p.info.key: model.curves[p.info.key].widths[0] for p in layout.plans}))
    assert f"{deepest:.2f}x" in message  # the deepest plan, as measured


def test_search_stops_when_the_plans_are_coarser_than_the_tolerance():
    plans = [{"g": 16}, {"g": 8}]  # only two plans: 1.2x and 2.4x, the target 1.6x in between
    speed = {16: 1.2, 8: 2.4}
    calls = []

    def allocate(fraction):
        return plans[0] if fraction < 0.5 else plans[1]

    def measure(kept, fraction):
        calls.append(kept["g"])
        return speed[kept["g"]]

    kept, speedup = search(allocate, measure, 1.6, goal(speedup=1.6), deepest=0.9)
    assert sorted(calls) == [8, 16]  # each plan measured once, then it stops
    assert kept == {"g": 16} and speedup == 1.2  # the closest (|1.2/1.6 - 1| < |2.4/1.6 - 1|)


def test_a_target_not_reached_in_the_rounds_stops_and_says_raise_rounds():
    layout, model, rounding, value, select = setup()
    with pytest.raises(SurgeryError, match=r"not reached in 1 whole-graph rounds .* raise pruning.latency_target.rounds"):
        plan_for_latency(layout.plans, model, rounding, value, FakeOracle(layout), goal(speedup=2.0, rounds=1), select)
