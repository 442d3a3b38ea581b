"""How many stripes each layer loses in SWP ``mode: reconstruct``: a budget in stripes or in MACs of the stripe graph.

- ``method.sparsity``, a share of all KxK stripes: ``budget: layer`` removes it from every layer alike;
  ``global`` shares it out by reconstruction cost: every layer's removal order (``stripe_fit.removal_order``)
  measured on the unpruned network, then the cheapest removals over all layers, so that a layer whose stripes
  carry more of its output keeps more.
- ``pruning.macs_reduction_pct``, counted as the stripe graph executes (``export/stripe.py``): a KxK conv with S
  surviving stripes costs ``S x (C_in + N) x H_in x W_in`` per image (the MatMul of the stripes at input
  resolution, and the one that adds each filter's stripes up), or its dense ``N x C_in x K x K x H_out x W_out``
  when that is fewer, since such a layer is better left dense (for C_in = N, 3x3, stride 1 the stripes
  are fewer MACs only above 50% sparsity; at stride 2, above 87.5%). The network's MACs are the unpruned
  network's outside those convs plus each conv's count. ``layer``: the smallest common sparsity that meets the
  target; ``global``: per layer the number of removals that minimises its reconstruction cost plus
  lambda x its MACs, lambda bisected until the network meets the target (a Lagrangian relaxation, since a
  layer's MACs do not fall with its first removals, only past its break-even, a greedy by cost per MAC saved
  would never start on it), then the costliest removals given back while the target still holds.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..errors import SurgeryError
from .stripe_fit import _statistics, removal_order


@dataclass(frozen=True)
class Budget:
    """``sparsity`` (a share of all stripes) or ``macs_pct`` (percent of ``network_macs``, the unpruned network's
    MACs per image), shared out over the layers by reconstruction cost (``share: global``) or alike (``layer``)."""

    share: str = "global"
    sparsity: float | None = None
    macs_pct: float | None = None
    network_macs: int | None = None


@dataclass(frozen=True)
class LayerCost:
    """One KxK conv on the stripe graph: its stripes, how many may go (every filter keeps one), its dense MACs
    and the MACs of one stripe, per image."""

    stripes: int
    most: int
    dense: int
    per_stripe: int

    def macs(self, drops: int) -> int:
        """MACs with ``drops`` stripes removed, in the cheaper of the two forms."""
        return min(self.dense, (self.stripes - drops) * self.per_stripe)


@torch.no_grad()
def layer_costs(model: nn.Module, layers: list[str], images: torch.Tensor) -> dict[str, LayerCost]:
    """:class:`LayerCost` of every layer, with the input and output sizes seen on one of ``images``."""
    sizes, handles = {}, []
    for name in layers:
        def record(module, inputs, output, name=name):
            sizes[name] = (inputs[0].shape[2] * inputs[0].shape[3], output.shape[2] * output.shape[3])
        handles.append(model.get_submodule(name).register_forward_hook(record))
    try:
        model.eval()(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    costs = {}
    for name in layers:
        conv = model.get_submodule(name)
        n, c, positions = conv.out_channels, conv.in_channels, conv.kernel_size[0] * conv.kernel_size[1]
        inputs, outputs = sizes[name]
        costs[name] = LayerCost(stripes=n * positions, most=n * (positions - 1), dense=n * c * positions * outputs,
                                per_stripe=(c + n) * inputs)
    return costs


def drops_for(model: nn.Module, layers: list[str], budget: Budget, batches, device, seed: int) -> dict[str, int]:
    """Stripes removed per layer for ``budget``; a MACs target the stripes cannot reach is refused naming the field."""
    costs = layer_costs(model, layers, next(iter(batches()))[0].to(device))
    if budget.sparsity is not None:
        if budget.share == "layer":
            return {n: min(round(budget.sparsity * c.stripes), c.most) for n, c in costs.items()}
        target = round(budget.sparsity * sum(c.stripes for c in costs.values()))
        return allocate(model, layers, target, batches, device, seed)
    limit = _kxk_limit(costs, budget)
    if budget.share == "layer":
        return _common_sparsity(costs, limit)
    curves = {name: np.concatenate([[0.0], np.cumsum(_order(model, name, costs[name].most, batches, device, seed))])
              for name in layers}
    return _lagrangian(costs, curves, limit)


def reduction_pct(costs: dict[str, LayerCost], drops: dict[str, int], network_macs: int) -> float:
    """The network's MACs reduction on the stripe graph (each KxK conv in its cheaper form), in percent."""
    kxk = sum(c.macs(drops[name]) - c.dense for name, c in costs.items())
    return -100.0 * kxk / network_macs


def allocate(model: nn.Module, layers: list[str], target: int, batches, device, seed: int = 0) -> dict[str, int]:
    """Stripes each layer drops for a global budget of ``target`` stripes: the cheapest removals over all layers,
    each layer's in its own order."""
    total = sum(_stripes(model.get_submodule(name)) for name in layers)
    share = min(0.95, target / max(1, total) + 0.3)
    orders = {name: _order(model, name, int(round(share * _stripes(model.get_submodule(name)))), batches, device, seed)
              for name in layers}
    drops = dict.fromkeys(layers, 0)
    heap = [(order[0], name) for name, order in orders.items() if len(order)]
    heapq.heapify(heap)
    for _ in range(target):
        if not heap:
            break
        _, name = heapq.heappop(heap)
        drops[name] += 1
        if drops[name] < len(orders[name]):
            heapq.heappush(heap, (orders[name][drops[name]], name))
    return drops


def _order(model: nn.Module, name: str, limit: int, batches, device, seed: int) -> np.ndarray:
    """The costs of the layer's first ``limit`` removals, in order, on the unpruned network's statistics."""
    conv = model.get_submodule(name)
    stats = _statistics(model, model, name, batches, device, seed)  # relative errors: layers compare
    return np.array([cost for _, _, cost in removal_order(stats.gram, stats.cross, stats.target_sq, conv.in_channels,
                                                          conv.kernel_size, limit)])


def _kxk_limit(costs: dict[str, LayerCost], budget: Budget) -> float:
    """The MACs the KxK convs may keep for the target; refused when even the most removal cannot get there."""
    others = budget.network_macs - sum(c.dense for c in costs.values())
    limit = (1 - budget.macs_pct / 100) * budget.network_macs - others
    least = sum(c.macs(c.most) for c in costs.values())
    if least > limit:
        best = 100 * (1 - (others + least) / budget.network_macs)
        raise SurgeryError(f"pruning.macs_reduction_pct: {budget.macs_pct:g} is more than SWP can remove: with every "
                           f"filter keeping one stripe the stripe graph saves at most {best:.1f}% of the network's "
                           "MACs; lower the target")
    return limit


def _common_sparsity(costs: dict[str, LayerCost], limit: float) -> dict[str, int]:
    """The smallest share of every layer's stripes (bisected) whose removal meets ``limit``."""
    def drops(share: float) -> dict[str, int]:
        return {n: min(math.ceil(share * c.stripes - 1e-9), c.most) for n, c in costs.items()}

    low, high = 0.0, 1.0
    for _ in range(50):
        middle = (low + high) / 2
        feasible = sum(c.macs(drops(middle)[n]) for n, c in costs.items()) <= limit
        low, high = (low, middle) if feasible else (middle, high)
    return drops(high)


def _lagrangian(costs: dict[str, LayerCost], curves: dict[str, np.ndarray], limit: float) -> dict[str, int]:
    """Per layer the removals minimising cost + lambda x MACs, for the smallest lambda (bisected, in log space)
    whose total meets ``limit``."""
    macs = {n: np.array([c.macs(d) for d in range(len(curves[n]))], dtype=np.float64) for n, c in costs.items()}

    def drops(lam: float) -> dict[str, int]:
        return {n: int(np.argmin(curves[n] + lam * macs[n])) for n in costs}

    def feasible(lam: float) -> bool:
        chosen = drops(lam)
        return sum(macs[n][chosen[n]] for n in costs) <= limit

    low, high = 0.0, 1e-12
    while not feasible(high):
        low, high = high, high * 4
        if high > 1e12:  # _kxk_limit checked the most removal: only an (impossible) flat curve gets here
            raise SurgeryError("pruning.macs_reduction_pct: no stripe allocation meets the target; lower it")
    for _ in range(60):
        middle = math.sqrt(low * high) if low > 0 else high / 2
        low, high = (low, middle) if feasible(middle) else (middle, high)
    return _give_back(drops(high), curves, macs, limit)


def _give_back(drops: dict[str, int], curves: dict[str, np.ndarray], macs: dict[str, np.ndarray],
               limit: float) -> dict[str, int]:
    """Undo removals while the target still holds, the costliest first: the relaxation jumps past a layer's
    break-even in one go and overshoots, and removals that save no MACs (a layer still dense) buy nothing."""
    drops = dict(drops)
    slack = limit - sum(macs[n][d] for n, d in drops.items())
    while True:
        undo = [(curves[n][d] - curves[n][d - 1], n) for n, d in drops.items()
                if d > 0 and macs[n][d - 1] - macs[n][d] <= slack]
        if not undo:
            return drops
        _, name = max(undo)
        slack -= macs[name][drops[name] - 1] - macs[name][drops[name]]
        drops[name] -= 1


def _stripes(conv: nn.Conv2d) -> int:
    return conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
