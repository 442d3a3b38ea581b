"""Procedurally generated segmentation scenes: 64x64 RGB images and their per-pixel class masks.

A scene is a background (a random two-colour linear gradient plus pixel noise) with 1-4 objects painted
over it in order, so later objects occlude earlier ones. Classes: 0 background, 1 rectangle (axis aligned),
2 ellipse (axis aligned), 3 triangle (roughly equilateral, randomly rotated). Objects are 8-30 px across and
get a random colour kept away from the background's mean colour. Everything is drawn with torch ops on a
coordinate grid from one ``torch.Generator`` seeded with ``seed * 1_000_003 + index``, so item ``index`` of
``Scenes(count, seed)`` is the same on every machine, in every order, with any number of workers.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

SIZE = 64
NUM_CLASSES = 4  # background + 3 shapes
CLASS_NAMES = ("background", "rectangle", "ellipse", "triangle")
# per-channel mean/std of the generated images (measured over 2000 scenes, rounded); fixed so that every
# split and every deployment normalises the same way
MEAN = (0.50, 0.50, 0.50)
STD = (0.24, 0.24, 0.24)
_STREAM = 1_000_003


def scene(generator: torch.Generator, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """One raw scene: image float (3, size, size) in [0, 1] and mask long (size, size)."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    image, mean_colour = _background(generator, xs, ys)
    mask = torch.zeros(size, size, dtype=torch.long)
    count = int(torch.randint(1, 5, (1,), generator=generator))
    for _ in range(count):
        label = int(torch.randint(1, NUM_CLASSES, (1,), generator=generator))
        inside = _SHAPES[label](generator, xs, ys)
        colour = _object_colour(generator, mean_colour)
        image = torch.where(inside, colour[:, None, None], image)
        mask[inside] = label
    noise = 0.06 * torch.randn(image.shape, generator=generator)
    return (image + noise).clamp(0.0, 1.0), mask


def _uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _background(generator: torch.Generator, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear gradient between two random colours along a random direction; also its mean colour."""
    start, end = torch.rand(3, generator=generator), torch.rand(3, generator=generator)
    angle = float(_uniform(generator, 0.0, 2 * math.pi))
    along = xs * math.cos(angle) + ys * math.sin(angle)
    t = (along - along.min()) / (along.max() - along.min())
    image = start[:, None, None] + (end - start)[:, None, None] * t
    return image, (start + end) / 2


def _object_colour(generator: torch.Generator, background: torch.Tensor) -> torch.Tensor:
    """A random colour at least 0.45 (L1 over RGB) from the background's mean, so objects stay visible."""
    colour = torch.rand(3, generator=generator)
    for _ in range(20):
        if float((colour - background).abs().sum()) >= 0.45:
            break
        colour = torch.rand(3, generator=generator)
    return colour


def _centre(generator: torch.Generator, size: int) -> tuple[float, float]:
    cx, cy = _uniform(generator, 4.0, size - 4.0, 2).tolist()
    return cx, cy


def _rectangle(generator: torch.Generator, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    cx, cy = _centre(generator, xs.shape[-1])
    width, height = _uniform(generator, 8.0, 30.0, 2).tolist()
    return ((xs - cx).abs() <= width / 2) & ((ys - cy).abs() <= height / 2)


def _ellipse(generator: torch.Generator, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    cx, cy = _centre(generator, xs.shape[-1])
    rx, ry = _uniform(generator, 4.0, 15.0, 2).tolist()
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def _triangle(generator: torch.Generator, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Three vertices at radius 5-17 px around a centre, 120 degrees apart (jittered), randomly rotated."""
    cx, cy = _centre(generator, xs.shape[-1])
    radius = float(_uniform(generator, 5.0, 17.0))
    base = float(_uniform(generator, 0.0, 2 * math.pi))
    angles = base + torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + _uniform(generator, -0.25, 0.25, 3)
    vx, vy = cx + radius * torch.cos(angles), cy + radius * torch.sin(angles)
    sides = []
    for a, b in ((0, 1), (1, 2), (2, 0)):  # sign of the cross product of each edge with the point
        sides.append((vx[b] - vx[a]) * (ys - vy[a]) - (vy[b] - vy[a]) * (xs - vx[a]))
    cross = torch.stack(sides)
    return (cross >= 0).all(0) | (cross <= 0).all(0)


_SHAPES = {1: _rectangle, 2: _ellipse, 3: _triangle}


def normalise(image: torch.Tensor) -> torch.Tensor:
    """(image - MEAN) / STD per channel, for (3, H, W) or (N, 3, H, W)."""
    mean = torch.tensor(MEAN, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(STD, dtype=image.dtype).view(3, 1, 1)
    return (image - mean) / std


class Scenes(Dataset):
    """``count`` scenes; item ``i`` is generated from ``seed * 1_000_003 + i`` and returns (normalised image
    float (3, 64, 64), mask long (64, 64))."""

    def __init__(self, count: int, seed: int, size: int = SIZE):
        if count < 0 or count >= _STREAM:
            raise ValueError(f"count must be in [0, {_STREAM}), got {count}")
        self.count, self.seed, self.size = count, seed, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.seed * _STREAM + index)
        image, mask = scene(generator, self.size)
        return normalise(image), mask
