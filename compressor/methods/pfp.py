"""PFP: Provable Filter Pruning for Efficient Neural Networks.

Liebenwein, Baykal, Lang, Feldman, Rus, ICLR 2020, https://arxiv.org/abs/1911.07412, reference code
lucaslie/torchprune v2.2.0 (``method/pfp``, ``method/base_sens``).

What it removes and from what score: the *input* channels of each layer (the filters of the layer before)
are scored by their empirical sensitivity, the largest relative contribution any of their weights makes to
any output of the layer over a small sample set S: for output filter f, position p and kernel element
e = (c, u, v), g = w_fe a_ep / z_fp, computed separately with the positive weights (z+ = sum of positive
contributions, no bias) and the negative ones (z-), the larger of the two kept; inputs with negative values
are split into a+ and -a- (stacked as extra samples); |z| below float32 epsilon contributes 0. s_c is the max
over images, filters, positions and kernel offsets (``sensitivities``). Channels are kept top-k by s_c
(``variant: deterministic``, the paper's PFPNet) or sampled from p_c = s_c / sum s, with replacement, until
the allocated number of distinct channels is drawn (m draws), the kept ones re-weighted by count / (m p_c)
in the consuming layers (``variant: sampling``, PFPNetRand; the reference adapts m so that the *expected*
number of distinct channels is k; we draw until it is k, so the plan's counts and rounding hold). The
re-weighting only survives ``pruning.compensation: none``: fold and least squares re-fit those weights.

Per-layer budgets come from one global epsilon: for each group, alpha = 2 c ln(8 (P+1) kappa / delta)
(P output positions and kappa kernel size of the consuming layer; with several consumers, the one with the
largest (P+1) kappa), m(eps) = ceil(3 (6 + 2 eps) alpha S / eps^2) samples, and the expected number of unique
channels sum_c 1 - (1 - p_c)^m is kept (at least 1, then rounded as every plan). Epsilon is found by
bisection on log(eps) so that the parameters (``pruning.params_reduction_pct``, the paper's budget) or the
MACs (``pruning.macs_reduction_pct``) of the pruned network meet the target; the cost is exact
(``compressor.surgery.cost``), so the allocation lands within 0.5% of the budget. When rounding
(``round_to``, small layers) makes it jump over the budget by more, single groups take rounding steps to
the plan closest to the epsilon allocation within 1 point of the target (``adjusted_by_rounding_search``).
|S| = ceil(c log(8 eta* eta / delta_S)) (eta = output elements of all compressible layers per image, eta* the
largest), c = 3, delta = delta_S = 1e-16, as the reference's ICLR configuration.

Departures from the reference, each controlled by the recipe:
- A channel is scored as an input of every layer that consumes it (a residual stream under
  ``residual: coupled`` has several); we take the max, the same reduction PFP applies within a layer.
  The reference scores a chain of layers and only removes residual-stream channels that no one uses.
- Physical removal through dependency-graph surgery instead of zeroing weights; the reference's
  propagation heuristics (zeroing producers of unused channels, dropping constant inputs) are what the
  surgery does by construction, except that constant (BN-bias-only) channels keep contributing until removed.
- One-shot: the reference's iterative "cascade" (prune, retrain 182 epochs, repeat) is replaced by one
  pruning step plus the recipe's fine-tuning; ``pruning.compensation`` and ``bn_recalibration`` are available.
- |S| is capped by the recipe's calibration images (the reference caps it at half its validation split).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config.methods import PFPOptions
from ..errors import SurgeryError
from .base import Allocation, AllocationSpace, CalibrationContext, PruningMethod, register
from .calibration import InputProbe, calibration_batches, observable, one_forward, per_channel

C_CONSTANT = 3.0
DELTA = 1e-16
EPS32 = torch.finfo(torch.float32).eps
CHUNK_ELEMENTS = 24_000_000  # bound on the (batch x filters x fan-in x positions) intermediate


@register(PFPOptions)
class PFP(PruningMethod):
    summary = "provable sensitivity of channels as inputs, budget from one epsilon (Liebenwein et al., ICLR 2020)"
    paper = "https://arxiv.org/abs/1911.07412"
    needs_calibration = True

    def __init__(self, options: PFPOptions, seed: int = 0):
        super().__init__(options, seed)
        self._weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # sampling: group -> (kept, re-weighting)

    def calibrate(self, model, groups: list, ctx: CalibrationContext) -> None:
        consumers = sorted({layer for info in groups for layer in info.consumer_slots
                            if observable(model.get_submodule(layer))})
        if not consumers:
            raise SurgeryError("method pfp: no prunable group feeds a conv (groups=1) or linear layer to score")
        self.geometry = _geometry(model, consumers, ctx)
        self.sample_size = self.options.sample_size or formula_sample_size(model, ctx)
        self.sensitivity = sensitivities(model, consumers, ctx, self.sample_size)
        self._groups = {info.key: info for info in groups}

    def score(self, info, group) -> torch.Tensor:
        slots = {k: v for k, v in info.consumer_slots.items() if k in self.sensitivity}
        if not slots:
            raise SurgeryError(f"method pfp: group {info.key} feeds no conv (groups=1) or linear layer; "
                               "ignore it with pruning.ignore or use another method")
        return per_channel(self.sensitivity, slots, info.channels, reduce="max").float()

    def allocate(self, space: AllocationSpace) -> Allocation | None:
        from .pfp_budget import allocate

        return allocate(self, space)

    def choose(self, key: str, scores: torch.Tensor, keep: int, slices: int) -> list[int] | None:
        if self.options.variant == "deterministic" or slices > 1:
            return None
        if keep >= scores.numel():
            return []  # every channel stays: nothing to sample, nothing to re-weight
        from .pfp_budget import sample_channels

        kept, weight = sample_channels(scores, keep, self.seed, key)
        self._weights[key] = (kept, weight)
        return sorted(set(range(scores.numel())) - set(kept.tolist()))

    def before_removal(self, model, removed: dict[str, list[int]]) -> None:
        """Sampling variant: re-weight the kept channels of the groups about to lose channels (once each)."""
        if self.options.variant == "sampling":
            from .pfp_budget import reweight

            weights = {key: value for key, value in self._weights.items() if key in removed}
            reweight(model, weights, self._groups)


def formula_sample_size(model: nn.Module, ctx: CalibrationContext) -> int:
    """|S| = ceil(c log(8 eta* eta / delta)), capped by the calibration images available."""
    sizes = []
    one_forward(model, ctx, [m.register_forward_hook(lambda m, i, o: sizes.append(o[0].numel()))
                             for m in model.modules() if observable(m)])
    eta, eta_star = sum(sizes), max(sizes)
    return min(ctx.num_images, math.ceil(C_CONSTANT * math.log(8 * eta_star * eta / DELTA)))


def _geometry(model: nn.Module, layers: list[str], ctx: CalibrationContext) -> dict[str, tuple[int, int]]:
    """(output positions, kernel size) of each consuming layer, for the allocation's alpha."""
    found = {}
    one_forward(model, ctx, [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: found.__setitem__(n, (o[0, 0].numel() if o.dim() > 2 else 1,
                                                   m.weight[0, 0].numel() if m.weight.dim() > 2 else 1)))
        for n in layers])
    return found


def sensitivities(model: nn.Module, layers: list[str], ctx: CalibrationContext, images: int) -> dict[str, torch.Tensor]:
    """Input-channel sensitivity of every layer: running max over the sample set."""
    probe = InputProbe(model, layers)
    found: dict[str, torch.Tensor] = {}
    for batch in calibration_batches(ctx, images, "PFP: sensitivities"):
        for layer, x in probe.run(batch).items():
            value = input_sensitivity(model.get_submodule(layer), x)
            found[layer] = torch.maximum(found[layer], value) if layer in found else value
    return found


def input_sensitivity(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """max over samples, filters, positions and kernel offsets of the relative contribution of each input channel."""
    x = _split_signs(x.detach().float())
    weight = layer.weight.detach().float()
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    if isinstance(layer, nn.Linear):
        patches = x.reshape(x.shape[0], -1, 1)  # (B, C, 1)
        z_pos, z_neg = (x @ w_pos.T).unsqueeze(-1), (x @ w_neg.T).unsqueeze(-1)  # (B, F, 1)
        kernel = 1
    else:
        conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
        patches = F.unfold(x, layer.kernel_size, **conv)  # (B, C*k, P)
        z_pos = F.conv2d(x, w_pos, **conv).flatten(2)  # (B, F, P)
        z_neg = F.conv2d(x, w_neg, **conv).flatten(2)
        kernel = weight[0, 0].numel()
    inv_pos, inv_neg = _inverse(z_pos), _inverse(-z_neg)  # 1/|z|, 0 where |z| <= eps
    w_pos, w_neg = w_pos.flatten(1), (-w_neg).flatten(1)  # (F, C*k), both >= 0
    best = torch.zeros(w_pos.shape[1], device=x.device)
    for start, stop in _chunks(patches.shape[0], w_pos.shape[0], patches.shape[1], patches.shape[2]):
        g_pos = w_pos[start:stop] * _max_ratio(patches, inv_pos[:, start:stop])
        g_neg = w_neg[start:stop] * _max_ratio(patches, inv_neg[:, start:stop])
        best = torch.maximum(best, torch.maximum(g_pos, g_neg).amax(dim=(0, 1)))
    return best.view(-1, kernel).amax(1).cpu()


def _split_signs(x: torch.Tensor) -> torch.Tensor:
    """Activations with negative entries become [a+; -a-] along the batch (both non-negative)."""
    if bool((x >= 0).all()):
        return x
    return torch.cat([x.clamp(min=0), (-x).clamp(min=0)])


def _inverse(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z.abs() <= EPS32, torch.zeros_like(z), 1.0 / z.clamp(min=EPS32))


def _max_ratio(patches: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """max over positions p of a[b, e, p] / z[b, f, p]  ->  (B, F, E)."""
    return (patches.unsqueeze(1) * inverse.unsqueeze(2)).amax(-1)


def _chunks(batch: int, filters: int, fan_in: int, positions: int):
    """Filter ranges whose (batch x filters x fan-in x positions) intermediate stays below CHUNK_ELEMENTS."""
    step = max(1, CHUNK_ELEMENTS // max(1, batch * fan_in * positions))
    for start in range(0, filters, step):
        yield start, min(filters, start + step)
