"""Tiny on-disk datasets in every supported format, written into ``tmp_path`` by each test that needs one."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compressor.config import DataConfig

CLASSES = ("cat", "dog", "zebra")
MEAN3 = (0.5, 0.4, 0.3)
STD3 = (0.25, 0.2, 0.1)


def data_config(train: dict, test: dict | None = None, **kwargs) -> DataConfig:
    """A validated DataConfig; the test source defaults to the train one."""
    raw = {"train": train, "test": test or dict(train), "num_classes": kwargs.pop("num_classes", 10),
           "normalize": kwargs.pop("normalize", {"mean": MEAN3, "std": STD3}), **kwargs}
    return DataConfig.model_validate(raw)


def synthetic_config(num_train: int = 200, num_test: int = 100, **kwargs) -> DataConfig:
    return data_config({"format": "synthetic", "num_images": num_train},
                       {"format": "synthetic", "num_images": num_test}, **kwargs)


def write_cifar10(root: Path, per_batch: int = 12, num_test: int = 20, seed: int = 0) -> Path:
    """A ``cifar-10-batches-py`` folder under ``root`` in the original format (bytes keys, protocol 2)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, count in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", num_test)]:
        batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 b"labels": [int(x) for x in np.arange(count) % 10], b"batch_label": name.encode()}
        _pickle(folder / name, batch)
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck")]
    _pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder


def write_cifar100(root: Path, num_train: int = 40, num_test: int = 20) -> Path:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count in (("train", num_train), ("test", num_test)):
        _pickle(folder / name, {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                                b"fine_labels": [int(x) for x in np.arange(count) % 100],
                                b"coarse_labels": [int(x) for x in np.arange(count) % 20]})
    _pickle(folder / "meta", {b"fine_label_names": [f"c{i:03d}".encode() for i in range(100)]})
    return folder


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def image_files(per_class: int = 4, size: int = 32) -> dict[str, bytes]:
    """Relative path -> encoded image: mixed formats, modes (RGB, L, RGBA, P) and sizes."""
    rng = np.random.default_rng(2)
    files = {}
    formats = [("png", "RGB"), ("jpg", "RGB"), ("PNG", "RGBA"), ("bmp", "L"), ("png", "P"), ("jpeg", "RGB")]
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            ext, mode = formats[(c + i) % len(formats)]
            pixels = rng.integers(0, 256, (size, size + 2 * (i % 2), 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert(mode)
            files[f"{name}/{i:03d}.{ext}"] = encode(image, ext)
    return files


def encode(image: Image.Image, ext: str) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(ext.lower(), ext.upper()))
    return buffer.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], top: str = "", compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        if top:
            archive.writestr(top + "/", b"")
        for rel, data in files.items():
            archive.writestr(f"{top}/{rel}" if top else rel, data)
    return path


def write_npz(path: Path, num: int = 30, layout: str = "NCHW", extra_labels: int = 0, **arrays) -> Path:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (num, 3, 8, 8), dtype=np.uint8)
    if layout == "NHWC":
        images = images.transpose(0, 2, 3, 1).copy()
    labels = (np.arange(num + extra_labels) % 10).astype(np.uint8)
    content = {"data": images, "labels": labels}
    content.update(arrays)
    np.savez(path, **content)
    return path


@pytest.fixture
def cifar10_dir(tmp_path) -> Path:
    return write_cifar10(tmp_path)


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "images", image_files())


@pytest.fixture
def tree_zip(tmp_path) -> Path:
    return write_zip(tmp_path / "images.zip", image_files(), top="train", compression=zipfile.ZIP_DEFLATED)
