"""CIFAR-10 / CIFAR-100 in the original "python version" pickles (Krizhevsky, 2009).

``path`` is the folder holding the pickles (``data_batch_1..5`` + ``test_batch`` for CIFAR-10, ``train``
+ ``test`` for CIFAR-100) or its parent containing ``cifar-10-batches-py`` / ``cifar-100-python``.
The pickles are read with a restricted unpickler that only admits plain containers and numpy arrays,
so a tampered file cannot run code. Images are kept in memory as one uint8 ``(N, 3, 32, 32)`` array.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArraySource, LabelSource, describe

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "meta": "batches.meta", "names_key": "label_names",
                "labels_key": "labels", "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"folder": "cifar-100-python", "meta": "meta", "names_key": "fine_label_names",
                 "labels_key": "fine_labels", "train": ["train"], "test": ["test"]},
}
_STANDARD = {"train": 50_000, "test": 10_000}  # images per split in both datasets
_CLASSES = {"cifar10": 10, "cifar100": 100}
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


def open_cifar(fmt: str, path: Path, split: str, field: str) -> ArraySource:
    """Read one split (``train`` or ``test``) of a CIFAR pickle folder into memory."""
    layout = _LAYOUT[fmt]
    folder = _find_folder(fmt, Path(path), split, field)
    images, labels = [], []
    for name in layout[split]:
        batch = _load_pickle(folder / name, field)
        data, batch_labels = _batch_arrays(batch, layout["labels_key"], folder / name, field)
        images.append(data)
        labels.append(batch_labels)
    names = _class_names(fmt, folder / layout["meta"], layout["names_key"])
    return ArraySource(field=field, where=str(folder), images=np.concatenate(images),
                       labels=np.concatenate(labels), class_names=names)


def peek_cifar(fmt: str, path: Path, split: str, field: str) -> LabelSource:
    """The split's pickles are there and not empty, without unpickling them (``compress validate``): sizes and
    labels are those of the standard dataset, which ``open_cifar`` checks when the run reads the pickles."""
    layout = _LAYOUT[fmt]
    folder = _find_folder(fmt, Path(path), split, field)
    for name in layout[split]:
        if (folder / name).stat().st_size == 0:
            raise DataError(f"{field}.path: CIFAR pickle {folder / name} is empty (0 bytes); "
                            "re-extract the dataset archive")
    labels = np.arange(_STANDARD[split], dtype=np.int64) % _CLASSES[fmt]
    names = _class_names(fmt, folder / layout["meta"], layout["names_key"])
    return LabelSource(field=field, where=str(folder), labels=labels, channels=3, class_names=names)


def _find_folder(fmt: str, path: Path, split: str, field: str) -> Path:
    layout = _LAYOUT[fmt]
    if not path.exists():
        raise DataError(f"{field}.path: {path} does not exist; point it at the '{layout['folder']}' folder "
                        f"of the {fmt} python version (or its parent)")
    if not path.is_dir():
        raise DataError(f"{field}.path: {path} is a file; format {fmt} takes the folder holding the pickles "
                        f"({', '.join(layout[split])}) or its parent")
    for candidate in (path, path / layout["folder"]):
        if all((candidate / name).is_file() for name in layout[split]):
            return candidate
    missing = [name for name in layout[split] if not (path / name).is_file()]
    raise DataError(f"{field}.path: {path} has no {fmt} {split} pickles (missing: {', '.join(missing)}; "
                    f"nor a '{layout['folder']}' subfolder with them); point it at the extracted "
                    f"'{layout['folder']}' folder")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR pickle")


def _load_pickle(file: Path, field: str) -> dict:
    try:
        with open(file, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="bytes").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError, AttributeError, IndexError) as exc:
        raise DataError(f"{field}.path: cannot read CIFAR pickle {file} ({describe(exc)}); "
                        "re-extract the dataset archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"{field}.path: {file} holds a {type(obj).__name__}, not a CIFAR batch dict; "
                        "re-extract the dataset archive")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def _batch_arrays(batch: dict, labels_key: str, file: Path, field: str) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", labels_key):
        if key not in batch:
            raise DataError(f"{field}.path: {file} has no '{key}' entry (keys: {', '.join(sorted(map(str, batch)))}); "
                            f"is {field}.format the right CIFAR variant?")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[labels_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{field}.path: {file} 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072); "
                        "re-extract the dataset archive")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{field}.path: {file} has {len(data)} images but '{labels_key}' is {labels.dtype} "
                        f"{labels.shape}; re-extract the dataset archive")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(fmt: str, meta: Path, names_key: str) -> tuple[str, ...] | None:
    """Names from the meta pickle when it is readable; CIFAR-10's well-known names otherwise."""
    fallback = CIFAR10_CLASSES if fmt == "cifar10" else None
    if not meta.is_file():
        return fallback
    try:
        names = _load_pickle(meta, "").get(names_key)
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except (DataError, TypeError, UnicodeDecodeError):
        return fallback
