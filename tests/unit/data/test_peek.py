"""``open_source(..., peek=True)`` (``compress validate``): the checks of a real open without reading pixels."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.data import LabelSource, open_source, split_sizes
from compressor.errors import DataError

from .conftest import data_config, synthetic_config, write_cifar10


def _peek(src_cfg, split: str = "train", channels: int = 3, num_classes: int = 10):
    return open_source(src_cfg, f"data.{split}", split, channels, num_classes, peek=True)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_npz_peek_reads_the_header_not_the_images(tmp_path, monkeypatch, layout, compressed):
    shape = (6, 3, 8, 8) if layout == "NCHW" else (6, 8, 8, 3)
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, data=np.zeros(shape, np.uint8), labels=np.arange(9) % 4)
    cfg = data_config({"format": "npz", "path": str(path), "layout": layout}).train
    real = open_source(cfg, "data.train", "train", 3, 10)
    read = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: read.append(key) or original(self, key))
    peeked = _peek(cfg)
    assert isinstance(peeked, LabelSource) and read == ["labels"]
    assert peeked.channels == real.channels == 3 and list(peeked.labels) == list(real.labels)


def test_npz_peek_refuses_what_open_refuses(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, data=np.zeros((4, 3, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    cfg = data_config({"format": "npz", "path": str(path)}).train
    with pytest.raises(DataError) as peeked:
        _peek(cfg)
    with pytest.raises(DataError) as opened:
        open_source(cfg, "data.train", "train", 3, 10)
    assert str(peeked.value) == str(opened.value) and "uint8" in str(peeked.value)


def test_cifar_peek_finds_the_pickles_without_unpickling_them(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(b"not a pickle")  # a real open would fail on it; a peek does not read it
    peeked = _peek(data_config({"format": "cifar10", "path": str(tmp_path)}).train)
    assert len(peeked) == 50_000 and peeked.class_names[0] == "airplane"
    (folder / "data_batch_2").write_bytes(b"")
    with pytest.raises(DataError, match="data_batch_2 is empty"):
        _peek(data_config({"format": "cifar10", "path": str(tmp_path)}).train)


def test_cifar_peek_checks_num_classes(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="data.num_classes is 100"):
        _peek(data_config({"format": "cifar10", "path": str(tmp_path)}).test, "test", num_classes=100)


def test_synthetic_peek_has_the_label_counts_of_the_real_images():
    cfg = synthetic_config(num_train=95, num_test=30)
    peeked, real = _peek(cfg.train), open_source(cfg.train, "data.train", "train", 3, 10)
    assert np.array_equal(np.bincount(peeked.labels), np.bincount(real.labels))
    with pytest.raises(NotImplementedError):
        peeked.read(0)
    with pytest.raises(DataError, match="data.num_classes is 5"):
        _peek(cfg.train, num_classes=5)


def test_split_sizes_match_build_loaders():
    from compressor.data import build_loaders

    cfg = synthetic_config(num_train=120, num_test=40, val_split=0.25, calibration_images=200)
    loaders = build_loaders(cfg, (3, 32, 32), seed=3)
    sizes = split_sizes(cfg, _peek(cfg.train), _peek(cfg.test, "test"), seed=3)
    assert sizes == (loaders.num_train, loaders.num_val, loaders.num_test, loaders.num_calibration) == (90, 30, 40, 90)
