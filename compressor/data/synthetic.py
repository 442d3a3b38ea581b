"""Procedurally generated images: the ``shapes`` task (10 classes, RGB, 32x32 by default).

Each image shows one shape of its class (filled disk, ring, filled square, square outline, triangle,
plus, X-cross, horizontal stripes, vertical stripes, diamond) at a random position and size, rotated by
at most +-15 degrees (so that square vs diamond, plus vs X and the two stripe directions stay apart),
in a random foreground colour on a random background gradient with enough contrast, plus Gaussian
pixel noise and up to three distractor blobs or lines. A small CNN learns it to about 95% in a few
epochs; the distractors and small shapes keep it from being trivially separable.

Stability contract: the generator is a pure function of ``(num_images, seed, image_size)`` and the
``synthetic`` source always uses the fixed split seeds in :data:`SPLIT_SEEDS` (never the recipe seed).
The shipped quickstart checkpoint ``compressor/assets/quicknet_shapes.pt`` was trained on exactly these
images: any change to this file (drawing code, parameter ranges, the order of random draws, the split
seeds) silently invalidates that checkpoint and must come with a retrained one.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import ArraySource

CLASS_NAMES = ("disk", "ring", "square", "square_outline", "triangle",
               "plus", "x_cross", "h_stripes", "v_stripes", "diamond")
SPLIT_SEEDS = {"train": 7_340_017, "test": 9_437_189}  # fixed forever: see the stability contract above
NATIVE_SIZE = 32
_CHUNK = 2048
_MAX_DISTRACTORS = 3
_MAX_ROTATION = np.deg2rad(15.0)
_SQRT_HALF = np.float32(np.sqrt(0.5))


def make_shapes(num_images: int, seed: int, image_size: int = NATIVE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``num_images`` shape images and labels: uint8 ``(N, 3, S, S)`` and int64 ``(N,)``, balanced classes.

    Deterministic for given arguments (``numpy.random.default_rng(seed)``); vectorised, ~10k images/s.
    """
    if num_images < 1 or image_size < 8:
        raise ValueError(f"make_shapes needs num_images >= 1 and image_size >= 8, got {num_images}, {image_size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images, dtype=np.int64) % len(CLASS_NAMES))
    params = _draw_params(rng, labels, image_size)
    images = np.empty((num_images, 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, num_images, _CHUNK):
        part = slice(start, min(start + _CHUNK, num_images))
        images[part] = _render({k: v[part] for k, v in params.items()}, rng, image_size)
    return images, labels


def open_synthetic(task: str, num_images: int, split: str, field: str) -> ArraySource:
    """The ``synthetic`` source: ``make_shapes`` with the fixed seed of ``split`` (train and test differ)."""
    if task != "shapes":
        raise DataError(f"{field}.task: unknown synthetic task '{task}'; use 'shapes'")
    images, labels = make_shapes(num_images, SPLIT_SEEDS[split])
    return ArraySource(field=field, where=f"synthetic shapes ({split} split)", images=images,
                       labels=labels, class_names=CLASS_NAMES)


# ------------------------------------------------------------------------------------------ parameters
def _draw_params(rng: np.random.Generator, labels: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Every per-image random quantity, drawn up front in a fixed order (part of the stability contract)."""
    n = len(labels)
    scale = size / NATIVE_SIZE
    radius = rng.uniform(6.0, 11.5, n) * scale
    margin = radius * 0.8
    params = {
        "label": labels,
        "radius": radius,
        "cx": rng.uniform(margin, size - 1 - margin),
        "cy": rng.uniform(margin, size - 1 - margin),
        "angle": rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n),
        "period": rng.uniform(0.42, 0.55, n),
        "phase": rng.uniform(0.0, 1.0, n),
        "noise": rng.uniform(0.03, 0.09, n),
        "grad_dir": rng.uniform(0.0, 2 * np.pi, n),
        "grad_amp": rng.uniform(0.0, 0.15, n),
    }
    params["bg"], params["fg"] = _colour_pairs(rng, n)
    params.update(_distractor_params(rng, n, size))
    return params


def _colour_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB in 0..1 whose luminance or colour differs clearly."""
    bg = rng.uniform(0.0, 1.0, (n, 3))
    fg = rng.uniform(0.0, 1.0, (n, 3))
    weak = _low_contrast(bg, fg)
    while weak.any():
        fg[weak] = rng.uniform(0.0, 1.0, (int(weak.sum()), 3))
        weak = _low_contrast(bg, fg)
    return bg, fg


def _low_contrast(bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
    luma = np.array([0.299, 0.587, 0.114])
    return (np.abs((fg - bg) @ luma) < 0.25) & (np.linalg.norm(fg - bg, axis=1) < 0.6)


def _distractor_params(rng: np.random.Generator, n: int, size: int) -> dict[str, np.ndarray]:
    k = _MAX_DISTRACTORS
    scale = size / NATIVE_SIZE
    return {
        "d_on": rng.uniform(0.0, 1.0, (n, k)) < 0.45,
        "d_line": rng.uniform(0.0, 1.0, (n, k)) < 0.5,
        "d_x0": rng.uniform(0, size - 1, (n, k)),
        "d_y0": rng.uniform(0, size - 1, (n, k)),
        "d_len": rng.uniform(4.0, 11.0, (n, k)) * scale,
        "d_dir": rng.uniform(0.0, np.pi, (n, k)),
        "d_rad": rng.uniform(1.0, 2.5, (n, k)) * scale,
        "d_col": rng.uniform(0.0, 1.0, (n, k, 3)),
    }


# ------------------------------------------------------------------------------------------- rendering
def _render(p: dict[str, np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    n = len(p["label"])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    img = _background(p, xs, ys)
    alpha = _shape_alpha(p, xs, ys)[:, None]
    img = img * (1 - alpha) + p["fg"][:, :, None, None].astype(np.float32) * alpha
    img = _draw_distractors(img, p, xs, ys)
    noise = rng.standard_normal((n, 3, size, size), dtype=np.float32)
    img += noise * _col(p["noise"])[:, None]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _background(p: dict[str, np.ndarray], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A linear colour gradient of random direction and amplitude around the background colour."""
    size = xs.shape[0]
    gx = _col(np.cos(p["grad_dir"]) * p["grad_amp"] / size)
    gy = _col(np.sin(p["grad_dir"]) * p["grad_amp"] / size)
    ramp = gx * (xs - size / 2) + gy * (ys - size / 2)
    return p["bg"][:, :, None, None].astype(np.float32) + ramp[:, None]


def _shape_alpha(p: dict[str, np.ndarray], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (N, S, S) of each image's shape, from a signed distance in pixels."""
    radius = _col(p["radius"])
    dx, dy = xs - _col(p["cx"]), ys - _col(p["cy"])
    cos, sin = _col(np.cos(p["angle"])), _col(np.sin(p["angle"]))
    u = (cos * dx + sin * dy) / radius
    v = (cos * dy - sin * dx) / radius
    dist = np.empty_like(u)
    for cls, shape in enumerate(_SHAPES):
        sel = p["label"] == cls
        if sel.any():
            dist[sel] = shape(u[sel], v[sel], _col(p["period"][sel]), _col(p["phase"][sel])) * radius[sel]
    return np.clip(0.5 - dist, 0.0, 1.0)


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image values as float32 ``(N, 1, 1)``, to broadcast over pixels."""
    return values.astype(np.float32)[:, None, None]


def _box(u, v, half):
    return np.maximum(np.abs(u), np.abs(v)) - half


def _cross(u, v, arm=0.26):
    return np.minimum(np.maximum(np.abs(u) - arm, np.abs(v) - 1.0), np.maximum(np.abs(v) - arm, np.abs(u) - 1.0))


def _stripes(t, period, phase):
    """Distance (normalised units) to bands of half the period's width along coordinate ``t``."""
    frac = np.mod(t / period + phase, 1.0)
    return (np.abs(frac - 0.5) - 0.25) * period


def _triangle(u, v):
    """Equilateral triangle pointing up (image y grows downwards), circumradius 1."""
    edges = [(0.0, 1.0), (0.8660254, -0.5), (-0.8660254, -0.5)]
    return np.maximum.reduce([nx * u + ny * v for nx, ny in edges]) - 0.5


_SHAPES = (
    lambda u, v, per, ph: np.sqrt(u * u + v * v) - 0.9,                          # disk
    lambda u, v, per, ph: np.abs(np.sqrt(u * u + v * v) - 0.72) - 0.2,           # ring
    lambda u, v, per, ph: _box(u, v, 0.8),                                       # square
    lambda u, v, per, ph: np.abs(_box(u, v, 0.68)) - 0.17,                       # square outline
    lambda u, v, per, ph: _triangle(u, v),                                       # triangle
    lambda u, v, per, ph: _cross(u, v),                                          # plus
    lambda u, v, per, ph: _cross((u + v) * _SQRT_HALF, (u - v) * _SQRT_HALF),    # X-cross
    lambda u, v, per, ph: np.maximum(_box(u, v, 0.9), _stripes(v, per, ph)),     # horizontal stripes
    lambda u, v, per, ph: np.maximum(_box(u, v, 0.9), _stripes(u, per, ph)),     # vertical stripes
    lambda u, v, per, ph: (np.abs(u) + np.abs(v)) * _SQRT_HALF - 0.68,           # diamond
)


def _draw_distractors(img: np.ndarray, p: dict[str, np.ndarray], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Small blobs and thin line segments in random colours, composited over the shape."""
    for k in range(_MAX_DISTRACTORS):
        on = p["d_on"][:, k]
        if not on.any():
            continue
        x0, y0 = _col(p["d_x0"][on, k]), _col(p["d_y0"][on, k])
        blob = np.hypot(xs - x0, ys - y0) - _col(p["d_rad"][on, k])
        line = _segment_distance(xs, ys, x0, y0, p["d_dir"][on, k], p["d_len"][on, k]) - 0.6
        dist = np.where(p["d_line"][on, k][:, None, None], line, blob)
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[:, None]
        colour = p["d_col"][on, k].astype(np.float32)[:, :, None, None]
        img[on] = img[on] * (1 - alpha) + colour * alpha
    return img


def _segment_distance(xs, ys, x0, y0, direction, length) -> np.ndarray:
    """Distance in pixels from every pixel to the segment starting at (x0, y0)."""
    ex, ey = _col(np.cos(direction) * length), _col(np.sin(direction) * length)
    t = np.clip(((xs - x0) * ex + (ys - y0) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    return np.hypot(xs - x0 - t * ex, ys - y0 - t * ey)
