"""``data.train`` / ``data.test`` with ``format: auto``: the source kind read off what the path holds.

Recognised, without reading any pixels: a CIFAR-10 python-pickle folder (``data_batch_1`` ... ``test_batch``),
a CIFAR-100 one (``train``, ``test``, ``meta``), an ``.npz`` (its image array, the one 4-D ``uint8`` array, and
its label array, the one 1-D integer array, with their names and the axis order read from the array headers),
and an image-folder tree or ``.zip`` (class folders of images, one extra top folder allowed). The recipe is
validated as the concrete kind, so ``recipe.resolved.yaml`` and the report name what was found; anything else
is one error naming the path and the formats to choose from.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .fields import resolve_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CHOOSE = "set data.{role}.format to cifar10, cifar100, imagefolder or npz"


def resolve_auto(source: dict, role: str, base_dir: Path | None) -> dict:
    """``{format: auto, path: P, ...}`` -> the concrete source mapping (``subset`` and the rest kept)."""
    raw = source.get("path")
    if raw is None:
        raise ValueError(f"data.{role}: format auto needs a path")
    path = resolve_path(str(raw), base_dir)  # as every recipe path field resolves it
    if not path.exists():
        raise ValueError(f"data.{role}.path: not found: {path}")
    rest = {k: v for k, v in source.items() if k not in ("format", "path")}
    return {**_detect(path, role), **rest, "path": str(path)}


def _detect(path: Path, role: str) -> dict:
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if {"data_batch_1", "test_batch"} <= names:
            return {"format": "cifar10"}
        if {"train", "test", "meta"} <= names and all((path / n).is_file() for n in ("train", "test", "meta")):
            return {"format": "cifar100"}
        if _has_class_folders(path):
            return {"format": "imagefolder"}
        raise ValueError(f"data.{role}.path {path}: format auto finds no CIFAR pickles and no class folders of "
                         f"images in it; {CHOOSE.format(role=role)}")
    if path.suffix.lower() == ".npz":
        return {"format": "npz", **_npz_keys(path, role)}
    if zipfile.is_zipfile(path):
        return {"format": "imagefolder"}
    raise ValueError(f"data.{role}.path {path}: format auto does not know this kind of file (a folder, .zip or "
                     f".npz); {CHOOSE.format(role=role)}")


def _has_class_folders(root: Path) -> bool:
    """Images one level down (root/<class>/<image>), or two (one extra top folder)."""
    for depth in (1, 2):
        pattern = "/".join(["*"] * depth) + "/*"
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.glob(pattern)):
            return True
    return False


def _npz_keys(path: Path, role: str) -> dict:
    """``images_key``, ``labels_key`` and ``layout`` from the array headers (numpy reads headers only)."""
    arrays = _headers(path, role)
    images = [k for k, (shape, dtype) in arrays.items() if len(shape) == 4 and dtype == "uint8"]
    labels = [k for k, (shape, dtype) in arrays.items() if len(shape) == 1 and dtype.kind in "iu"]
    listing = ", ".join(f"{k} {tuple(s)} {d}" for k, (s, d) in arrays.items())
    if len(images) != 1 or len(labels) != 1:
        raise ValueError(f"data.{role}.path {path}: format auto cannot tell the image array (4-D uint8) and the "
                         f"label array (1-D integers) apart among: {listing}; set format: npz with images_key and "
                         "labels_key")
    shape = arrays[images[0]][0]
    layout = "NCHW" if shape[1] in (1, 3) else "NHWC" if shape[3] in (1, 3) else None
    if layout is None:
        raise ValueError(f"data.{role}.path {path}: format auto cannot tell the channel axis of {images[0]} "
                         f"{tuple(shape)}; set format: npz with layout NCHW or NHWC")
    return {"images_key": images[0], "labels_key": labels[0], "layout": layout}


def _headers(path: Path, role: str) -> dict:
    import numpy as np

    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[name[:-4]] = (shape, np.dtype(dtype))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"data.{role}.path {path}: not a readable .npz ({type(exc).__name__})") from None
    return out
