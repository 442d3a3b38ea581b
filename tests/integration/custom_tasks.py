"""A tiny custom task for the integration tests (``task.kind: custom``), fast enough to run end to end in seconds.

Images are 3x16x16, generated from the recipe's seed: noise plus one bright square in one of the four quadrants.
The network (:func:`build`) has two outputs, so the multi-output paths run: ``logits`` (which quadrant, a
Linear head) and ``mask`` (where the square is, a 1x1 conv head); a dict by default, the tuple ``(logits,
mask)`` with ``model.kwargs: {as_tuple: true}``. Targets are a dict of tensors (``label``, ``mask``).

The metric's primary value is ``mae`` (the mask's mean absolute error, in percent): lower is better
(``direction: lower``); ``error`` (100 - quadrant accuracy) comes along.

Referenced from recipes as ``tests.integration.custom_tasks:loaders`` and so on (run from the repository root,
or with it on ``sys.path``). The ``bad_*`` functions are deliberately wrong, for the bad-input tests.
:func:`recipe` writes a recipe for the task and :func:`checkpoint` a trained state_dict (cached per folder).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

HERE = "tests.integration.custom_tasks"
SHAPE = (3, 16, 16)
SIZES = {"train": 320, "val": 64, "test": 128, "calibration": 64}
OFFSETS = {"train": 0, "val": 1, "test": 2, "calibration": 3}
SQUARE = 3
NOISE, COLOURS = 0.7, (0.4, 0.9)  # hard enough that the baseline makes a few mistakes and pruning costs some


# ------------------------------------------------------------------------------------------------ model
class TwoHeads(nn.Module):
    """Two conv-BN-ReLU blocks (the second strided), a third block, then two heads: ``fc`` (quadrant logits
    from the 2x2-pooled features) and ``mask`` (a 1x1 conv, upsampled back to 16x16: parameter-free after it)."""

    def __init__(self, width: int = 16, as_tuple: bool = False):
        super().__init__()
        self.as_tuple = as_tuple
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.fc = nn.Linear(2 * width * 4, 4)
        self.mask = nn.Conv2d(2 * width, 1, 1)

    def forward(self, x):
        f = self.features(x)
        logits = self.fc(F.adaptive_avg_pool2d(f, 2).flatten(1))
        mask = F.interpolate(self.mask(f), scale_factor=2.0, mode="nearest")
        return (logits, mask) if self.as_tuple else {"logits": logits, "mask": mask}


def build(width: int = 16, as_tuple: bool = False) -> TwoHeads:
    return TwoHeads(width=width, as_tuple=as_tuple)


# ------------------------------------------------------------------------------------------------- data
def scenes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, 3, 16, 16) float, labels (N,) long, masks (N, 1, 16, 16) float) from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    images = NOISE * torch.randn(count, *SHAPE, generator=g)
    masks = torch.zeros(count, 1, 16, 16)
    labels = torch.randint(0, 4, (count,), generator=g)
    corners = torch.randint(0, 8 - SQUARE + 1, (count, 2), generator=g)
    colours = COLOURS[0] + (COLOURS[1] - COLOURS[0]) * torch.rand(count, 3, generator=g)
    for i in range(count):
        top = 8 * (int(labels[i]) // 2) + int(corners[i, 0])
        left = 8 * (int(labels[i]) % 2) + int(corners[i, 1])
        images[i, :, top:top + SQUARE, left:left + SQUARE] += colours[i].view(3, 1, 1)
        masks[i, 0, top:top + SQUARE, left:left + SQUARE] = 1.0
    return images, labels, masks


class _Pairs(TensorDataset):
    """(image, {"label", "mask"}) items: a dict target, collated by the default collate into a dict of batches."""

    def __getitem__(self, index):
        image, label, mask = super().__getitem__(index)
        return image, {"label": label, "mask": mask}


def loaders(seed: int, batch_size: int) -> dict[str, DataLoader]:
    """train (shuffled by a generator seeded with ``seed``), val, test and calibration DataLoaders."""
    parts = {}
    for split, count in SIZES.items():
        shuffle = split == "train"
        parts[split] = DataLoader(_Pairs(*scenes(count, 10 * seed + OFFSETS[split])), batch_size=batch_size,
                                  shuffle=shuffle, generator=torch.Generator().manual_seed(seed) if shuffle else None)
    return parts


def _parts(outputs):
    return (outputs["logits"], outputs["mask"]) if isinstance(outputs, dict) else (outputs[0], outputs[1])


def loss(outputs, targets) -> torch.Tensor:
    logits, mask = _parts(outputs)
    return (F.cross_entropy(logits.float(), targets["label"])
            + F.binary_cross_entropy_with_logits(mask.float(), targets["mask"].float()))


def metric(model: nn.Module, loader, device) -> dict[str, float]:
    """``{"mae": 100 x mean |sigmoid(mask) - mask| (lower is better), "error": 100 - quadrant accuracy, "images"}``."""
    wrong, total, mae = 0, 0, 0.0
    with torch.no_grad():
        for images, targets in loader:
            logits, mask = _parts(model(images.to(device)))
            wrong += int((logits.argmax(1).cpu() != targets["label"]).sum())
            mae += float((mask.float().sigmoid().cpu() - targets["mask"]).abs().mean((1, 2, 3)).sum())
            total += len(images)
    return {"mae": 100.0 * mae / total, "error": 100.0 * wrong / total, "images": total}


# ------------------------------------------------------------------------------- deliberately bad inputs
def bad_loaders_keys(seed: int, batch_size: int):
    parts = loaders(seed, batch_size)
    return {"train": parts["train"], "test": parts["test"]}  # no val, no calibration


def bad_loaders_not_pair(seed: int, batch_size: int):
    parts = loaders(seed, batch_size)
    parts["val"] = [(images, targets, "extra") for images, targets in parts["val"]]  # triples
    return parts


def bad_loaders_shape(seed: int, batch_size: int):
    parts = loaders(seed, batch_size)
    parts["test"] = [(images[:, :, :8, :8], targets) for images, targets in parts["test"]]  # 8x8 instead of 16x16
    return parts


def bad_loaders_raise(seed: int, batch_size: int):
    raise FileNotFoundError("/data/scenes: no such folder")


def bad_loss_not_scalar(outputs, targets) -> torch.Tensor:
    logits, _ = _parts(outputs)
    return F.cross_entropy(logits.float(), targets["label"], reduction="none")  # one value per image


def bad_metric_no_primary(model, loader, device):
    values = metric(model, loader, device)
    return {"accuracy": 100.0 - values["error"], "images": values["images"]}  # no "mae"


# ----------------------------------------------------------------------------------- recipe + checkpoint
def checkpoint(folder: Path, width: int = 16, epochs: int = 8, seed: int = 0) -> Path:
    """A trained state_dict of :func:`build` (``folder``/custom_task_w16_s0.pt, written once; about 2 s): a
    baseline worth pruning (mae about 3.7, quadrant error about 7% on the test part)."""
    path = Path(folder) / f"custom_task_w{width}_s{seed}.pt"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is the fastest, and it does not fight a busy machine
    try:
        torch.manual_seed(seed)
        model = build(width)
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        train = loaders(seed, 32)["train"]
        for _ in range(epochs):
            for images, targets in train:
                optimiser.zero_grad()
                loss(model(images), targets).backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    torch.save(model.state_dict(), path)
    return path


def recipe(checkpoint_path: Path | None, *, name: str = "tiny_custom", model: dict | None = None,
           task: dict | None = None, pruning: dict | None = None, finetune: dict | None = None,
           export: dict | None = None, profile: dict | None = None, gates: dict | None = None) -> dict:
    """A recipe (as a dict) for the tiny task; each keyword updates its section of the defaults: l1 to 45% fewer
    MACs, 2 epochs of fine-tuning on one thread, the ONNX export with 8 parity images, the profile off (when
    switched on: batch 1 and 4, a few iterations), ``max_accuracy_drop: 100`` (points of mae)."""
    return {
        "name": name, "seed": 0,
        "model": {"arch": f"{HERE}:build", "checkpoint": None if checkpoint_path is None else str(checkpoint_path),
                  "input_shape": list(SHAPE), **(model or {})},
        "task": {"kind": "custom", "loaders": f"{HERE}:loaders", "loss": f"{HERE}:loss", "metric": f"{HERE}:metric",
                 "primary": "mae", "direction": "lower", "batch_size": 32, **(task or {})},
        "method": {"name": "l1"},
        "pruning": pruning or {"macs_reduction_pct": 45},
        "finetune": {"epochs": 2, "lr": 0.02, "weight_decay": 0.0001, "schedule": "cosine", "threads": 1,
                     **(finetune or {})},
        "export": {"onnx": True, "parity_images": 8, **(export or {})},
        "profile": {"enabled": False, "batch_sizes": [1, 4], "threads": 1, "warmup": 1, "iterations": 4, "repeats": 2,
                    **(profile or {})},
        "gates": {"max_accuracy_drop": 100.0, **(gates or {})},
    }


def write_recipe(path: Path, checkpoint_path: Path | None = None, data: dict | None = None, **sections) -> Path:
    """``data`` (a recipe dict), or :func:`recipe` of ``checkpoint_path`` and ``sections``, written as YAML."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(data if data is not None else recipe(checkpoint_path, **sections), sort_keys=False))
    return path
