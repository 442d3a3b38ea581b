"""SFP, HFP and GHFP: pruning during training, from soft to hard.

- SFP: "Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks", He, Kang, Dong, Fu, Yang,
  IJCAI 2018, https://arxiv.org/abs/1808.06866, reference code he-y/soft-filter-pruning (919c399).
  After every epoch the filters with the smallest L2 norm are zeroed but keep training, so they may grow
  back; the last epoch's selection is removed.
- HFP: the same selection, but pruned filters are zeroed and frozen for good (the hard end).
- GHFP: "Gradually Hard Filter Pruning", Cai, An, Xu, arXiv 2011.03170 (IJCNN 2021). No official code; the
  schedules below are those of the first author's later public code (cailinhang/PGMPF, see
  ../shared/METHODS.md §3.2): at the end of epoch e (0-based, E epochs) a fraction
  lambda(e) = 1 - (1 - (e+1)/E)^p (p = 3) of the pruned filters is hard, the rest soft; soft-pruned weights
  are multiplied by d(e) = d0 exp(-alpha e), alpha = -ln(sigma / (d0 + 0.01 sigma)) / E, d = 0 in the last
  10% of epochs (d0 = 0 zeroes them, as SFP); the kept fraction follows ``keep_schedule``: constant, or
  poly keep(e) = 1 - (1 - r)(1 - (1 - (e+1)/E)^3), or exp keep(e) = r + (1 - r) exp(-k e), k = ln 4 / (E/8),
  both fixed at r in the last 5% of epochs.

Masks live on dependency-graph groups: a pruned channel is pruned in every layer of its group. Soft: the
producing convolutions' filters are zeroed (or decayed) once per epoch, at re-selection, and then train
freely (BatchNorm untouched, as the reference; masking BN would stop the gradient that lets filters grow
back). A zeroed filter's channel outputs its BatchNorm shift, so it receives gradient, and can grow back,
only where that shift keeps the following ReLU open (the question of the reference's open issue #36).
Hard: producing filters, their BatchNorm scale and shift, the consuming layers' input slices and any custom
producer (zero-pad shortcut) outputs are zero, get no gradient and no momentum or weight-decay
drift (the training loop's frozen elements), after every optimizer step. A hard filter stays hard. When
training ends every pruned channel is made hard, and surgery removes exactly those channels: the masked
and the physically pruned networks compute the same function.

Departures from the reference code, each controlled by the recipe:
- Residual streams: the reference masks every conv and keeps the residual width (an index_add into a
  full-width tensor at conversion). We remove channels physically: ``residual: internal`` selects only
  block-internal groups; ``coupled`` masks and removes residual-stream channels across a stage.
- Fine-tuning mode is the default use (a trained checkpoint, ``epochs`` of mask training with the recipe's
  fine-tuning optimizer); ``model.checkpoint: null`` with a from-scratch learning rate trains from scratch
  as the papers do (200 epochs there).
- Masks are re-selected once per epoch (``epoch_prune=1`` in the reference) and once before training.
- Kept counts follow our rounding (``pruning.round_to``); the final counts come from ``pruning.ratio`` (the
  fraction removed; the reference's ``--rate`` is the fraction kept) or a MACs/params target.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config.methods import GHFPOptions, HFPOptions, SFPOptions
from .base import Allocation, AllocationSpace, Rounding, TrainingMethod, register
from .soft_masks import GroupMasks


# ------------------------------------------------------------------------------------------- schedules
def hard_fraction(epoch: int, total: int, exponent: float | None) -> float:
    """lambda(e) at the end of epoch e (0-based; -1: before training). None means SFP (always 0, all soft);
    0 means HFP (always 1, all hard)."""
    if exponent is None:
        return 0.0
    if exponent == 0:
        return 1.0
    return 1 - (1 - min(max(epoch + 1, 0), total) / total) ** exponent


def keep_fraction(epoch: int, total: int, final: float, schedule: str) -> float:
    """Fraction of a group's channels kept at the end of epoch ``epoch`` (0-based; -1: before training)."""
    if schedule == "constant" or epoch >= 0.95 * total:
        return final
    if schedule == "poly":
        return 1 - (1 - final) * (1 - (1 - (epoch + 1) / total) ** 3)
    rate = math.log(4) / (total / 8)
    return min(1.0, final + (1 - final) * math.exp(-rate * epoch))


def decay_factor(epoch: int, total: int, start: float, floor: float) -> float:
    """d(e) for soft-pruned weights; 0 when ``start`` is 0 or in the last 10% of epochs."""
    if start == 0 or epoch >= 0.9 * total:
        return 0.0
    alpha = -math.log(floor / (start + 0.01 * floor)) / total
    return start * math.exp(-alpha * max(epoch, 0))


# ---------------------------------------------------------------------------------------------- method
class _SoftFilterPruning(TrainingMethod):
    paper = "https://arxiv.org/abs/1808.06866"
    exponent: float | None = None

    def begin(self, model: nn.Module, groups: list, final_kept: dict[str, int], rounding: Rounding) -> None:
        """Initial selection (before the first epoch), from the groups and their final kept counts."""
        self.masks = GroupMasks(model, groups, final_kept, rounding)
        self.history: list[dict] = []
        self._select(model, -1)

    def frozen(self) -> list:
        return self.masks.frozen()

    def state_dict(self) -> dict:
        """What an epoch checkpoint keeps of the masks (the weights are in the model's state)."""
        return {"pruned": self.masks.pruned, "hard": {k: sorted(v) for k, v in self.masks.hard.items()},
                "history": self.history}

    def load_state(self, model: nn.Module, state: dict) -> None:
        """Masks as checkpointed, on a model whose weights were just restored (hard channels re-frozen)."""
        self.masks.restore(model, state["pruned"], state["hard"])
        self.history = list(state["history"])
        self.details = {"epochs": self.options.epochs, "schedule": self.history}

    def end_epoch(self, model: nn.Module, epoch: int) -> None:
        self._select(model, epoch - 1)

    def finish(self, model: nn.Module) -> None:
        """Every pruned channel becomes hard: the masked network now computes what the pruned one will."""
        self.masks.harden_all(model)

    def release(self) -> None:
        self.masks.release()

    def score(self, info, group) -> torch.Tensor:
        pruned = set(self.masks.pruned.get(info.key, []))
        return torch.tensor([0.0 if c in pruned else 1.0 for c in range(info.channels)])

    def allocate(self, space: AllocationSpace) -> Allocation:
        """The final masks decide: each group keeps what its last selection kept (already a rounded count)."""
        return Allocation({p.info.key: p.info.channels - len(self.masks.pruned.get(p.info.key, [])) for p in space.plans})

    def choose(self, key: str, scores: torch.Tensor, keep: int, slices: int) -> list[int] | None:
        return sorted(self.masks.pruned.get(key, []))

    def _select(self, model: nn.Module, epoch: int) -> None:
        """Re-select at the end of epoch ``epoch`` (0-based; -1 before training)."""
        total = self.options.epochs
        keep = lambda final: keep_fraction(epoch, total, final, self.options.keep_schedule)  # noqa: E731
        hard = hard_fraction(epoch, total, self.exponent)
        decay = decay_factor(epoch, total, self.options.decay_start, self.options.decay_floor)
        counts = self.masks.reselect(model, keep, hard, decay, self.options.criterion)
        self.history.append({"epoch": epoch + 1, "hard_fraction": round(hard, 4), "decay": decay, **counts})
        self.details = {"epochs": total, "schedule": self.history}


@register(SFPOptions)
class SFP(_SoftFilterPruning):
    summary = "soft filter pruning: smallest-norm filters zeroed each epoch, free to grow back (He et al., IJCAI 2018)"
    exponent = None


@register(HFPOptions)
class HFP(_SoftFilterPruning):
    summary = "hard filter pruning: smallest-norm filters zeroed and frozen for good (the hard end of GHFP)"
    exponent = 0.0


@register(GHFPOptions)
class GHFP(_SoftFilterPruning):
    summary = "gradually hard filter pruning: soft early, hard late, cubic ramp (Cai et al., IJCNN 2021)"
    paper = "https://arxiv.org/abs/2011.03170"

    @property
    def exponent(self) -> float:  # type: ignore[override]
        return self.options.hard_exponent
