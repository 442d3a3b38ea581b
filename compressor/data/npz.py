"""Images and labels from one ``.npz`` file (``numpy.savez``).

``images_key`` names a uint8 array of shape ``(N, C, H, W)`` (``layout: NCHW``) or ``(N, H, W, C)``
(``layout: NHWC``); ``labels_key`` names a 1-D integer array. The label array may be longer than the
image array (only its first N entries are used, as in a file holding the first images of a test set
with the labels of all of them) but not shorter. Pickled objects are refused (``allow_pickle=False``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArraySource, LabelSource, describe


def open_npz(path: Path, images_key: str, labels_key: str, layout: str, field: str) -> ArraySource:
    """Load the two arrays, check them and return the images as an ``(N, C, H, W)`` view."""
    with _load(Path(path), field) as arrays:
        images = _get(arrays, images_key, "images_key", path, field)
        labels = _get(arrays, labels_key, "labels_key", path, field)
    images = _check_images(images, layout, path, field)
    labels = _check_labels(labels, len(images), path, field)
    if layout == "NHWC":
        images = images.transpose(0, 3, 1, 2)
    return ArraySource(field=field, where=str(path), images=images, labels=labels)


def peek_npz(path: Path, images_key: str, labels_key: str, layout: str, field: str) -> LabelSource:
    """The checks of ``open_npz`` without reading the images (``compress validate``): their shape and dtype come
    from the array header, the labels are read (they are small)."""
    with _load(Path(path), field) as arrays:
        _require(arrays, images_key, "images_key", path, field)
        labels = _get(arrays, labels_key, "labels_key", path, field)
        shape, dtype = _header(arrays, images_key, path, field)
    _check_layout(shape, dtype, layout, path, field)
    labels = _check_labels(labels, shape[0], path, field)
    channels = shape[1] if layout == "NCHW" else shape[3]
    return LabelSource(field=field, where=str(path), labels=labels, channels=int(channels))


def _header(arrays: np.lib.npyio.NpzFile, key: str, path: Path, field: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of the archive from its .npy header; the whole array when the header is of a
    version numpy has no public reader for."""
    try:
        with arrays.zip.open(f"{key}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                return tuple(shape), dtype
            if version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                return tuple(shape), dtype
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{field}.path: cannot read array '{key}' from {path} ({describe(exc)}); "
                        "the file is corrupt: rewrite it with numpy.savez") from None
    array = _get(arrays, key, "images_key", path, field)
    return array.shape, array.dtype


def _load(path: Path, field: str) -> np.lib.npyio.NpzFile:
    if not path.exists():
        raise DataError(f"{field}.path: {path} does not exist; point it at an .npz file written by numpy.savez")
    if path.is_dir():
        raise DataError(f"{field}.path: {path} is a folder; format npz takes one .npz file "
                        "(use format: imagefolder for a folder of images)")
    if not zipfile.is_zipfile(path) and not _is_npy(path):
        raise DataError(f"{field}.path: {path} is not an .npz file or is damaged (numpy.savez writes a zip archive); "
                        "write images and labels with numpy.savez(path, data=images, labels=labels)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{field}.path: {path} is not a readable .npz file ({describe(exc)}); "
                        "write it with numpy.savez") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{field}.path: {path} is a single .npy array, not an .npz archive; write images and "
                        "labels with numpy.savez(path, data=images, labels=labels)")
    return loaded


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(6) == b"\x93NUMPY"


def _require(arrays: np.lib.npyio.NpzFile, key: str, option: str, path: Path, field: str) -> None:
    if key not in arrays.files:
        raise DataError(f"{field}.{option}: {path} has no array '{key}' (it has: {', '.join(arrays.files) or 'none'}); "
                        f"set {field}.{option} to one of them")


def _get(arrays: np.lib.npyio.NpzFile, key: str, option: str, path: Path, field: str) -> np.ndarray:
    _require(arrays, key, option, path, field)
    try:
        return arrays[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{field}.path: cannot read array '{key}' from {path} ({describe(exc)}); "
                        "the file is corrupt or holds pickled objects: rewrite it with numpy.savez") from None


def _check_images(images: np.ndarray, layout: str, path: Path, field: str) -> np.ndarray:
    _check_layout(images.shape, images.dtype, layout, path, field)
    return images


def _check_layout(shape: tuple[int, ...], dtype: np.dtype, layout: str, path: Path, field: str) -> None:
    if len(shape) != 4:
        raise DataError(f"{field}.images_key: array in {path} has shape {shape}; expected 4-D "
                        f"{layout} (N, {'C, H, W' if layout == 'NCHW' else 'H, W, C'}) images")
    if dtype != np.uint8:
        raise DataError(f"{field}.images_key: array in {path} is {dtype}; expected uint8 pixels 0..255 "
                        "(convert with (x * 255).round().astype(numpy.uint8) if they are 0..1 floats)")
    channels = shape[1] if layout == "NCHW" else shape[3]
    if channels not in (1, 2, 3, 4):
        other = "NHWC" if layout == "NCHW" else "NCHW"
        raise DataError(f"{field}.layout: images in {path} of shape {shape} read as {layout} have "
                        f"{channels} channels; set {field}.layout: {other} if that is how they are stored")


def _check_labels(labels: np.ndarray, num_images: int, path: Path, field: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{field}.labels_key: array in {path} is {labels.dtype} {labels.shape}; expected a 1-D "
                        "integer array of class indices")
    if len(labels) < num_images:
        raise DataError(f"{field}.labels_key: {path} has {num_images} images but only {len(labels)} labels; "
                        "every image needs a label")
    return labels[:num_images].astype(np.int64)
