"""Evaluation: top-1 of a classifier (here), or a custom task's metric (``training/task.py``), as one
:class:`EvalResult` whose ``accuracy`` is the task's primary value."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..progress import track
from . import distributed


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # the primary value: top-1 in percent (0-100) for a classifier, task.primary's for a custom task
    loss: float  # mean cross-entropy (a custom task: its metric's "loss", else NaN)
    images: int
    metric: str = "top1"  # the name of the primary value
    metrics: dict = field(default_factory=dict)  # everything the custom task's metric returned

    def describe(self) -> str:
        """'top-1 92.72%' or 'map50 71.20'."""
        if self.metric == "top1":
            return f"top-1 {self.accuracy:.2f}%"
        return f"{self.metric} {self.accuracy:.4g}"


def evaluate(model: nn.Module, loader, device: torch.device, description: str = "evaluate") -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` (in eval mode) over ``loader``."""
    return _result(*_sums(model, loader, device, description))


def evaluate_sharded(model: nn.Module, loader, device: torch.device, description: str = "evaluate") -> EvalResult:
    """:func:`evaluate` with the images split across the torchrun ranks (every rank gets the same exact
    result: each image is counted once, no padding); plain :func:`evaluate` outside torchrun."""
    if not distributed.active():
        return evaluate(model, loader, device, description)
    rank, world = distributed.rank(), distributed.world_size()
    shard = Subset(loader.dataset, range(rank, len(loader.dataset), world))
    local = DataLoader(shard, batch_size=loader.batch_size, num_workers=loader.num_workers)
    correct, loss, total = distributed.all_reduce_sum(list(_sums(model, local, device, description)), device)
    return _result(int(correct), loss, int(total))


@torch.no_grad()
def _sums(model: nn.Module, loader, device: torch.device, description: str) -> tuple[int, float, int]:
    was_training = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    try:
        for images, labels in track(loader, description):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            total += labels.numel()
    finally:
        model.train(was_training)
    return correct, loss, total


def _result(correct: int, loss: float, total: int) -> EvalResult:
    if total == 0:
        return EvalResult(accuracy=float("nan"), loss=float("nan"), images=0)
    return EvalResult(accuracy=100.0 * correct / total, loss=loss / total, images=total)
