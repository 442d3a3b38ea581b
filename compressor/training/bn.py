"""Re-estimating BatchNorm statistics after surgery.

Removing channels changes the statistics every later BatchNorm sees; re-estimating running mean/var on
a few thousand training images (no labels, no gradient) recovers much of the retrain-free accuracy.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..progress import track


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device: torch.device) -> int:
    """Replace every BatchNorm's running statistics by their average over ``loader``; returns images seen."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    saved = {m: m.momentum for m in norms}
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over batches (equal weight per batch)
    model.train()
    seen = 0
    try:
        for images, _ in track(loader, "re-estimate BatchNorm"):
            if images.shape[0] < 2:  # BatchNorm cannot take statistics of a lone image (1x1 maps)
                continue
            model(images.to(device, non_blocking=True))
            seen += images.shape[0]
    finally:
        for m, momentum in saved.items():
            m.momentum = momentum
        model.train(was_training)
    return seen
