"""A measured latency model of a pruning plan: per prunable group, latency as a function of its kept width.

Where a group's channels flow through one chain (one producer conv, then depthwise convs, then the convs that
read them, at matching resolution: a residual block's inner channels, a VGG layer, an inverted-residual
expansion), the chain is timed as one graph on the target backend over the group's allowed widths
(``profiling.layer_latency.BlockSpec``): the width lives inside the graph, in whatever layout the backend keeps
between layers (onnxruntime CPU pads blocked NCHWc tensors to a channel multiple, so a width costs what its
padded width costs, which single layers do not show; measured here on ResNet-56: uniform widths 11/22/45 ran
no faster than the unpruned 16/32/64, widths 16/16/32 at 1.39x). Other groups (several producers, concat
inputs, flatten) are costed per layer: each touched layer timed alone over the widths the group gives it (an
input side behind a 1x1 "feeder" conv whose time is subtracted, so that the input is made in-graph too).

A curve is not smoothed: a narrower width can be slower (here every width from 17 to 31 of a 32-channel
ResNet-56 block ran slower than 32 itself), which is what :func:`.knapsack.fast_widths` reads; timing noise is
held down where it is measured (interleaved rounds, medians). The model is additive over groups,
``ms(kept) = base + sum_g (curve_g(kept_g) - curve_g(C_g))``; where a layer is cut by two groups (VGG), the sum
overstates the saving, and isolated times do not add up to a graph's anyway: :mod:`.latency_search` allocates
on this model and corrects it with whole-graph measurements.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..profiling.layer_latency import BlockSpec, LayerSpec, out_hw
from .cost import CostModel


@dataclass(frozen=True)
class Curve:
    widths: tuple[int, ...]  # ascending
    ms: tuple[float, ...]  # median milliseconds at each width

    def at(self, width: float) -> float:
        i = bisect.bisect_left(self.widths, width)
        if i < len(self.widths) and self.widths[i] == width:
            return self.ms[i]
        if i == 0:
            return self.ms[0]
        if i == len(self.widths):
            return self.ms[-1]
        (w0, w1), (m0, m1) = self.widths[i - 1:i + 1], self.ms[i - 1:i + 1]
        return m0 + (m1 - m0) * (width - w0) / (w1 - w0)


def grid(ladder: list[int]) -> list[int]:
    """The widths of ``ladder`` a group is timed at: every one up to 16, then multiples of 4 up to 64, of 8 up
    to 256, of 16 beyond, and the full width (a 512-channel VGG layer: 68 graphs, not 512). The backend's fast
    widths are found among them by measuring (:func:`.knapsack.fast_widths`), not assumed."""
    def on_grid(w: int) -> bool:
        return w <= 16 or (w <= 64 and w % 4 == 0) or (w <= 256 and w % 8 == 0) or w % 16 == 0

    return sorted({w for w in ladder if on_grid(w)} | {max(ladder)} | ({min(ladder)} if ladder else set()))


class LatencyModel:
    """``ms(kept)``: predicted milliseconds of the conv/linear layers under a plan (group key -> channels kept)."""

    def __init__(self, cost: CostModel, ladders: dict[str, list[int]], time: Callable[[Iterable], dict]):
        self._cost = cost
        self.specs = {name: LayerSpec.of(layer) for name, layer in cost.layers.items()}
        self.touching: dict[str, list[str]] = {}
        for name, layer in cost.layers.items():
            for key, _ in layer.out_cuts + layer.in_cuts:
                if name not in self.touching.setdefault(key, []):
                    self.touching[key].append(name)
        chains = {key: chain_of(cost, self.specs, self.touching.get(key, []), key) for key in ladders}
        requests = {key: self._requests(key, ladder, chains[key]) for key, ladder in ladders.items()}
        wanted = [*self.specs.values(), *(s for per in requests.values() for specs in per.values() for s in specs)]
        measured = time([*wanted, *(s.feeder() for s in wanted if isinstance(s, LayerSpec) and s.fed_from)])
        self.base_ms = sum(measured[spec.key] for spec in self.specs.values())
        self.blocks = sorted(k for k, chain in chains.items() if chain is not None)
        self.curves = {key: self._curve(key, ladders[key], requests[key], measured) for key in ladders}
        self._full = {key: self.curves[key].at(cost.channels[key]) for key in ladders}

    @classmethod
    def of_plans(cls, cost: CostModel, plans, rounding, time: Callable[[Iterable], dict]) -> LatencyModel:
        """The model a latency-target search uses: every group a plan may scale (not ``fixed``), on the
        :func:`grid` of its allowed widths (``rounding``: ``plan.Rounding``)."""
        return cls(cost, {p.info.key: grid(rounding.ladder(p.info)) for p in plans if not p.fixed}, time)

    def ms(self, kept: dict[str, int]) -> float:
        return self.base_ms + sum(self.curves[k].at(w) - self._full[k] for k, w in kept.items() if k in self.curves)

    def group_ms(self, key: str, width: int) -> float:
        """Milliseconds of what group ``key`` touches when it keeps ``width`` (its chain, or its layers)."""
        return self.curves[key].at(width)

    def _requests(self, key: str, ladder: list[int], chain) -> dict[int, list]:
        """width -> the specs whose times give the group's curve at that width."""
        if chain is not None:
            return {w: [chain(w)] for w in ladder}
        out: dict[int, list] = {}
        for w in ladder:
            out[w] = [self._layer_at(name, key, w) for name in self.touching.get(key, [])]
        return out

    def _layer_at(self, name: str, key: str, width: int) -> LayerSpec:
        """Layer ``name`` with group ``key`` at ``width``, every other group whole."""
        layer, spec, channels = self._cost.layers[name], self.specs[name], self._cost.channels[key]
        cout = layer.cout - sum(m * (channels - width) for k, m in layer.out_cuts if k == key)
        cin = layer.cin - sum(m * (channels - width) for k, m in layer.in_cuts if k == key)
        cin, cout = int(round(cin)), int(round(cout))
        if layer.depthwise:
            return spec.at(cout, cout).fed(spec.cin)
        return spec.at(cin, cout).fed(spec.cin) if cin != layer.cin else spec.at(cin, cout)

    def _curve(self, key: str, ladder: list[int], requests: dict[int, list], measured: dict) -> Curve:
        def charge(spec) -> float:
            if isinstance(spec, LayerSpec) and spec.fed_from:
                return max(measured[spec.key] - measured[spec.feeder().key], 0.0)
            return measured[spec.key]

        raw = [sum(charge(s) for s in requests[w]) for w in ladder]
        floor = 1e-3 * max(max(raw), 1e-9)
        return Curve(tuple(ladder), tuple(max(v, floor) for v in raw))


def chain_of(cost: CostModel, specs: dict[str, LayerSpec], names: list[str], key: str):
    """``width -> BlockSpec`` when group ``key``'s channels flow through one chain: a single conv producing only
    them, depthwise convs, then convs reading only them at the chain's resolution (or an integer max-pool of
    it); None for any other shape of group (costed per layer)."""
    layers = cost.layers
    if any(layers[n].shape.get("kind") != "conv" for n in names):
        return None
    mine = lambda cuts: [m for k, m in cuts if k == key]  # noqa: E731
    producers = [n for n in names if not layers[n].depthwise and mine(layers[n].out_cuts)]
    depthwise = [n for n in names if layers[n].depthwise]
    consumers = [n for n in names if not layers[n].depthwise and mine(layers[n].in_cuts)]
    if len(producers) != 1 or not consumers or set(producers) & set(consumers):
        return None
    channels = cost.channels[key]
    producer = producers[0]
    if layers[producer].out_cuts != [(key, 1.0)] or layers[producer].cout != channels:
        return None
    if any(layers[n].in_cuts != [(key, 1.0)] or layers[n].cin != channels for n in consumers):
        return None
    hw = out_hw(specs[producer])
    for n in depthwise:
        if tuple(specs[n].in_hw) != hw or layers[n].cin != channels:
            return None
        hw = out_hw(specs[n])
    pools = []
    for n in consumers:
        pool = _pool(hw, tuple(specs[n].in_hw))
        if pool is None:
            return None
        pools.append(pool)
    order = list(layers)
    if max(order.index(n) for n in [producer, *depthwise]) > min(order.index(n) for n in consumers):
        return None

    def block(width: int) -> BlockSpec:
        p = specs[producer]
        return BlockSpec(stem=(p.at(p.cin, width), *(specs[n].at(width, width) for n in depthwise)),
                         heads=tuple(specs[n].at(width, specs[n].cout) for n in consumers), pools=tuple(pools))

    return block


def _pool(hw: tuple[int, ...], target: tuple[int, ...]) -> int | None:
    """The max-pool factor taking ``hw`` to ``target`` (1: none), or None when there is no such integer."""
    if hw == target:
        return 1
    if len(hw) != len(target) or any(t <= 0 or h % t for h, t in zip(hw, target)):
        return None
    factors = {h // t for h, t in zip(hw, target)}
    return factors.pop() if len(factors) == 1 else None
