"""Top-1 evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..progress import track
from . import distributed


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # top-1 in percent, 0-100
    loss: float
    images: int


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
