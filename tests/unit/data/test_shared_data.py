"""The real CIFAR-10 material in ../shared/data (skips without COMPRESSOR_SHARED_DATA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from compressor.data import build_loaders
from compressor.data.cifar import CIFAR10_CLASSES


@pytest.mark.slow
def test_cifar10_jpg_zip_and_exact_npz(shared_data):
    npz_path = shared_data / "cifar10-exact" / "test_first1017.npz"
    cfg = DataConfig.model_validate({
        "train": {"format": "imagefolder", "path": str(shared_data / "cifar10-jpg" / "train.zip"), "subset": 3000},
        "test": {"format": "npz", "path": str(npz_path), "labels_key": "labels_all10000"},
        "num_classes": 10, "normalize": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "val_split": 500, "calibration_images": 256, "augment": {"random_crop_padding": 4, "hflip": True},
    })
    loaders = build_loaders(cfg, (3, 32, 32), seed=0)
    assert (loaders.num_train, loaders.num_val, loaders.num_test, loaders.num_calibration) == (2500, 500, 1017, 256)
    assert loaders.class_names == CIFAR10_CLASSES == tuple(sorted(CIFAR10_CLASSES))

    source = loaders.calibration.dataset.source
    assert len(source) == 50000 and source._cache == {}  # opening decoded nothing
    seen = []
    for x, y in loaders.calibration:
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        seen.append(y)
    labels = torch.cat(seen)
    assert len(labels) == 256 and 0 <= int(labels.min()) and int(labels.max()) <= 9
    assert len(source._cache) == 256  # only the calibration images were decoded

    x, y = next(iter(loaders.train))
    assert x.shape == (128, 3, 32, 32) and y.dtype == torch.int64

    raw = np.load(npz_path)
    xt, yt = next(iter(loaders.test))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (torch.from_numpy(raw["data"][:256]).float() / 255 - mean) / std
    torch.testing.assert_close(xt, expected)
    assert yt.tolist() == raw["labels_all10000"][:256].astype(int).tolist()
    assert sorted(set(torch.cat([y for _, y in loaders.test]).tolist())) == list(range(10))
