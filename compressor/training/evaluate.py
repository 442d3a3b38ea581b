"""Top-1 evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..progress import track


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # top-1 in percent, 0-100
    loss: float
    images: int


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, description: str = "evaluate") -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` (in eval mode) over ``loader``."""
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
    if total == 0:
        return EvalResult(accuracy=float("nan"), loss=float("nan"), images=0)
    return EvalResult(accuracy=100.0 * correct / total, loss=loss / total, images=total)
