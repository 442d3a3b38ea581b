"""The segmentation task as the pipeline sees it: data loaders, the training loss and the evaluation metric.

Entry points (referenced as ``examples.segmentation.task:loaders`` and so on):

* :func:`loaders` -- train/val/test/calibration ``DataLoader`` s of generated scenes (``data.Scenes``).
* :func:`loss` -- cross-entropy of the main logits + 0.4 x cross-entropy of the auxiliary logits.
* :func:`metric` -- mean IoU and pixel accuracy (0-100) from a confusion matrix over every pixel.

Splits: train 2000, val 200, calibration 128 scenes from seeds ``3*seed``, ``3*seed + 1`` and
``3*seed + 2`` (distinct for every split and every recipe seed); test 300 scenes from the fixed seed
``TEST_SEED``, the same whatever the recipe seed, so that test numbers are comparable across runs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import NUM_CLASSES, Scenes

SIZES = {"train": 2000, "val": 200, "test": 300, "calibration": 128}
TEST_SEED = 987_654_321
AUX_WEIGHT = 0.4


def split_seeds(seed: int) -> dict[str, int]:
    """The generator seed of each split for recipe seed ``seed``."""
    return {"train": 3 * seed, "val": 3 * seed + 1, "calibration": 3 * seed + 2, "test": TEST_SEED}


def loaders(seed: int, batch_size: int) -> dict:
    """``{"train", "val", "test", "calibration"}`` -> DataLoader of (images (B,3,64,64) float, masks (B,64,64) long).
    Only train shuffles (with a generator seeded from ``seed``); num_workers is 0."""
    seeds = split_seeds(seed)
    out = {}
    for split, count in SIZES.items():
        dataset = Scenes(count, seeds[split])
        shuffle = split == "train"
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        out[split] = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
    return out


def _main_logits(outputs) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def loss(outputs, targets: torch.Tensor) -> torch.Tensor:
    """CE(logits, mask) + 0.4 x CE(aux_logits, mask resized (nearest) to the aux resolution). ``outputs`` is the
    model's ``(logits, aux_logits)``; a bare logits tensor is also accepted (no aux term)."""
    if not isinstance(outputs, (tuple, list)):
        return F.cross_entropy(outputs.float(), targets)
    logits, aux = outputs[0].float(), outputs[1].float()
    main = F.cross_entropy(logits, targets)
    small = F.interpolate(targets[:, None].float(), size=aux.shape[-2:], mode="nearest")[:, 0].long()
    return main + AUX_WEIGHT * F.cross_entropy(aux, small)


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion matrix (num_classes, num_classes) long: row = true class, column = predicted class."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes)
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """IoU of each class in percent (NaN where the class is neither present nor predicted)."""
    cm = cm.double()
    true_positive = cm.diag()
    union = cm.sum(0) + cm.sum(1) - true_positive
    iou = 100.0 * true_positive / union
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def miou_from_confusion(cm: torch.Tensor) -> float:
    """Mean IoU (0-100) over the classes with a non-zero union; NaN when there is none."""
    iou = iou_per_class(cm)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if bool(present.any()) else float("nan")


def pixel_accuracy(cm: torch.Tensor) -> float:
    total = int(cm.sum())
    return 100.0 * float(cm.diag().sum()) / total if total else float("nan")


def metric(model: nn.Module, loader, device) -> dict[str, float]:
    """``{"miou", "pixel_acc", "images"}`` of ``model`` over ``loader`` (argmax of the main logits); the model's
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    images = 0
    try:
        with torch.no_grad():
            for batch, masks in loader:
                logits = _main_logits(model(batch.to(device)))
                cm += confusion(logits.argmax(1).cpu(), masks, NUM_CLASSES)
                images += len(batch)
    finally:
        model.train(was_training)
    return {"miou": miou_from_confusion(cm), "pixel_acc": pixel_accuracy(cm), "images": images}
