"""SWP: "Pruning Filter in Filter", Meng, Cheng, Li, Luo, Guo, Lu, Sun, NeurIPS 2020,
https://arxiv.org/abs/2009.14410, reference code fxmeng/Pruning-Filter-in-Filter (../shared/METHODS.md §1).

What it removes and from what score: stripes, the C-vector ``W[n, :, i, j]`` of one filter at one kernel
position. Every KxK (K > 1, ungrouped) convolution gets a learnable Filter Skeleton I (N x K x K, init 1);
the network trains with the effective weight W * I (I broadcast over input channels) and an L1 penalty
alpha * |I|_1 applied as the sub-gradient alpha * sign(I) after ``backward`` (as the reference); in every
step the entries |I| <= delta are zeroed with their gradient, and the BatchNorm scale and shift of a filter
left with no stripe are zeroed. At the end I is merged into W (pruned stripes exactly zero) and filters
with no stripe left are removed by the normal surgery path, so the dense-slim export has KxK convs whose
pruned stripes are zero; ``export.stripe`` then emits the stripe-decomposed graph.

Departures from the reference code, each controlled by the recipe:
- Fine-tuning from a trained checkpoint is the default (``method.epochs`` with the recipe's fine-tuning
  optimizer); the paper trains 160 epochs from scratch (``mode: scratch``, ``model.checkpoint: null`` and a
  from-scratch learning rate do that).
- ``mode: finetune`` (default) changes the skeleton, because the paper's rule cannot work from a trained
  network in a few epochs: BatchNorm makes the loss invariant to a filter's overall skeleton scale, so the
  loss gradient is orthogonal to I and cannot hold back the uniform L1 pull, and with I = 1 everywhere a
  filter's entries cross delta together (measured: ResNet-56, alpha 0.03, 0% of stripes gone after epoch 2,
  99.99% after epoch 3, top-1 at chance). In this mode
  (1) I starts from the trained stripe norms, ``I[n,i,j] = |W[n,:,i,j]| / max_ij |W[n,:,i,j]|``, with W
  divided by I so that W * I is unchanged: the skeleton starts with the trained magnitudes, each filter's
  strongest stripe at 1;
  (2) after every optimizer step each filter's skeleton is rescaled to max |I| = 1 and its weight takes the
  scale (function-preserving). The L1 pull then acts relative to the filter's strongest stripe: a stripe at
  relative value v the loss does not defend goes under delta after about ln((1 - delta) / (1 - v)) /
  (lr * alpha) steps (momentum multiplies the rate), weak stripes first, progressively. delta reads
  "relative to the filter's strongest stripe", and every filter keeps that stripe, so no filter is removed
  and the dense-slim graph keeps its shape; the savings are in the stripe graph.
- Fine-tuning after SWP (``finetune.epochs``) keeps every pruned stripe at exactly zero (``StripeFreeze``).
- A pruned skeleton entry stays pruned: it is frozen (zero, no gradient, no momentum or weight-decay drift).
  The reference zeroes it before ``optimizer.step``, so momentum and weight decay can move it back above
  delta (its open issue #21); we make the removal permanent.
- Filters are removed only from block-internal groups (channels that do not pass through a residual sum),
  as the reference (only ``conv1`` of a block loses filters; a ``conv2`` filter with no stripe keeps
  outputting its BatchNorm shift). The reference's whole-block replacement when a block has no stripe left
  is not done (it drops BatchNorm constants without compensation).
- ``threshold`` defaults to 0.05, the delta behind the paper's ResNet-56 parameter row (the README's 0.01
  prunes far less; 0.09 is the FLOPs row); ``alpha`` to 1e-5 as the paper's CIFAR runs (mode finetune needs
  far more, see the shipped recipe).
- Checkpoints are never selected on the test set; the last epoch is kept (its masks are the result).
- ``mode: reconstruct`` trains nothing: ``sparsity`` of the KxK convs' stripes go, those whose removal raises the
  layer's least-squares residual least (shared out over the layers by the same costs with ``budget: global``),
  and each filter's surviving weights (plus a constant, into the following BatchNorm's mean) are re-fitted by
  least squares to the original layer's output, layer by layer from the pruned network's inputs on the
  calibration images; where the conv feeds a residual addition the target makes up for the other addend's
  error, so the residual stream matches the original's (``stripe_fit.py``): users start from a
  trained network, where 160 epochs from scratch are not an option on a CPU. Instead of ``sparsity``,
  ``pruning.macs_reduction_pct`` sets the budget, counted on the stripe graph as it executes
  (``stripe_budget.py``). Layers matched by ``pruning.ignore`` keep every stripe (and do not count in
  ``sparsity``): e.g. the layers the hybrid stripe graph runs dense anyway.

Measured (benchmarks/README.md): the accuracy / stripe-sparsity / latency trade-off of mode finetune on
ResNet-56, and mode reconstruct retrain-free and with a short fine-tune.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..config.methods import SWPOptions
from .base import Allocation, AllocationSpace, CalibrationContext, Rounding, TrainingHooks, TrainingMethod, register
from .soft_masks import layer_positions


class Skeleton(nn.Module):
    """Parametrization W -> W * I[:, None] with a learnable I (N x K x K), initialised to 1."""

    def __init__(self, out_channels: int, kernel: tuple[int, int]):
        super().__init__()
        self.skeleton = nn.Parameter(torch.ones(out_channels, *kernel))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.skeleton.unsqueeze(1)


def skeleton_layers(model: nn.Module) -> list[str]:
    """Every KxK (K > 1), ungrouped Conv2d of the model: the layers SWP regularises."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and max(m.kernel_size) > 1]


@torch.no_grad()
def init_from_stripe_norms(conv: nn.Conv2d) -> None:
    """I[n, i, j] = |W[n, :, i, j]| / max over (i, j) of the same, and W's stripes divided by it: W * I is
    unchanged and the skeleton starts with the trained magnitudes, each filter's strongest stripe at 1."""
    param = conv.parametrizations.weight
    weight, skeleton = param.original, param[0].skeleton
    norms = weight.norm(dim=1)  # (N, K, K)
    peak = norms.flatten(1).amax(1).clamp_min(torch.finfo(norms.dtype).tiny).view(-1, 1, 1)
    init = norms / peak
    alive = init > 0
    weight.copy_(torch.where(alive.unsqueeze(1), weight / init.clamp_min(1e-30).unsqueeze(1), weight))
    skeleton.copy_(init)


@torch.no_grad()
def rescale_filters(conv: nn.Conv2d) -> None:
    """Divide each filter's skeleton by its max |I| and multiply its weight by the same: W * I is unchanged.
    Filters without a stripe are left alone."""
    param = conv.parametrizations.weight
    weight, skeleton = param.original, param[0].skeleton
    peak = skeleton.abs().flatten(1).amax(1)
    scale = torch.where(peak > 0, peak, torch.ones_like(peak))
    skeleton.div_(scale.view(-1, 1, 1))
    weight.mul_(scale.view(-1, 1, 1, 1))


class StripeFreeze(TrainingHooks):
    """Fine-tuning after SWP: every pruned stripe (all-zero ``W[n, :, i, j]`` of a KxK conv) stays exactly zero,
    so the dense-slim and stripe exports keep the sparsity the skeleton found."""

    def __init__(self, model: nn.Module):
        self._frozen = []
        for name in skeleton_layers(model):
            weight = model.get_submodule(name).weight
            dead = ~alive_stripes(model.get_submodule(name))
            if dead.any():
                self._frozen.append((weight, dead.unsqueeze(1).expand_as(weight).clone()))

    def frozen(self) -> list:
        return self._frozen


def alive_stripes(conv: nn.Conv2d) -> torch.Tensor:
    """(N, K, K) bool: surviving stripes, from the skeleton while it is attached, else from the weight."""
    if parametrize.is_parametrized(conv, "weight"):
        return conv.parametrizations.weight[0].skeleton.detach() != 0
    return conv.weight.detach().abs().sum(dim=1) != 0


@register(SWPOptions)
class SWP(TrainingMethod):
    summary = "stripe-wise pruning: a learnable Filter Skeleton prunes kernel positions of each filter (Meng et al.)"
    paper = "https://arxiv.org/abs/2009.14410"

    def __init__(self, options: SWPOptions, seed: int = 0):
        super().__init__(options, seed)
        self.needs_calibration = options.mode == "reconstruct"  # stripes chosen and re-fitted on calibration data
        self.removable: dict[str, list[int]] = {}

    # ---------------------------------------------------------------------------- mode reconstruct
    @torch.no_grad()
    def calibrate(self, model: nn.Module, groups: list, ctx: CalibrationContext) -> None:
        """Mode reconstruct: prune ``sparsity`` of every KxK conv's stripes and re-fit the rest (stripe_fit)."""
        import copy

        from .stripe_budget import Budget, layer_costs, reduction_pct
        from .stripe_fit import reconstruct

        self.layers = [name for name in skeleton_layers(model) if name not in ctx.skip_layers]
        original = copy.deepcopy(model).eval()
        budget = Budget(self.options.budget, self.options.sparsity, ctx.macs_reduction_pct, ctx.network_macs)
        per_layer = reconstruct(model, original, self.layers, budget, ctx.batches, ctx.device, ctx.seed)
        kept, total = sum(r["stripes"] for r in per_layer.values()), sum(r["of"] for r in per_layer.values())
        self.details = {"mode": "reconstruct", "sparsity": self.options.sparsity, "stripes_kept": kept,
                        "stripes_total": total, "stripe_sparsity": round(1 - kept / max(1, total), 4),
                        "calibration_images": ctx.num_images, "layers": per_layer}
        if ctx.network_macs:  # on the stripe graph, each KxK conv in its form with fewer MACs
            costs = layer_costs(original, self.layers, next(iter(ctx.batches()))[0].to(ctx.device))
            drops = {name: r["of"] - r["stripes"] for name, r in per_layer.items()}
            self.details |= {"macs_reduction_pct_stripe_graph": round(reduction_pct(costs, drops, ctx.network_macs), 2),
                             "macs_target_pct": ctx.macs_reduction_pct}

    # --------------------------------------------------------------------------------- training hooks
    def begin(self, model: nn.Module, groups: list, final_kept: dict[str, int] | None = None,
              rounding: Rounding | None = None) -> None:
        """Attach a skeleton to every KxK conv; remember the block-internal groups (their filters may go).
        The kept counts and rounding of the soft methods are unused: SWP decides its counts at the end
        (``allocate``), where surgery rounds them."""
        self.layers = skeleton_layers(model)
        for name in self.layers:
            conv = model.get_submodule(name)
            parametrize.register_parametrization(conv, "weight", Skeleton(conv.out_channels, conv.kernel_size))
            if self.options.mode == "finetune":
                init_from_stripe_norms(conv)
        self.groups = {info.key: info for info in groups if not info.residual and not info.custom_slots}
        self._frozen: list = []
        self.history: list[dict] = []
        self.before_step(model)

    def skeletons(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {name: model.get_submodule(name).parametrizations.weight[0].skeleton for name in self.layers}

    @torch.no_grad()
    def before_step(self, model: nn.Module) -> None:
        """After backward: add alpha * sign(I) to I's gradient, prune |I| <= delta, zero dead filters' BN."""
        frozen = []
        for skeleton in self.skeletons(model).values():
            if skeleton.grad is not None:
                skeleton.grad.add_(self.options.alpha * torch.sign(skeleton))
            pruned = skeleton.abs() <= self.options.threshold
            skeleton[pruned] = 0
            frozen.append((skeleton, pruned))
        for info in self.groups.values():
            dead = self._dead_filters(model, info)
            if dead.any():
                for layer, slot in info.norm_slots.items():
                    norm = model.get_submodule(layer)
                    idx = layer_positions(slot, torch.nonzero(dead).flatten().tolist())
                    mask = torch.zeros_like(norm.weight, dtype=torch.bool)
                    mask[idx] = True
                    frozen += [(norm.weight, mask), (norm.bias, mask)]
                    norm.weight[mask] = 0
                    norm.bias[mask] = 0
        self._frozen = frozen

    def frozen(self) -> list:
        return self._frozen

    def state_dict(self) -> dict:
        """What an epoch checkpoint keeps besides the model (whose state holds the skeletons)."""
        return {"history": self.history}

    def load_state(self, model: nn.Module, state: dict) -> None:
        """The skeletons came back with the model's state; masks follow from them at the next step."""
        self.history = list(state["history"])
        self.details = {"mode": self.options.mode, "alpha": self.options.alpha, "threshold": self.options.threshold,
                        "history": self.history}

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """Mode finetune: give every filter's skeleton back its max |I| = 1 (the weight takes the scale)."""
        if self.options.mode == "finetune":
            for name in self.layers:
                rescale_filters(model.get_submodule(name))

    def end_epoch(self, model: nn.Module, epoch: int) -> None:
        stripes = self.stripe_counts(model)
        total = sum(t for _, t in stripes.values())
        kept = sum(k for k, _ in stripes.values())
        self.history.append({"epoch": epoch, "stripes_kept": kept, "stripes_total": total,
                             "stripe_sparsity": round(1 - kept / max(1, total), 4)})
        self.details = {"mode": self.options.mode, "alpha": self.options.alpha, "threshold": self.options.threshold,
                        "history": self.history}

    @torch.no_grad()
    def finish(self, model: nn.Module) -> None:
        """Merge I into W (pruned stripes become exact zeros) and drop the parametrizations."""
        self.before_step(model)
        for name in self.layers:
            parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
        self.removable = {key: torch.nonzero(self._dead_filters(model, info)).flatten().tolist()
                          for key, info in self.groups.items()}
        per_layer = self.stripe_counts(model)
        kept, total = sum(k for k, _ in per_layer.values()), sum(t for _, t in per_layer.values())
        self.details = {**self.details, "mode": self.options.mode, "alpha": self.options.alpha,
                        "threshold": self.options.threshold, "stripes_kept": kept, "stripes_total": total,
                        "stripe_sparsity": round(1 - kept / max(1, total), 4),
                        "layers": {n: {"stripes": k, "of": t} for n, (k, t) in per_layer.items()},
                        "filters_without_stripes": {k: len(v) for k, v in self.removable.items() if v}}

    # ----------------------------------------------------------------------------- surgery interface
    def score(self, info, group) -> torch.Tensor:
        dead = set(self.removable.get(info.key, []))
        return torch.tensor([0.0 if c in dead else 1.0 for c in range(info.channels)])

    def allocate(self, space: AllocationSpace) -> Allocation:
        """Every filter without a stripe goes (surgery rounds the kept counts up to the plan's multiple)."""
        return Allocation({p.info.key: p.info.channels - len(self.removable.get(p.info.key, [])) for p in space.plans},
                          rounding="up")

    def choose(self, key: str, scores: torch.Tensor, keep: int, slices: int) -> list[int]:
        return self.removable.get(key, [])[: max(0, scores.numel() - keep)]

    @classmethod
    def finetune_hooks(cls, model: nn.Module) -> "StripeFreeze":
        return StripeFreeze(model)

    # -------------------------------------------------------------------------------------- helpers
    def stripe_counts(self, model: nn.Module) -> dict[str, tuple[int, int]]:
        """(surviving, all) stripes of every skeleton layer, during training or after ``finish``."""
        counts = {}
        for name in self.layers:
            alive = alive_stripes(model.get_submodule(name))
            counts[name] = (int(alive.sum()), alive.numel())
        return counts

    def _dead_filters(self, model: nn.Module, info) -> torch.Tensor:
        """Channels of the group whose every producing conv has no stripe left."""
        dead = torch.ones(info.channels, dtype=torch.bool)
        for layer, slot in info.producer_slots.items():
            conv = model.get_submodule(layer)
            if layer not in self.layers:
                return torch.zeros(info.channels, dtype=torch.bool)
            alive = alive_stripes(conv).flatten(1).any(1)
            channel_alive = torch.zeros(info.channels, dtype=torch.bool)
            channel_alive[slot.root_idx.cpu()] = alive.cpu()[slot.layer_idx.cpu()]
            dead &= ~channel_alive
        return dead
