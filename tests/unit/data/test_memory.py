"""data.in_memory: the batched crop/flip equals the per-image path bit for bit, every epoch serves each image
once, seeded and resumable, shards like DistributedSampler, and falls back (auto) or refuses (true) with the
reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compressor.config import Augment
from compressor.data import build_loaders
from compressor.data.memory import MemoryTrainLoader
from compressor.data.transforms import ImageTransform
from compressor.errors import DataError

from .conftest import MEAN3, STD3, data_config, image_files, synthetic_config, write_tree

SHAPE = (3, 32, 32)


def _per_image(image: np.ndarray, t: ImageTransform, top: int, left: int, flip: bool, padding: int) -> torch.Tensor:
    """The per-image arithmetic of ImageTransform.__call__, with given offsets and flip."""
    x = torch.from_numpy(image.astype(np.float32)).div_(255.0)
    h, w = x.shape[1:]
    x = F.pad(x, (padding,) * 4)[:, top:top + h, left:left + w]
    x = x.flip(-1) if flip else x
    return (x - t.mean) / t.std


def test_the_batched_crop_and_flip_is_the_per_image_arithmetic_bit_for_bit():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 3, 8, 8), dtype=np.uint8))
    t = ImageTransform((8, 8), 3, MEAN3, STD3, augment=Augment(random_crop_padding=2, hflip=True))
    batch = t.batch(images, torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)
    top, left = torch.randint(0, 5, (16,), generator=draws), torch.randint(0, 5, (16,), generator=draws)
    flips = torch.rand(16, generator=draws) < 0.5
    assert 0 < int(flips.sum()) < 16 and len(set(top.tolist())) > 1
    for i in range(16):
        expected = _per_image(images[i].numpy(), t, int(top[i]), int(left[i]), bool(flips[i]), 2)
        assert torch.equal(batch[i], expected)
    plain = ImageTransform((8, 8), 3, MEAN3, STD3)
    assert torch.equal(plain.batch(images)[3], plain(images[3].numpy()))


def _epoch_labels(loader) -> list[int]:
    return sorted(int(v) for _, y in loader for v in y)


def test_an_epoch_serves_every_image_once_in_a_seeded_order():
    cfg = synthetic_config(90, 20, val_split=10, batch_size=16, augment={"random_crop_padding": 4, "hflip": True})
    loaders = build_loaders(cfg, SHAPE, seed=0)
    train = loaders.train
    assert isinstance(train, MemoryTrainLoader) and len(train) == 5
    source, indices = train.dataset.source, train.dataset.indices
    assert _epoch_labels(train) == sorted(source.labels[indices].tolist())
    assert [len(y) for _, y in train] == [16, 16, 16, 16, 16]
    again = build_loaders(cfg, SHAPE, seed=0).train
    first, second = next(iter(train)), next(iter(again))  # the same seeds: the same batch...
    train.generator.manual_seed(1), again.generator.manual_seed(1)
    train.dataset.reseed(2), again.dataset.reseed(2)
    a, b = next(iter(train)), next(iter(again))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # ...and after re-seeding an epoch, too
    again.dataset.reseed(3)
    again.generator.manual_seed(1)
    assert not torch.equal(next(iter(again))[0], a[0])  # another augmentation seed: other crops
    assert first[0].dtype == torch.float32 and first[0].shape == (16, *SHAPE) and second[1].dtype == torch.int64


def test_a_lone_last_image_is_dropped_as_by_the_per_image_loader():
    cfg = synthetic_config(42, 10, val_split=9, batch_size=16)  # 33 train images: 16 + 16 + 1
    memory = build_loaders(cfg, SHAPE, seed=0).train
    per_image = build_loaders(cfg.model_copy(update={"in_memory": False}), SHAPE, seed=0).train
    assert len(memory) == len(per_image) == 2
    assert [len(y) for _, y in memory] == [len(y) for _, y in per_image] == [16, 16]


def test_ranks_share_one_order_as_distributed_sampler_does():
    cfg = synthetic_config(60, 10, val_split=10, batch_size=8)  # 50 images over 3 ranks: 17 each, one repeated
    full = build_loaders(cfg, SHAPE, seed=0).train
    shards = [full.shard(rank, 3, 5, fallback=None) for rank in range(3)]
    seen = []
    for shard in shards:
        shard.generator.manual_seed(5)
        labels = [int(v) for _, y in shard for v in y]
        assert len(labels) == 17 and len(shard) == 4  # 5 + 5 + 5 + 2
        seen.append(labels)
    full.generator.manual_seed(5)
    order = torch.randperm(50, generator=full.generator)
    padded = torch.cat([order, order[:1]])
    labels = full.dataset.source.labels[full.dataset.indices]
    for rank in range(3):
        assert seen[rank] == labels[padded[rank::3].numpy()].tolist()


def test_auto_falls_back_to_per_image_reading_and_true_refuses(tmp_path, capsys):
    root = write_tree(tmp_path / "tree", image_files(per_class=4))  # half the images are 32x34
    folder = {"format": "imagefolder", "path": str(root)}
    cfg = data_config(folder, num_classes=3, val_split=2, batch_size=4)
    train = build_loaders(cfg, SHAPE, seed=0).train
    assert sum(len(y) for _, y in train) == 10
    assert "not the network's 3x32x32; training reads images one by one" in capsys.readouterr().err
    strict = build_loaders(cfg.model_copy(update={"in_memory": True}), SHAPE, seed=0).train
    with pytest.raises(DataError, match=r"data.in_memory: true, but image \d+ of .* is 3x32x34"):
        next(iter(strict))


def test_what_the_recipe_rules_out_is_said_on_the_first_epoch_or_refused_at_once(capsys):
    cfg = synthetic_config(40, 10, val_split=8, batch_size=16, augment={"random_resized_crop": True})
    train = build_loaders(cfg, SHAPE, seed=0).train
    assert "in_memory" not in capsys.readouterr().err  # nothing said until something trains
    assert [len(y) for _, y in train] == [16, 16]
    assert "random_resized_crop resizes every image afresh" in capsys.readouterr().err
    with pytest.raises(DataError, match="data.in_memory: true, but augment.random_resized_crop"):
        build_loaders(cfg.model_copy(update={"in_memory": True}), SHAPE, seed=0)


def test_in_memory_false_keeps_the_per_image_loader():
    cfg = synthetic_config(40, 10, val_split=8, in_memory=False)
    assert isinstance(build_loaders(cfg, SHAPE, seed=0).train, torch.utils.data.DataLoader)
