"""Procedurally generated detection scenes: 64x64 RGB images with 1-4 filled shapes of 3 classes.

Every scene is a pure function of ``(seed, index)``: its numpy Generator is seeded with
``seed * 1_000_003 + index``, so a dataset needs no files and never changes. The background is a random
two-colour linear gradient plus pixel noise; the objects are a filled rectangle (class 0), a filled ellipse
(class 1) and a filled triangle pointing up, down, left or right (class 2), each 8-28 px on a side, in a
colour chosen to differ from the background, placed so that no box is more than 30% covered by another and no two
centres are closer than 8 px (so two objects never share a cell of the stride-4 output grid).

``Scenes(count, seed)[i]`` is ``(image, target)``: the image a float tensor (3, 64, 64) normalised with the
fixed constants ``MEAN``/``STD``; the target a dict of tensors only (``encode``): the dense CenterNet-style
training targets on the 16x16 grid and the ground truth padded to ``MAX_OBJECTS`` boxes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

SIZE, STRIDE, NUM_CLASSES, MAX_OBJECTS = 64, 4, 3, 4
GRID = SIZE // STRIDE
CLASSES = ("rectangle", "ellipse", "triangle")
MIN_SIDE, MAX_SIDE = 8, 28
MEAN = (0.51, 0.51, 0.51)  # measured over 500 generated scenes: per-channel mean 0.50-0.52, std 0.235-0.245
STD = (0.24, 0.24, 0.24)


def scene(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: image (64, 64, 3) float32 in [0, 1], boxes (n, 4) x1,y1,x2,y2 pixels, labels (n,)."""
    rng = np.random.default_rng(seed * 1_000_003 + index)
    image = _background(rng)
    boxes = _place(rng, int(rng.integers(1, MAX_OBJECTS + 1)))
    labels = rng.integers(0, NUM_CLASSES, size=len(boxes))
    base = image.reshape(-1, 3).mean(0)
    for box, label in zip(boxes, labels):
        mask = _shape_mask(rng, int(label), box)
        image[mask] = _colour(rng, base)
    return image, boxes.astype(np.float32), labels.astype(np.int64)


def _background(rng: np.random.Generator) -> np.ndarray:
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    t = (xs * math.cos(angle) + ys * math.sin(angle))
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    image = a + (b - a) * t[..., None]
    image = image + rng.normal(0, rng.uniform(0.02, 0.08), image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _place(rng: np.random.Generator, count: int) -> np.ndarray:
    """Up to ``count`` integer boxes (at least one): no box more than 30% covered by another, centres >= 8 px
    apart (50 tries each)."""
    boxes: list[np.ndarray] = []
    for _ in range(count):
        for _try in range(50):
            w, h = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2)
            x1, y1 = rng.integers(0, SIZE - w + 1), rng.integers(0, SIZE - h + 1)
            box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float64)
            if all(_covered(box, other) <= 0.3 and _centre_gap(box, other) >= 8 for other in boxes):
                boxes.append(box)
                break
    return np.stack(boxes)


def _covered(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of the smaller of two boxes that their intersection covers."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _centre_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))


def _shape_mask(rng: np.random.Generator, label: int, box: np.ndarray) -> np.ndarray:
    """Boolean (64, 64) mask of the shape inscribed in ``box``, tested at pixel centres."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    x1, y1, x2, y2 = box
    inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    if label == 0:
        return inside
    u, v = (xs - x1) / (x2 - x1), (ys - y1) / (y2 - y1)  # 0..1 across the box
    if label == 1:
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    direction = int(rng.integers(0, 4))  # apex up, down, left, right
    along, across = [(1 - v, u), (v, u), (1 - u, v), (u, v)][direction]
    return inside & (np.abs(across - 0.5) <= 0.5 * along)


def _colour(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A random colour at least 0.35 (RGB, L2) away from the background's mean colour."""
    colour = rng.uniform(0, 1, 3)
    for _ in range(20):
        if np.linalg.norm(colour - base) >= 0.35:
            break
        colour = rng.uniform(0, 1, 3)
    return colour.astype(np.float32)


def gaussian_radius(width: float, height: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius (in grid cells, for a box of ``width`` x ``height`` cells): the largest centre
    shift that keeps IoU >= ``min_overlap`` (the smallest of its three cases)."""
    b1 = height + width
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * width * height * (1 - min_overlap) / (1 + min_overlap))) / 2
    b2 = 2 * (height + width)
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * (1 - min_overlap) * width * height)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    r3 = (-b3 + math.sqrt(b3 ** 2 - 4 * a3 * (min_overlap - 1) * width * height)) / 2
    return min(r1, r2, r3)


def encode(boxes: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Training targets on the 16x16 grid plus padded ground truth, for one image.

    ``heatmap`` (K, 16, 16): a Gaussian per object peaking at 1 in its centre cell (max over objects);
    ``box`` (4, 16, 16): at centre cells, (cx/4 - col, cy/4 - row, log(w/4), log(h/4)), else 0;
    ``mask`` (1, 16, 16): 1 at centre cells; ``boxes`` (4, 4) pixels and ``labels`` (4,) padded with -1.
    """
    heatmap = np.zeros((NUM_CLASSES, GRID, GRID), np.float32)
    box = np.zeros((4, GRID, GRID), np.float32)
    mask = np.zeros((1, GRID, GRID), np.float32)
    rows, cols = np.mgrid[0:GRID, 0:GRID]
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        cx, cy, w, h = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE, (x2 - x1) / STRIDE, (y2 - y1) / STRIDE
        col, row = min(int(cx), GRID - 1), min(int(cy), GRID - 1)
        sigma = (2 * max(0, int(gaussian_radius(w, h))) + 1) / 6
        g = np.exp(-((cols - col) ** 2 + (rows - row) ** 2) / (2 * sigma ** 2))
        heatmap[label] = np.maximum(heatmap[label], g)
        box[:, row, col] = (cx - col, cy - row, math.log(w), math.log(h))
        mask[0, row, col] = 1
    padded = np.zeros((MAX_OBJECTS, 4), np.float32)
    padded_labels = np.full(MAX_OBJECTS, -1, np.int64)
    padded[: len(boxes)], padded_labels[: len(labels)] = boxes, labels
    return {"heatmap": torch.from_numpy(heatmap), "box": torch.from_numpy(box), "mask": torch.from_numpy(mask),
            "boxes": torch.from_numpy(padded), "labels": torch.from_numpy(padded_labels)}


def normalise(image: np.ndarray) -> torch.Tensor:
    """(64, 64, 3) in [0, 1] -> (3, 64, 64) float tensor, normalised with the fixed MEAN/STD."""
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return (tensor - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


class Scenes(Dataset):
    """``count`` generated scenes; item ``i`` is determined by ``(seed, i)`` alone."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        image, boxes, labels = scene(self.seed, index)
        return normalise(image), encode(boxes, labels)
