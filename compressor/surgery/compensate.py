"""Compensation: make the layers after a pruned group absorb what the removed channels carried.

``fold`` (one calibration pass on the original model): each removed channel's map, as its consuming
layer sees it, is regressed on the kept channels' maps plus a constant, a_r ~ sum_k beta_rk a_k + gamma_r;
the consumer's weights then take over: W[:, k] += sum_r beta_rk W[:, r], and the constant goes into the
consumer's bias or the running mean of the BatchNorm right after it (without either, the regression has
no constant). Exact when a removed channel duplicates a kept one (beta = 1 on its twin); for a kxk
consumer the constant is exact away from the zero-padded border.

``least_squares`` (ThiNet / channel-pruning style, one pass per consuming layer, in model order): each
consuming layer is re-fitted so that, from the pruned network's actual inputs (upstream layers already
compensated), it reproduces the original network's output of that layer, with a constant where the bias or
the BatchNorm after it can take one: ridge-regularised normal equations on im2col patches, in float64. A
layer with fewer than ``MIN_ROWS_PER_INPUT`` sample rows per input weight is left alone (an
under-determined fit reproduces the calibration images and nothing else).

Left as they are, and listed in the report: grouped convolutions (depthwise ones are producers, pruned with
their group), layers reached through an index mapping (a flatten), under-determined least-squares fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SurgeryError
from ..methods.base import CalibrationContext
from ..methods.calibration import calibration_batches, input_grams, one_forward
from .graph import GroupInfo

RIDGE = 1e-6  # ridge, relative to the mean diagonal of the Gram matrix
POSITIONS_PER_BATCH = 8192  # least squares: rows sampled per batch (all of them when fewer)
MIN_ROWS_PER_INPUT = 5  # least squares: sample rows needed per input weight of the re-fitted layer


@dataclass
class CompensationResult:
    kind: str
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    images: int = 0

    def to_json(self) -> dict:
        return {"kind": self.kind, "layers": self.layers, "skipped": self.skipped, "images": self.images}


def compensate(kind: str, original: nn.Module, pruned: nn.Module, groups: list[GroupInfo],
               removed: dict[str, list[int]], ctx: CalibrationContext, images: int | None) -> CompensationResult:
    result = CompensationResult(kind)
    targets = _targets(original, groups, removed, result)
    if kind == "none" or not targets:
        return result
    if kind == "fold":
        _fold(original, pruned, targets, ctx, images, result)
    else:
        _least_squares(original, pruned, targets, ctx, images, result)
    return result


@dataclass
class _Target:
    """One consuming layer of pruned channels: which of its input channels are kept / removed."""

    layer: str
    kept: torch.Tensor  # original input-channel indices kept (all groups), ascending
    removed: torch.Tensor  # original input-channel indices removed by the pruned groups
    out_kept: torch.Tensor  # original output-channel indices the pruned layer still has


def _targets(original: nn.Module, groups: list[GroupInfo], removed: dict[str, list[int]],
             result: CompensationResult) -> dict[str, _Target]:
    cut: dict[str, set[int]] = {}
    for info in groups:
        gone = set(removed.get(info.key, []))
        if not gone:
            continue
        for layer, slots in info.consumer_slots.items():
            module = original.get_submodule(layer)
            if len(set(slots.root_idx.tolist())) != len(slots.root_idx):
                result.skipped[layer] = "reached through an index mapping (flatten)"
            elif isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
                result.skipped[layer] = "grouped convolution"
            else:
                mask = torch.tensor([r in gone for r in slots.root_idx.tolist()])
                cut.setdefault(layer, set()).update(slots.layer_idx[mask].tolist())
    targets = {}
    for layer, gone in cut.items():
        if layer in result.skipped or not gone:  # none of the removed channels reach this layer (a split piece)
            continue
        module = original.get_submodule(layer)
        if max(gone) >= _in_channels(module):
            raise SurgeryError(f"compensation of {layer}: its input channels were renumbered by an earlier step "
                               "(a channel dimension shared by several groups, e.g. a concatenation); use the "
                               "one-shot schedule or pruning.compensation: none")
        kept = torch.tensor([c for c in range(_in_channels(module)) if c not in gone])
        out_gone = _outputs_removed(layer, groups, removed)
        out_kept = torch.tensor([c for c in range(_out_channels(module)) if c not in out_gone])
        targets[layer] = _Target(layer, kept, torch.tensor(sorted(gone)), out_kept)
    return targets


def _outputs_removed(layer: str, groups: list[GroupInfo], removed: dict[str, list[int]]) -> set[int]:
    """Output channels of ``layer`` removed by the groups it produces for."""
    gone: set[int] = set()
    for info in groups:
        slots = info.producer_slots.get(layer)
        if slots is not None and removed.get(info.key):
            mask = torch.tensor([r in set(removed[info.key]) for r in slots.root_idx.tolist()])
            gone.update(slots.layer_idx[mask].tolist())
    return gone


def _in_channels(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


# ------------------------------------------------------------------------------------------------ fold
def _fold(original, pruned, targets: dict[str, _Target], ctx, images, result: CompensationResult) -> None:
    norms = _norm_after(original, list(targets), ctx)
    grams, seen = input_grams(original, list(targets), ctx, images, "compensation: fold")
    for layer, target in targets.items():
        constant = original.get_submodule(layer).bias is not None or layer in norms
        beta, gamma = _regress(grams[layer], target.kept, target.removed, constant)
        _fold_into(original, pruned, layer, target, beta, gamma, norms.get(layer))
        result.layers.append(layer)
    result.images = seen


def _regress(gram: torch.Tensor, kept: torch.Tensor, removed: torch.Tensor,
             constant: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares beta (removed x kept) and gamma (removed; zero without a constant) from the Gram matrix of
    [maps, 1]."""
    ones = gram.shape[0] - 1
    cols = torch.cat([kept, torch.tensor([ones])]) if constant else kept
    a = gram[cols][:, cols]
    b = gram[cols][:, removed]
    ridge = RIDGE * a.diagonal().mean().clamp(min=1e-12)
    solution = torch.linalg.solve(a + ridge * torch.eye(len(cols), dtype=a.dtype), b)
    if not constant:
        return solution.T, torch.zeros(len(removed), dtype=gram.dtype)
    return solution[:-1].T, solution[-1]


def _fold_into(original, pruned, layer: str, target: _Target, beta: torch.Tensor, gamma: torch.Tensor,
               norm: str | None) -> None:
    old = original.get_submodule(layer).weight.detach().double().cpu()[target.out_kept]
    new = pruned.get_submodule(layer)
    w_removed = old[:, target.removed]  # (out, removed, ...)
    extra = torch.einsum("rk,or...->ok...", beta, w_removed)
    with torch.no_grad():
        new.weight.copy_((old[:, target.kept] + extra).to(new.weight.device, new.weight.dtype))
        shift = torch.einsum("r,or->o", gamma, w_removed.reshape(w_removed.shape[0], w_removed.shape[1], -1).sum(-1))
        _add_constant(pruned, new, shift, norm)


def _add_constant(model: nn.Module, layer: nn.Module, shift: torch.Tensor, norm: str | None) -> None:
    """Add ``shift`` to the layer's output: into its bias, or into the BatchNorm right after it."""
    if layer.bias is not None:
        layer.bias.add_(shift.to(layer.bias.device, layer.bias.dtype))
    elif norm is not None:
        bn = model.get_submodule(norm)
        bn.running_mean.sub_(shift.to(bn.running_mean.device, bn.running_mean.dtype))


def _norm_after(model: nn.Module, layers: list[str], ctx: CalibrationContext) -> dict[str, str]:
    """For each layer, the BatchNorm that takes its output directly (if any), from one forward pass."""
    outputs, inputs = {}, {}
    names = {m: n for n, m in model.named_modules()}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o: outputs.__setitem__(names[m], o))
             for n in layers]
    hooks += [m.register_forward_pre_hook(lambda m, i: inputs.__setitem__(names[m], i[0]))
              for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    one_forward(model, ctx, hooks, images=2)
    return {layer: bn for layer, out in outputs.items() for bn, x in inputs.items() if x is out}


# --------------------------------------------------------------------------------------- least squares
class _Stop(Exception):
    pass


def _least_squares(original, pruned, targets: dict[str, _Target], ctx, images, result) -> None:
    order = [n for n, _ in original.named_modules() if n in targets]
    generator = torch.Generator().manual_seed(ctx.seed)
    norms = _norm_after(original, order, ctx)
    for layer in order:
        new = pruned.get_submodule(layer)
        constant = new.bias is not None or layer in norms
        a = b = None
        rows = seen = 0
        for batch in calibration_batches(ctx, images, f"compensation: least squares {layer}"):
            x = _capture(pruned, layer, batch, "input")
            y = _capture(original, layer, batch, "output")[:, targets[layer].out_kept.to(batch.device)]
            rows_x, rows_y = _design(new, x, y, generator, constant)
            a = rows_x.T @ rows_x if a is None else a + rows_x.T @ rows_x
            b = rows_x.T @ rows_y if b is None else b + rows_x.T @ rows_y
            rows, seen = rows + rows_x.shape[0], seen + batch.shape[0]
        if rows < MIN_ROWS_PER_INPUT * a.shape[0]:
            result.skipped[layer] = f"under-determined least squares ({rows} samples for {a.shape[0]} inputs)"
            continue
        _refit(pruned, new, a, b, constant, norms.get(layer))
        result.layers.append(layer)
        result.images = seen


def _capture(model: nn.Module, layer: str, batch: torch.Tensor, what: str) -> torch.Tensor:
    """The input or output of one layer, running the model only up to that layer."""
    found = {}

    def hook(module, inputs, output):
        found["x"] = (inputs[0] if what == "input" else output).detach()
        raise _Stop

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.eval()(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    return found["x"]


def _design(new: nn.Module, x: torch.Tensor, y: torch.Tensor, generator, constant: bool) -> tuple:
    """Rows of (patches of the pruned input [, 1]) and (original output without the current bias), sampled."""
    if new.bias is not None:
        y = y - new.bias.detach().view(1, -1, *([1] * (y.dim() - 2)))
    if isinstance(new, nn.Linear):
        rows_x, rows_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    else:
        patches = F.unfold(x, new.kernel_size, dilation=new.dilation, padding=new.padding, stride=new.stride)
        rows_x = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        rows_y = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    if rows_x.shape[0] > POSITIONS_PER_BATCH:
        pick = torch.randperm(rows_x.shape[0], generator=generator)[:POSITIONS_PER_BATCH].to(rows_x.device)
        rows_x, rows_y = rows_x[pick], rows_y[pick]
    rows_x = rows_x.double().cpu()
    if constant:
        rows_x = torch.cat([rows_x, torch.ones(rows_x.shape[0], 1, dtype=rows_x.dtype)], 1)
    return rows_x, rows_y.double().cpu()


def _refit(model: nn.Module, layer: nn.Module, a: torch.Tensor, b: torch.Tensor, constant: bool,
           norm: str | None) -> None:
    ridge = RIDGE * a.diagonal().mean().clamp(min=1e-12)
    solution = torch.linalg.solve(a + ridge * torch.eye(a.shape[0], dtype=a.dtype), b)  # (fan_in [+1], out)
    weights = solution[:-1] if constant else solution
    with torch.no_grad():
        layer.weight.copy_(weights.T.reshape(layer.weight.shape).to(layer.weight.device, layer.weight.dtype))
        if constant:
            _add_constant(model, layer, solution[-1], norm)
