"""SWP ``mode: reconstruct``: stripes pruned from a trained network without training, the survivors re-fitted.

A stripe is ``W[n, :, i, j]``: the C weights of filter n at kernel position (i, j). Per KxK convolution, in
model order:

1. statistics: the Gram matrix of the layer's unfolded inputs (``F.unfold``) as the *pruned* network (earlier
   layers already re-fitted) feeds them, and their cross-products with the target, at a seeded sample of
   positions per calibration image. The target is the *original* layer's output; where that output goes
   (through an eval BatchNorm or directly) into an addition, as a residual block's last conv does, the target
   also makes up for the other addend's error: ``y + (s_original - s_pruned) * sigma / gamma``, so that the sum
   (the residual stream) matches the original's rather than each branch alone, and the errors of earlier
   blocks stop accumulating along the identity path (:class:`_Follow` finds the addition while the network
   runs, so no model code is needed);
2. choose, reconstruction-aware: the ``sparsity`` share of the layer's stripes removed one at a time, each time
   the one whose removal raises its filter's least-squares residual least, as it counts after the filter's
   BatchNorm (times (gamma / sigma)^2; relative to the filter's output energy where no BatchNorm follows), by
   backward elimination (:func:`greedy_stripes`); every filter keeps one stripe, so none is removed and the
   dense-slim graph keeps its shape;
3. re-fit: each filter's surviving weights by least squares (a small ridge), plus a constant where the layer
   has somewhere to put it (the following BatchNorm's running mean, else the conv's bias), so that the layer
   reproduces its target: the stripe analogue of ``pruning.compensation: least_squares``, filter n's output at a
   position a regression over its kept (position, channel) inputs.

Not in the paper (which learns the skeleton over 160 epochs from scratch): a documented departure for users who
start from a trained network (METHODS.md §1). On the akamaster ResNet-56 at 70% of stripes, the addend
correction, the BatchNorm weighting and the constant together take the retrain-free top-1 from 79.7% to 84.9%
(benchmarks/README.md). Fine-tuning after it (``finetune.epochs``) keeps every pruned stripe at zero
(``StripeFreeze``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

POSITIONS = 256  # output positions sampled per calibration image and layer
RIDGE = 1e-6  # times the mean diagonal of the Gram matrix


class _Captured(Exception):
    """Stops a forward pass once the layer's tensor is captured (the rest of the network is not needed)."""


def greedy_stripes(gram: torch.Tensor, cross: torch.Tensor, energy: torch.Tensor, channels: int,
                   kernel: tuple[int, int], drop: int) -> torch.Tensor:
    """(N, K, K) bool, True = kept: the first ``drop`` stripes of :func:`removal_order`."""
    keep = torch.ones(cross.shape[1], kernel[0] * kernel[1], dtype=torch.bool)
    for f, position, _ in removal_order(gram, cross, energy, channels, kernel, drop):
        keep[f, position] = False
    return keep.view(cross.shape[1], *kernel)


def removal_order(gram: torch.Tensor, cross: torch.Tensor, energy: torch.Tensor, channels: int,
                  kernel: tuple[int, int], drop: int) -> list[tuple[int, int, float]]:
    """(filter, position, cost) of ``drop`` stripes removed one at a time, each time the one whose removal raises
    its filter's least-squares residual least, relative to ``energy`` per filter (its output energy, or
    :attr:`Statistics.energy`; cost: that rise over the number of filters, e.g. the layer's mean relative error);
    a trailing constant column of ``gram`` is never removed; a filter's remaining stripes are re-fitted after each
    removal and every filter keeps one. Backward elimination on the inverse Gram matrix: dropping the C inputs p
    of a solution w raises the residual by ``w_p^T (A_pp)^-1 w_p`` (A = inverse Gram of the kept inputs), and A
    and w are downdated in place."""
    positions = kernel[0] * kernel[1]
    n = cross.shape[1]
    ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
    inverse = torch.linalg.inv(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype))
    solution = inverse @ cross
    states = [[list(range(positions)), inverse.clone(), solution[:, f].clone()] for f in range(n)]
    energy = energy.clamp_min(1e-30) * n
    costs = [_removal_costs(*state, channels) / energy[f] for f, state in enumerate(states)]
    order = []
    for _ in range(min(drop, n * (positions - 1))):
        f = min((f for f in range(n) if len(states[f][0]) > 1), key=lambda f: float(costs[f].min()))
        slot = int(costs[f].argmin())
        order.append((f, states[f][0][slot], float(costs[f][slot])))
        _downdate(states[f], slot, channels)
        costs[f] = _removal_costs(*states[f], channels) / energy[f]
    return order


def _block(kept: list[int], slot: int, channels: int) -> torch.Tensor:
    """Indices, within the kept columns, of position ``kept[slot]`` for every channel."""
    return torch.arange(channels) * len(kept) + slot


def _removal_costs(kept: list[int], inverse: torch.Tensor, w: torch.Tensor, channels: int):
    out = torch.empty(len(kept), dtype=inverse.dtype)
    for slot in range(len(kept)):
        idx = _block(kept, slot, channels)
        wp = w[idx]
        out[slot] = wp @ torch.linalg.solve(inverse[idx][:, idx], wp)
    return out


def _downdate(state: list, slot: int, channels: int) -> None:
    """Remove position ``state[0][slot]`` from a filter's kept set, its inverse Gram and its solution."""
    kept, inverse, w = state
    idx = _block(kept, slot, channels)
    others = torch.ones(inverse.shape[0], dtype=torch.bool)
    others[idx] = False
    rest = torch.nonzero(others).flatten()
    a_rp, a_pp = inverse[rest][:, idx], inverse[idx][:, idx]
    correction = a_rp @ torch.linalg.inv(a_pp)
    state[1] = inverse[rest][:, rest] - correction @ inverse[idx][:, rest]
    state[2] = w[rest] - correction @ w[idx]
    state[0] = kept[:slot] + kept[slot + 1:]


def fit_stripes(gram: torch.Tensor, cross: torch.Tensor, keep: torch.Tensor, channels: int) -> torch.Tensor:
    """Weights (N, C, K, K) minimising ``|X w_n - y_n|^2`` over each filter's kept inputs, from ``gram`` = X^T X
    ((C K K) x (C K K), unfold order: channel-major) and ``cross`` = X^T Y ((C K K) x N); pruned stripes 0. Where
    X has one more column (a constant input), it is always kept and the result is (N, C K K + 1), its last column
    the fitted constants."""
    n, k1, k2 = keep.shape
    ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
    constants = gram.shape[0] - channels * k1 * k2  # 1 where the last column is the constant input
    weight = torch.zeros(n, gram.shape[0], dtype=gram.dtype)
    for f in range(n):
        cols = torch.cat([keep[f].flatten().repeat(channels),  # the kept positions of every channel
                          torch.ones(constants, dtype=torch.bool)])
        sub = gram[cols][:, cols] + ridge * torch.eye(int(cols.sum()), dtype=gram.dtype)
        weight[f, cols] = torch.linalg.solve(sub, cross[cols, f])
    return weight if constants else weight.view(n, channels, k1, k2)


@torch.no_grad()
def reconstruct(model: nn.Module, original: nn.Module, layers: list[str], budget, batches, device,
                seed: int = 0) -> dict[str, dict]:
    """Prune and re-fit the stripes of every layer of ``layers`` in ``model`` (in place), layer by layer;
    ``original`` is the unpruned network the outputs are matched to, ``budget`` how many stripes go
    (:class:`~compressor.methods.stripe_budget.Budget`). Per layer: stripes kept / all and the relative output
    error of the pruned layer before and after the fit (on the calibration sample)."""
    from .stripe_budget import drops_for

    drops = drops_for(original, layers, budget, batches, device, seed)
    report = {}
    for name in layers:
        conv, reference = model.get_submodule(name), original.get_submodule(name)
        stats = _statistics(model, original, name, batches, device, seed)
        keep = greedy_stripes(stats.gram, stats.cross, stats.energy, conv.in_channels, conv.kernel_size, drops[name])
        flat = fit_stripes(stats.gram, stats.cross, keep, conv.in_channels).flatten(1)  # (N, C K K [+ 1])
        masked = torch.zeros_like(flat)  # the original weights without the pruned stripes, no constant
        masked[:, :conv.weight[0].numel()] = (reference.weight.detach().double().cpu() * keep.unsqueeze(1)).flatten(1)
        before, after = (_error(stats, w.t()) for w in (masked, flat))
        conv.weight.copy_(flat[:, :conv.weight[0].numel()].view_as(conv.weight).to(conv.weight))
        if stats.shift is not None:  # the fitted constant: y = X w + b, into the BatchNorm's mean or the bias
            sign, buffer = stats.shift
            buffer.add_(sign * flat[:, -1].to(buffer))
        report[name] = {"stripes": int(keep.sum()), "of": keep.numel(), "samples": stats.rows,
                        "error_pruned": round(before, 6), "error_refit": round(after, 6),
                        "addend_matched": stats.addend}
    return report


def _error(stats: "Statistics", w: torch.Tensor) -> float:
    """|X w - Y|^2 / |Y|^2 from the sufficient statistics (w: (C K K [+ 1]) x N)."""
    residual = stats.target_sq.sum() - 2 * (stats.cross * w).sum() + (w * (stats.gram @ w)).sum()
    return float((residual / stats.target_sq.sum().clamp_min(1e-30)).clamp_min(0))


@dataclass
class Statistics:
    """One layer's sufficient statistics: ``gram`` = X^T X, ``cross`` = X^T Y, ``target_sq`` the sum of Y^2 per
    filter, over ``rows`` sampled positions. X's columns are the unfolded inputs (channel-major), then a constant
    1 where ``shift`` = (sign, tensor) says where a fitted constant goes; ``weight`` is (gamma / sigma)^2 per
    filter where a BatchNorm follows; ``addend``: the target made up for an addition's other addend."""

    gram: torch.Tensor
    cross: torch.Tensor
    target_sq: torch.Tensor
    rows: int
    weight: torch.Tensor | None = None
    shift: tuple[int, torch.Tensor] | None = None
    addend: bool = False

    @property
    def energy(self) -> torch.Tensor:
        """What :func:`removal_order` divides each filter's residual by: rows / (gamma / sigma)^2 where a BatchNorm
        follows (a filter it scales to zero costs nothing), else the filter's output energy."""
        if self.weight is None:
            return self.target_sq
        return torch.where(self.weight > 0, self.rows / self.weight.clamp_min(1e-30), torch.inf)


def _statistics(model: nn.Module, original: nn.Module, name: str, batches, device, seed: int) -> Statistics:
    """The :class:`Statistics` of ``name``: X its unfolded inputs in ``model``, Y the original layer's outputs
    (bias removed), plus the addend correction where the pruned and original networks differ, at ``POSITIONS``
    seeded positions per image."""
    conv, reference = model.get_submodule(name), original.get_submodule(name)
    generator = torch.Generator().manual_seed(seed)
    stats = None
    for images, *_ in batches():
        images = images.to(device)
        pruned = _capture(model, conv, images)
        target = _capture(original, reference, images) if original is not model else pruned
        y = target.output
        if original is not model and pruned.addend is not None and target.addend is not None:
            y = y + (target.addend - pruned.addend) * pruned.scale.view(1, -1, 1, 1)
        if reference.bias is not None:
            y = y - reference.bias.view(1, -1, 1, 1)
        cols = F.unfold(pruned.input, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C*K*K, L)
        take = torch.randperm(y.shape[2] * y.shape[3], generator=generator)[:POSITIONS]
        xs = cols[:, :, take.to(cols.device)].permute(0, 2, 1).reshape(-1, cols.shape[1]).double().cpu()
        ys = y.flatten(2)[:, :, take.to(y.device)].permute(0, 2, 1).reshape(-1, y.shape[1]).double().cpu()
        shift = (1, conv.bias) if conv.bias is not None else None if pruned.mean is None else (-1, pruned.mean)
        if shift is not None:
            xs = torch.cat([xs, torch.ones(xs.shape[0], 1, dtype=xs.dtype)], 1)
        if stats is None:
            weight = None if pruned.scale is None else _post_norm_weight(pruned.scale)
            stats = Statistics(xs.t() @ xs, xs.t() @ ys, (ys ** 2).sum(0), 0, weight, shift, pruned.addend is not None)
        else:
            stats.gram += xs.t() @ xs
            stats.cross += xs.t() @ ys
            stats.target_sq += (ys ** 2).sum(0)
        stats.rows += xs.shape[0]
    return stats


def _post_norm_weight(scale: torch.Tensor) -> torch.Tensor:
    """(gamma / sigma)^2 from sigma / gamma (0 where gamma is negligible)."""
    scale = scale.double().cpu()
    return torch.where(scale > 0, scale.clamp_min(1e-30) ** -2, 0.0)


@dataclass
class _Seen:
    """What :func:`_capture` saw of one layer: its input and output, and where the output went: ``scale`` sigma /
    gamma per channel and ``mean`` the running mean of the eval BatchNorm it went through (None without one),
    ``addend`` the other operand of the addition it then went into (None if it went elsewhere)."""

    input: torch.Tensor
    output: torch.Tensor
    scale: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    addend: torch.Tensor | None = None


_ADDITIONS = {"add", "add_", "__add__", "__iadd__", "__radd__"}


class _Follow(TorchFunctionMode):
    """Watches one tensor while the network runs: through ``F.batch_norm`` (once), to an addition of two tensors
    (its other operand recorded, the pass stopped before it); any other op that makes a new tensor from it ends
    the watch and the pass. Ops that return a non-tensor (``dim``, ``size``) or the tensor itself are ignored."""

    def __init__(self, seen: dict):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        watched = self.seen.get("watched")
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        hit = watched is not None and any(a is watched for a in tensors)
        if hit and getattr(func, "__name__", "") in _ADDITIONS and len(tensors) == 2:
            self.seen["addend"] = (tensors[1] if tensors[0] is watched else tensors[0]).detach()
            raise _Captured
        out = func(*args, **kwargs)
        if hit and isinstance(out, torch.Tensor) and out is not watched:
            if func is not F.batch_norm or "scale" in self.seen:
                raise _Captured
            self.seen |= _batch_norm(args, kwargs)
            self.seen["watched"] = out
        return out


def _batch_norm(args, kwargs) -> dict:
    """sigma / gamma per channel (0 where |gamma| < 1e-3 sigma: such a channel carries next to nothing) and the
    running-mean buffer of an ``F.batch_norm`` call."""
    bound = inspect.signature(F.batch_norm).bind(*args, **kwargs)
    bound.apply_defaults()
    var, gamma, eps = bound.arguments["running_var"], bound.arguments["weight"], bound.arguments["eps"]
    if var is None or bound.arguments["training"]:  # batch statistics: not an affine map of the conv's output
        raise _Captured
    sigma = (var + eps).sqrt()
    gamma = torch.ones_like(sigma) if gamma is None else gamma.detach()
    usable = gamma.abs() > 1e-3 * sigma
    return {"scale": torch.where(usable, sigma / torch.where(usable, gamma, 1.0), 0.0),
            "mean": bound.arguments["running_mean"]}


def _capture(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> _Seen:
    """What ``layer`` sees and makes when ``model`` runs on ``images``, and where its output goes (:class:`_Follow`);
    the pass stops as soon as that is known."""
    seen: dict = {}

    def hook(module, inputs, output):
        seen["t"] = (inputs[0].detach(), output.detach())
        seen["watched"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with _Follow(seen):
            model.eval()(images)
    except _Captured:
        pass
    finally:
        handle.remove()
    scale = seen.get("scale")
    if seen.get("addend") is not None and scale is None:  # straight into the addition: no BatchNorm between
        scale = torch.ones(seen["t"][1].shape[1], dtype=seen["t"][1].dtype, device=seen["t"][1].device)
    return _Seen(*seen["t"], scale=scale, mean=seen.get("mean"), addend=seen.get("addend"))
