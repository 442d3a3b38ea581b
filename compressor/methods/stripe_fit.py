"""SWP ``mode: reconstruct``: stripes pruned from a trained network without training, the survivors re-fitted.

A stripe is ``W[n, :, i, j]``: the C weights of filter n at kernel position (i, j). Per KxK convolution, in
model order:

1. statistics: the Gram matrix of the layer's unfolded inputs (``F.unfold``) as the *pruned* network (earlier
   layers already re-fitted) feeds them, and their cross-products with the *original* layer's outputs, at a
   seeded sample of positions per calibration image;
2. choose, reconstruction-aware: the ``sparsity`` share of the layer's stripes removed one at a time, each time
   the one whose removal raises its filter's least-squares residual least (relative to that filter's output
   energy, so that BatchNorm-scaled filters compare), by backward elimination (:func:`greedy_stripes`); every
   filter keeps one stripe, so none is removed and the dense-slim graph keeps its shape;
3. re-fit: each filter's surviving weights by least squares (a small ridge), so that the layer reproduces the
   original layer's output: the stripe analogue of ``pruning.compensation: least_squares``, filter n's output at
   a position a regression over its kept (position, channel) inputs.

Not in the paper (which learns the skeleton over 160 epochs from scratch): a documented departure for users who
start from a trained network (METHODS.md §1). Fine-tuning after it (``finetune.epochs``) keeps every pruned
stripe at zero (``StripeFreeze``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

POSITIONS = 256  # output positions sampled per calibration image and layer
RIDGE = 1e-6  # times the mean diagonal of the Gram matrix


class _Captured(Exception):
    """Stops a forward pass once the layer's tensor is captured (the rest of the network is not needed)."""


def greedy_stripes(gram: torch.Tensor, cross: torch.Tensor, target_sq: torch.Tensor, channels: int,
                   kernel: tuple[int, int], drop: int) -> torch.Tensor:
    """(N, K, K) bool, True = kept: the first ``drop`` stripes of :func:`removal_order`."""
    keep = torch.ones(cross.shape[1], kernel[0] * kernel[1], dtype=torch.bool)
    for f, position, _ in removal_order(gram, cross, target_sq, channels, kernel, drop):
        keep[f, position] = False
    return keep.view(cross.shape[1], *kernel)


def removal_order(gram: torch.Tensor, cross: torch.Tensor, target_sq: torch.Tensor, channels: int,
                  kernel: tuple[int, int], drop: int) -> list[tuple[int, int, float]]:
    """(filter, position, cost) of ``drop`` stripes removed one at a time, each time the one whose removal raises
    its filter's least-squares residual least, relative to the filter's output energy (cost: that rise over the
    number of filters, i.e. the layer's mean relative error); a filter's remaining stripes are re-fitted after each
    removal and every filter keeps one. Backward elimination on the inverse Gram matrix: dropping the C inputs p
    of a solution w raises the residual by ``w_p^T (A_pp)^-1 w_p`` (A = inverse Gram of the kept inputs), and A
    and w are downdated in place."""
    positions = kernel[0] * kernel[1]
    n = cross.shape[1]
    ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
    inverse = torch.linalg.inv(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype))
    solution = inverse @ cross
    states = [[list(range(positions)), inverse.clone(), solution[:, f].clone()] for f in range(n)]
    energy = target_sq.clamp_min(1e-30) * n
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
    ((C K K) x (C K K), unfold order: channel-major) and ``cross`` = X^T Y ((C K K) x N); pruned stripes 0."""
    n, k1, k2 = keep.shape
    ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
    weight = torch.zeros(n, channels * k1 * k2, dtype=gram.dtype)
    for f in range(n):
        cols = keep[f].flatten().repeat(channels)  # (C*K*K,): the kept positions of every channel
        sub = gram[cols][:, cols] + ridge * torch.eye(int(cols.sum()), dtype=gram.dtype)
        weight[f, cols] = torch.linalg.solve(sub, cross[cols, f])
    return weight.view(n, channels, k1, k2)


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
        gram, cross, target_sq, rows = _statistics(model, original, name, batches, device, seed)
        keep = greedy_stripes(gram, cross, target_sq, conv.in_channels, conv.kernel_size, drops[name])
        fitted = fit_stripes(gram, cross, keep, conv.in_channels)
        masked = (reference.weight.detach().double().cpu() * keep.unsqueeze(1)).flatten(1).t()
        before, after = _error(gram, cross, target_sq, masked), _error(gram, cross, target_sq, fitted.flatten(1).t())
        conv.weight.copy_(fitted.to(conv.weight.dtype).to(conv.weight.device))
        report[name] = {"stripes": int(keep.sum()), "of": keep.numel(), "samples": rows,
                        "error_pruned": round(before, 6), "error_refit": round(after, 6)}
    return report


def _error(gram: torch.Tensor, cross: torch.Tensor, target_sq: torch.Tensor, w: torch.Tensor) -> float:
    """|X w - Y|^2 / |Y|^2 from the sufficient statistics (w: (C K K) x N)."""
    residual = target_sq.sum() - 2 * (cross * w).sum() + (w * (gram @ w)).sum()
    return float((residual / target_sq.sum().clamp_min(1e-30)).clamp_min(0))


def _statistics(model: nn.Module, original: nn.Module, name: str, batches, device, seed: int):
    """X^T X, X^T Y, sum of Y^2 per filter and the row count: X the unfolded inputs of ``name`` in ``model``, Y
    the original layer's outputs (bias removed), at ``POSITIONS`` seeded positions per image."""
    conv, reference = model.get_submodule(name), original.get_submodule(name)
    generator = torch.Generator().manual_seed(seed)
    gram = cross = target_sq = None
    rows = 0
    for images, *_ in batches():
        images = images.to(device)
        x, y = _capture(model, conv, images)
        if original is not model:  # the pruned network's inputs against the original layer's outputs
            y = _capture(original, reference, images)[1]
        if reference.bias is not None:
            y = y - reference.bias.view(1, -1, 1, 1)
        cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C*K*K, L)
        out = y.flatten(2)  # (B, N, L)
        take = torch.randperm(out.shape[2], generator=generator)[:POSITIONS]
        xs = cols[:, :, take.to(cols.device)].permute(0, 2, 1).reshape(-1, cols.shape[1]).double().cpu()
        ys = out[:, :, take.to(out.device)].permute(0, 2, 1).reshape(-1, out.shape[1]).double().cpu()
        gram = xs.t() @ xs if gram is None else gram + xs.t() @ xs
        cross = xs.t() @ ys if cross is None else cross + xs.t() @ ys
        target_sq = (ys ** 2).sum(0) if target_sq is None else target_sq + (ys ** 2).sum(0)
        rows += xs.shape[0]
    return gram, cross, target_sq, rows


def _capture(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output tensors of ``layer`` when ``model`` runs on ``images`` (the pass stops there)."""
    found = {}

    def hook(module, inputs, output):
        found["t"] = (inputs[0].detach(), output.detach())
        raise _Captured

    handle = layer.register_forward_hook(hook)
    try:
        model.eval()(images)
    except _Captured:
        pass
    finally:
        handle.remove()
    return found["t"]
