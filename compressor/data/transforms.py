"""The few image transforms the pipeline needs, written on torch tensors (no torchvision).

One :class:`ImageTransform` maps a uint8 ``(C, H, W)`` array to a normalised float32 tensor of the
network's input shape:

- eval: pixels to 0..1 -> channel conversion -> (shorter side resized to ``resize`` and center-cropped
  to the input size if ``resize`` is set; else resized to the input size if the image differs) ->
  normalise. Resizing is bilinear with antialiasing (as torchvision's ``Resize(antialias=True)``).
- train: the same, plus the recipe's augmentation: ``random_resized_crop`` (scale 0.08-1, ratio 3/4-4/3,
  replacing resize/center-crop), ``random_crop_padding`` (zero padding then a random crop back, CIFAR
  style) and ``hflip`` (p = 0.5), in that order, before normalisation.

Randomness comes only from the ``torch.Generator`` passed in, so augmentation is reproducible.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..config import Augment

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


class ImageTransform:
    """``transform(image_uint8_chw, generator) -> float32 (C, H, W)``; ``augment=None`` is the eval path."""

    def __init__(self, size: tuple[int, int], channels: int, mean: tuple[float, ...], std: tuple[float, ...],
                 resize: int | None = None, augment: Augment | None = None):
        self.size = size
        self.channels = channels
        self.resize = resize
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        x = torch.from_numpy(image.astype(np.float32)).div_(255.0)
        x = match_channels(x, self.channels)
        aug = self.augment
        if aug is not None and aug.random_resized_crop:
            x = random_resized_crop(x, self.size, generator)
        else:
            x = fit(x, self.size, self.resize)
        if aug is not None and aug.random_crop_padding:
            x = pad_random_crop(x, aug.random_crop_padding, generator)
        if aug is not None and aug.hflip and torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(-1)
        return (x - self.mean) / self.std

    def batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A uint8 ``(B, C, H, W)`` batch already at the network's size and channels (data/memory.py), with the
        crop/flip augmentation drawn per batch: the same arithmetic as ``__call__`` image by image."""
        aug = self.augment
        if aug is not None and aug.random_resized_crop:
            raise ValueError("random_resized_crop is applied image by image")
        padding = aug.random_crop_padding if aug is not None else 0
        flips = aug is not None and aug.hflip
        if padding or flips:
            images = crop_and_flip(images, padding, flips, generator)
        return (images.float().div_(255.0) - self.mean) / self.std


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert grey (1), grey+alpha (2), RGB (3) or RGBA (4) to ``channels`` (1, 3, or 4 from 4)."""
    have = x.shape[0]
    if have == channels:
        return x
    if channels == 3:
        return x[:3] if have == 4 else x[:1].expand(3, -1, -1)
    if channels == 1:
        if have >= 3:
            weights = torch.tensor(_LUMA, dtype=x.dtype).view(3, 1, 1)
            return (x[:3] * weights).sum(0, keepdim=True)
        return x[:1]
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a float ``(C, H, W)`` tensor to ``size`` (H, W)."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    out = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the center ``size``; an image smaller than that is zero-padded first (as torchvision)."""
    th, tw = size
    h, w = x.shape[1:]
    if h < th or w < tw:
        ph, pw = max(th - h, 0), max(tw - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[1:]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[:, top:top + th, left:left + tw]


def fit(x: torch.Tensor, size: tuple[int, int], shorter_side: int | None) -> torch.Tensor:
    """Eval geometry: resize the shorter side and center-crop, or resize straight to ``size``."""
    if shorter_side is None:
        return resize(x, size)
    h, w = x.shape[1:]
    if h <= w:
        new = (shorter_side, int(shorter_side * w / h))
    else:
        new = (int(shorter_side * h / w), shorter_side)
    return center_crop(resize(x, new), size)


def pad_random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad every side by ``padding`` then crop a random window of the original size."""
    h, w = x.shape[1:]
    padded = F.pad(x, (padding, padding, padding, padding))
    top = int(torch.randint(0, 2 * padding + 1, (1,), generator=generator))
    left = int(torch.randint(0, 2 * padding + 1, (1,), generator=generator))
    return padded[:, top:top + h, left:left + w]


def crop_and_flip(images: torch.Tensor, padding: int, flips: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Per image of a ``(B, C, H, W)`` batch: zero-pad by ``padding``, crop a random window of the original size
    and (``flips``) mirror it with p = 0.5, all in one gather."""
    b, c, h, w = images.shape
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator) if padding else torch.zeros(b, dtype=torch.long)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator) if padding else torch.zeros(b, dtype=torch.long)
    columns = torch.arange(w)
    if flips:
        flip = torch.rand(b, generator=generator) < 0.5
        columns = torch.where(flip[:, None], columns.flip(0), columns)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]
    cols = (left[:, None] + columns)[:, None, None, :]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
    """ImageNet-style crop (torchvision's RandomResizedCrop parameters), resized to ``size``."""
    top, left, h, w = _rrc_box(x.shape[1], x.shape[2], generator)
    return resize(x[:, top:top + h, left:left + w], size)


def _rrc_box(height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    area = height * width
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (RRC_SCALE[0] + u[0] * (RRC_SCALE[1] - RRC_SCALE[0]))
        ratio = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    return _central_box(height, width)


def _central_box(height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's fallback: the largest central crop whose ratio lies within RRC_RATIO."""
    ratio = width / height
    if ratio < RRC_RATIO[0]:
        w, h = width, int(round(width / RRC_RATIO[0]))
    elif ratio > RRC_RATIO[1]:
        h, w = height, int(round(height * RRC_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
