"""MACs and parameters of a plan counted on a trial-pruned copy, for graphs the exact cost model misses.

:class:`~compressor.surgery.cost.CostModel` derives a plan's cost from the layer geometry and torch-pruning's
index mappings. A few graphs map channels to MACs in ways it cannot see (a concat that is sliced back,
GhostNet's ``torch.cat([x1, x2])[:, :out]``; channels that reach a layer through an op torch-pruning
maps approximately). :func:`choose_cost` checks the exact model against a count of one trial-pruned copy
(the protection screen's); when they disagree, the target search runs on :class:`MeasuredCost`, which
prunes a CPU copy for each plan it is asked about and counts it (``profiling.macs.count_torch``, the
count the report uses), instead of refusing the model (cause C10).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .graph import PARAM_LAYERS, GroupInfo, dead_end_layers
from .plan import spread_channels
from .remove import apply_selection


class MeasuredCost:
    """``macs(kept)`` / ``params(kept)`` / ``reduction_pct(kept, metric)`` counted on pruned copies."""

    exact = False  # the search keeps its evaluations few (bisection and short single-group steps)

    def __init__(self, model: nn.Module, example: torch.Tensor, infos: list[GroupInfo]):
        self._model = copy.deepcopy(model).cpu().eval()
        self._example = example.detach().cpu()
        self._infos = {info.key: info for info in infos}
        self._dead = frozenset(dead_end_layers(self._model, self._example))
        self._cache: dict[tuple, tuple[int, int]] = {}
        self.evaluations = 0  # pruned copies counted
        self.base_macs, self.base_params = self._count({})

    def macs(self, kept: dict[str, int]) -> int:
        return self._count(kept)[0]

    def params(self, kept: dict[str, int]) -> int:
        return self._count(kept)[1]

    def reduction_pct(self, kept: dict[str, int], metric: str = "macs") -> float:
        if metric == "params":
            return 100.0 * (1 - self.params(kept) / self.base_params)
        return 100.0 * (1 - self.macs(kept) / self.base_macs)

    def _count(self, kept: dict[str, int]) -> tuple[int, int]:
        removing = {k: v for k, v in kept.items() if k in self._infos and v < self._infos[k].channels}
        signature = tuple(sorted(removing.items()))
        if signature not in self._cache:
            self.evaluations += 1
            self._cache[signature] = self._trial(removing)
        return self._cache[signature]


    def _trial(self, removing: dict[str, int]) -> tuple[int, int]:
        """The count of a copy with ``removing``'s channels gone; a plan whose copy breaks counts as removing
        nothing, so that the search moves away from it instead of stopping."""
        trial = copy.deepcopy(self._model)
        try:
            if removing:
                apply_selection(trial, self._example, {k: spread_channels(self._infos[k], v) for k, v in removing.items()})
            return count(trial, tuple(self._example.shape[1:]), self._dead)
        except Exception:  # noqa: BLE001 - torch-pruning or the user's forward; the screen protects what it can
            if not self._cache:
                raise
            return self.base_macs, self.base_params


def count(model: nn.Module, input_shape: tuple[int, int, int], dead: frozenset = frozenset()) -> tuple[int, int]:
    """(MACs as the report counts them, conv/linear weights and biases) of ``model``, without the ``dead``
    layers (outputs that never reach the model's output: the exported graph drops them)."""
    from ..profiling.macs import count_torch

    params = sum(p.numel() for n, m in model.named_modules() if isinstance(m, PARAM_LAYERS) and n not in dead
                 for p in (m.weight, m.bias) if p is not None)
    return count_torch(model, input_shape, dead).macs, params


def choose_cost(exact, model: nn.Module, example: torch.Tensor, infos: list[GroupInfo], probe):
    """``exact`` when it predicts the probe's counted MACs (and the unpruned count), else a MeasuredCost.
    ``probe`` is (kept counts, the trial-pruned copy) from the protection screen, or None."""
    if probe is None:
        return exact
    kept, trial = probe
    shape, dead = tuple(example.shape[1:]), frozenset(dead_end_layers(model, example))
    if exact.macs(kept) == count(trial, shape, dead)[0] and exact.base_macs == count(model, shape, dead)[0]:
        return exact
    return MeasuredCost(model, example, infos)
