"""build_loaders: counts, batches, seeded disjoint splits, calibration prefixes, reproducible training order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.data import Loaders, build_loaders
from compressor.data.synthetic import CLASS_NAMES
from compressor.errors import DataError

from .conftest import CLASSES, MEAN3, STD3, data_config, synthetic_config, write_npz

SHAPE = (3, 32, 32)


def _indices(loader) -> np.ndarray:
    return loader.dataset.indices


def _batches(loader, limit: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for x, y in loader:
        out.append((x, y))
        if len(out) == limit:
            break
    return out


def test_counts_shapes_and_batches():
    loaders = build_loaders(synthetic_config(200, 100, val_split=0.2, calibration_images=32, batch_size=64,
                                             eval_batch_size=50), SHAPE, seed=0)
    assert isinstance(loaders, Loaders)
    assert (loaders.num_train, loaders.num_val, loaders.num_test, loaders.num_calibration) == (160, 40, 100, 32)
    assert loaders.num_classes == 10 and loaders.input_shape == SHAPE
    assert loaders.class_names == CLASS_NAMES
    x, y = next(iter(loaders.train))
    assert x.shape == (64, *SHAPE) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(y) for _, y in loaders.train) == 160  # drop_last=False
    assert [len(y) for _, y in loaders.test] == [50, 50]
    assert [len(y) for _, y in loaders.calibration] == [32]
    assert int(y.min()) >= 0 and int(y.max()) < 10


def test_splits_are_disjoint_and_cover_the_train_subset():
    cfg = data_config({"format": "synthetic", "num_images": 300, "subset": 250},
                      {"format": "synthetic", "num_images": 50}, val_split=50, calibration_images=100)
    loaders = build_loaders(cfg, SHAPE, seed=1)
    train, val, calib = _indices(loaders.train), _indices(loaders.val), _indices(loaders.calibration)
    assert len(train) == 200 and len(val) == 50
    assert not set(train) & set(val)
    assert set(calib) <= set(train)
    assert len(set(train) | set(val)) == 250 and max(set(train) | set(val)) < 300


def test_splits_are_deterministic_for_a_seed_and_differ_for_another():
    cfg = data_config({"format": "synthetic", "num_images": 300, "subset": 200},
                      {"format": "synthetic", "num_images": 100, "subset": 60})
    a, b, c = (build_loaders(cfg, SHAPE, seed=s) for s in (3, 3, 4))
    for name in ("train", "val", "test", "calibration"):
        assert np.array_equal(_indices(getattr(a, name)), _indices(getattr(b, name)))
    for name in ("train", "val", "test"):
        assert not np.array_equal(_indices(getattr(a, name)), _indices(getattr(c, name)))


def test_calibration_sets_are_prefixes_of_each_other():
    loaders = build_loaders(synthetic_config(200, 20, calibration_images=16, eval_batch_size=8), SHAPE, seed=0)
    small, large = loaders.calibration_loader(10), loaders.calibration_loader(100)
    assert len(small.dataset) == 10 and len(large.dataset) == 100
    np.testing.assert_array_equal(_indices(large)[:10], _indices(small))
    np.testing.assert_array_equal(_indices(loaders.calibration), _indices(large)[:16])
    xs = torch.cat([x for x, _ in small])
    xl = torch.cat([x for x, _ in large])[:10]
    assert torch.equal(xs, xl)  # eval transform, fixed order
    assert not set(_indices(large)) & set(_indices(loaders.val))


def test_calibration_is_clipped_to_the_train_part():
    loaders = build_loaders(synthetic_config(50, 20, val_split=10, calibration_images=512), SHAPE, seed=0)
    assert loaders.num_calibration == loaders.num_train == 40
    assert len(loaders.calibration.dataset) == 40
    assert len(loaders.calibration_loader(2000).dataset) == 40


def test_train_batches_are_reproducible_for_a_seed():
    cfg = synthetic_config(120, 20, batch_size=16, augment={"random_crop_padding": 4, "hflip": True})
    a, b = _batches(build_loaders(cfg, SHAPE, 7).train), _batches(build_loaders(cfg, SHAPE, 7).train)
    c = _batches(build_loaders(cfg, SHAPE, 8).train)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_train_is_augmented_and_eval_is_not():
    cfg = synthetic_config(60, 20, val_split=10, augment={"random_crop_padding": 4, "hflip": True})
    loaders = build_loaders(cfg, SHAPE, 0)
    train_ds = loaders.train.dataset
    first, second = train_ds[0][0], train_ds[0][0]
    assert not torch.equal(first, second)
    val_ds = loaders.val.dataset
    assert torch.equal(val_ds[0][0], val_ds[0][0])


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_loader_batches_match_manual_normalisation(tmp_path):
    path = write_npz(tmp_path / "d.npz", num=30)
    cfg = data_config({"format": "npz", "path": str(path)}, val_split=5, eval_batch_size=30)
    loaders = build_loaders(cfg, (3, 8, 8), 0)
    x, y = next(iter(loaders.test))
    raw = np.load(path)
    mean, std = torch.tensor(MEAN3).view(1, 3, 1, 1), torch.tensor(STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (torch.from_numpy(raw["data"]).float() / 255 - mean) / std)
    assert torch.equal(y, torch.from_numpy(raw["labels"]).long())


def test_image_size_and_resize_give_the_network_shape(tree):
    cfg = data_config({"format": "imagefolder", "path": str(tree)}, num_classes=3, val_split=2,
                      image_size=24, resize=28, augment={"random_resized_crop": True})
    loaders = build_loaders(cfg, (3, 24, 24), 0)
    assert loaders.input_shape == (3, 24, 24) and loaders.class_names == CLASSES
    assert next(iter(loaders.train))[0].shape[1:] == (3, 24, 24)
    assert next(iter(loaders.test))[0].shape[1:] == (3, 24, 24)


def test_image_size_must_match_the_model_input(tree):
    cfg = data_config({"format": "imagefolder", "path": str(tree)}, num_classes=3, val_split=2, image_size=24)
    with pytest.raises(DataError, match="data.image_size: 24 differs from the model's input 32x32"):
        build_loaders(cfg, (3, 32, 32), 0)


def test_training_loader_never_ends_with_a_lone_image():
    cfg = synthetic_config(34, 10, val_split=1, batch_size=8)  # 33 training images: 8+8+8+8+1
    loaders = build_loaders(cfg, SHAPE, 0)
    assert [len(y) for _, y in loaders.train] == [8, 8, 8, 8]
    cfg = synthetic_config(35, 10, val_split=1, batch_size=8)  # 34: the last batch of 2 is kept
    assert [len(y) for _, y in build_loaders(cfg, SHAPE, 0).train] == [8, 8, 8, 8, 2]


def test_grey_model_from_rgb_arrays():
    cfg = synthetic_config(30, 10, val_split=5, normalize={"mean": [0.5], "std": [0.5]})
    loaders = build_loaders(cfg, (1, 16, 16), 0)
    assert next(iter(loaders.test))[0].shape[1:] == (1, 16, 16)


def test_workers_give_the_same_reproducible_batches():
    cfg = synthetic_config(64, 16, val_split=8, batch_size=16, workers=2, augment={"hflip": True})
    a, b = build_loaders(cfg, SHAPE, 0), build_loaders(cfg, SHAPE, 0)
    first_a, first_b = _batches(a.train, 2), _batches(b.train, 2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first_a, first_b))
    serial = build_loaders(cfg.model_copy(update={"workers": 0}), SHAPE, 0)
    assert torch.equal(torch.cat([x for x, _ in a.test]), torch.cat([x for x, _ in serial.test]))


@pytest.mark.parametrize("val_split, expected", [(0.1, 20), (0.001, 1), (1.0, 1), (37, 37)])
def test_val_split_fraction_or_count(val_split, expected):
    loaders = build_loaders(synthetic_config(200, 10, val_split=val_split), SHAPE, 0)
    assert loaders.num_val == expected and loaders.num_train == 200 - expected


def test_each_worker_draws_its_own_augmentation(tmp_path):
    """Identical images, random crops: without per-worker reseeding both workers would draw the same crops."""
    image = np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "same.npz"
    np.savez(path, data=np.repeat(image, 33, axis=0), labels=np.zeros(33, dtype=np.int64))
    cfg = data_config({"format": "npz", "path": str(path)}, num_classes=10, val_split=1, batch_size=16, workers=2,
                      augment={"random_crop_padding": 8, "hflip": True})
    first, second = _batches(build_loaders(cfg, SHAPE, 0).train, 2)  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(first[0], second[0])
