"""Train TinyUNet from scratch on the generated scenes and save the float32 state_dict (``unet.pt``).

    python -m examples.segmentation.train [--epochs N] [--out examples/segmentation/unet.pt] [--threads 1]

AdamW with a one-epoch linear warm-up and cosine decay per step, batch 32, random horizontal/vertical flips
(applied to image and mask together). Loss and metric are the task's (``task.loss``, ``task.metric``).

Measured (2 shared CPU cores, 1 thread, torch 2.13.0+cpu), with the exact command
``.venv/bin/python -m examples.segmentation.train`` (defaults: 8 epochs, seed 0, lr 3e-3, width 16):
wall 153 s (155 s with start-up); val mIoU 90.02 (pixel acc 98.67) after epoch 8; test (300 scenes) mIoU 91.80,
pixel acc 98.95, per-class IoU background 99.3, rectangle 92.0, ellipse 91.4, triangle 84.5. Checkpoint 0.8 MB.
(A 12-epoch run reached val 92.31 / test 93.66 in 337 s wall, over budget on the loaded machine.)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from . import task
from .model import build

DEFAULT_OUT = Path(__file__).with_name("unet.pt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16)
    return parser.parse_args(argv)


def schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def flip(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample left-right and/or up-down with probability 1/2 each, image and mask alike."""
    for dim in (-1, -2):
        chosen = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(chosen[:, None, None, None], images.flip(dim), images)
        masks = torch.where(chosen[:, None, None], masks.flip(dim), masks)
    return images, masks


def train_epoch(model: nn.Module, loader, optimizer, scheduler, generator: torch.Generator) -> float:
    model.train()
    total, batches = 0.0, 0
    for images, masks in loader:
        images, masks = flip(images, masks, generator)
        value = task.loss(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        scheduler.step()
        total, batches = total + float(value.detach()), batches + 1
    return total / max(1, batches)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    data = task.loaders(args.seed, args.batch_size)
    model = build(width=args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = len(data["train"])
    scheduler = schedule(optimizer, warmup=steps, total=steps * args.epochs)
    generator = torch.Generator().manual_seed(args.seed + 1)
    for epoch in range(1, args.epochs + 1):
        mean_loss = train_epoch(model, data["train"], optimizer, scheduler, generator)
        val = task.metric(model, data["val"], "cpu")
        print(f"epoch {epoch:2d}  loss {mean_loss:.4f}  val mIoU {val['miou']:.2f}  pixel acc {val['pixel_acc']:.2f}"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    test = task.metric(model, data["test"], "cpu")
    print(f"test mIoU {test['miou']:.2f}  pixel acc {test['pixel_acc']:.2f}  images {test['images']}  "
          f"wall {time.perf_counter() - start:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
