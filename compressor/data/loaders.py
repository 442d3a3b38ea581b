"""``build_loaders(cfg, input_shape, seed)``: the recipe's data section as train/val/test/calibration loaders.

Splits, all seeded from the recipe seed and independent of one another:

- ``subset`` on a source keeps a seeded random subset of that many of its images;
- ``val_split`` (a fraction if < 1, else a count) is carved from the (subset of the) train source with a
  seeded permutation; validation never comes from the test source;
- calibration images are the first k of one seeded permutation of the remaining train part, so smaller
  calibration sets are prefixes of larger ones (``Loaders.calibration_loader(k)``).

The train loader augments and shuffles with its own seeded ``torch.Generator``s (reproducible with
``workers: 0``; with workers each worker reseeds from the loader's seeded base seed); every other loader
uses the eval transform in a fixed order. Batches are ``(float32 (N, C, H, W) normalised, int64 (N,))``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import CifarSource, DataConfig, ImageFolderSource, NpzSource, SyntheticSource
from ..errors import DataError
from ..progress import log
from .base import ImageSource, LabelSource, check_channels, check_class_names, check_labels
from .cifar import open_cifar, peek_cifar
from .imagefolder import ImageFolderSource as FolderImages
from .imagefolder import open_imagefolder
from .memory import MemoryTrainLoader, memory_plan, refusal
from .npz import open_npz, peek_npz
from .synthetic import CLASS_NAMES as SHAPES_CLASSES
from .synthetic import open_synthetic
from .transforms import ImageTransform


class ImageDataset(Dataset):
    """``indices`` of ``source`` through ``transform``; ``seed`` (train only) seeds the augmentation RNG."""

    def __init__(self, source: ImageSource, indices: np.ndarray, transform: ImageTransform, seed: int | None = None):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[item])
        return self.transform(self.source.read(index), self.generator), int(self.source.labels[index])

    def reseed(self, seed: int) -> None:
        if self.generator is not None:
            self.generator.manual_seed(seed)


@dataclass(frozen=True, eq=False)
class _CalibrationPool:
    """The train part in one seeded order; ``loader(k)`` serves its first k images, eval transform."""

    source: ImageSource
    order: np.ndarray
    transform: ImageTransform
    batch_size: int
    workers: int

    def loader(self, num_images: int) -> DataLoader:
        if num_images < 1:
            raise ValueError(f"calibration_loader needs at least 1 image, got {num_images}")
        dataset = ImageDataset(self.source, self.order[:num_images], self.transform)
        return _loader(dataset, self.batch_size, self.workers)


@dataclass(frozen=True)
class Loaders:
    """The four loaders of one run and their sizes. ``train`` is augmented and shuffled (seeded); ``val``
    (carved from train), ``test`` and ``calibration`` use the eval transform in a fixed order.
    ``input_shape`` is the (C, H, W) the network sees; ``class_names`` come from the source where it
    names them (CIFAR meta, image folders, synthetic) and are ``"0".."N-1"`` otherwise."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    calibration: DataLoader
    num_train: int
    num_val: int
    num_test: int
    num_calibration: int
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()
    _pool: _CalibrationPool | None = field(default=None, repr=False, compare=False)

    def calibration_loader(self, num_images: int) -> DataLoader:
        """The first ``num_images`` (clipped to the train part) of the calibration order; deterministic,
        so smaller sets are prefixes of larger ones."""
        if self._pool is None:
            raise ValueError("these Loaders were not made by build_loaders and have no calibration pool")
        if num_images > len(self._pool.order):
            log(f"calibration: {num_images} images asked but the train part has {len(self._pool.order)}; "
                "using all of them")
        return self._pool.loader(num_images)


def build_loaders(cfg: DataConfig, input_shape: tuple[int, int, int], seed: int) -> Loaders:
    """Open both sources, check them against the recipe, split, and wrap everything in DataLoaders."""
    channels, size = check_geometry(cfg, input_shape)
    train_src = open_source(cfg.train, "data.train", "train", channels, cfg.num_classes)
    test_src = open_source(cfg.test, "data.test", "test", channels, cfg.num_classes)
    check_same_classes(train_src, test_src)
    train_pool = _subset(train_src, cfg.train.subset, seed)
    test_idx = _subset(test_src, cfg.test.subset, seed)
    train_idx, val_idx = _split(train_pool, cfg.val_split, seed)
    eval_t = ImageTransform(size, channels, cfg.normalize.mean, cfg.normalize.std, cfg.resize)
    train_t = ImageTransform(size, channels, cfg.normalize.mean, cfg.normalize.std, cfg.resize, cfg.augment)
    order = train_idx[np.random.default_rng(_derive(seed, "calibration")).permutation(len(train_idx))]
    pool = _CalibrationPool(train_src, order, eval_t, cfg.eval_batch_size, cfg.workers)
    num_calibration = min(cfg.calibration_images, len(train_idx))
    if num_calibration < cfg.calibration_images:
        log(f"data.calibration_images: {cfg.calibration_images} asked but the train part has "
            f"{len(train_idx)} images; using {num_calibration}")
    train_ds = ImageDataset(train_src, train_idx, train_t, seed=_derive(seed, "augment"))
    shuffle = torch.Generator().manual_seed(_derive(seed, "shuffle"))
    return Loaders(
        train=_train_loader(cfg, train_ds, shuffle, (channels, *size)),
        val=_loader(ImageDataset(train_src, val_idx, eval_t), cfg.eval_batch_size, cfg.workers),
        test=_loader(ImageDataset(test_src, test_idx, eval_t), cfg.eval_batch_size, cfg.workers),
        calibration=pool.loader(num_calibration),
        num_train=len(train_idx), num_val=len(val_idx), num_test=len(test_idx),
        num_calibration=num_calibration, num_classes=cfg.num_classes,
        input_shape=(channels, *size),
        class_names=train_src.class_names or test_src.class_names or tuple(map(str, range(cfg.num_classes))),
        _pool=pool,
    )


def _train_loader(cfg: DataConfig, dataset: ImageDataset, shuffle: torch.Generator,
                  input_shape: tuple[int, int, int]):
    """The per-image DataLoader, or (``data.in_memory``) the loader that holds the decoded images in memory and
    falls back to the per-image one where an image turns out not to fit it (``auto``)."""
    per_image = _loader(dataset, cfg.batch_size, cfg.workers, shuffle=shuffle)
    if cfg.in_memory is False:
        return per_image
    reason = memory_plan(cfg, dataset.source, len(dataset), input_shape)
    if reason is not None and cfg.in_memory is True:
        raise refusal(reason)
    return MemoryTrainLoader(dataset, cfg.batch_size, shuffle, per_image, required=cfg.in_memory is True,
                             refused=reason)


def open_source(src, field: str, split: str, channels: int, num_classes: int, peek: bool = False) -> ImageSource:
    """Open one recipe source (labels and file names; pixels stay lazy where possible) and check it.
    ``peek`` (``compress validate``): the same checks without reading pixels at all, where the format allows
    (CIFAR pickles are found but not unpickled, npz images are known by their header, synthetic images are not
    drawn); the source then has labels only (:class:`LabelSource`)."""
    if isinstance(src, CifarSource):
        opener = peek_cifar if peek else open_cifar
        source = opener(src.format, src.path, src.split or split, field)
    elif isinstance(src, ImageFolderSource):
        source = open_imagefolder(src.path, field, channels)
    elif isinstance(src, NpzSource):
        opener = peek_npz if peek else open_npz
        source = opener(src.path, src.images_key, src.labels_key, src.layout, field)
    elif isinstance(src, SyntheticSource) and peek:  # make_shapes balances its classes: the same label counts
        source = LabelSource(field=field, where=f"synthetic shapes ({src.split or split} split)", channels=3,
                             labels=np.arange(src.num_images, dtype=np.int64) % len(SHAPES_CLASSES),
                             class_names=SHAPES_CLASSES)
    elif isinstance(src, SyntheticSource):
        source = open_synthetic(src.task, src.num_images, src.split or split, field)
    else:
        raise TypeError(f"{field}: unknown source type {type(src).__name__}")
    check_labels(source, num_classes)
    check_class_names(source, num_classes)
    check_channels(source, channels)
    return source


def split_sizes(cfg: DataConfig, train: ImageSource, test: ImageSource, seed: int) -> tuple[int, int, int, int]:
    """Images in (train, val, test, calibration) as ``build_loaders`` splits them, with its checks."""
    train_pool = _subset(train, cfg.train.subset, seed)
    test_idx = _subset(test, cfg.test.subset, seed)
    train_idx, val_idx = _split(train_pool, cfg.val_split, seed)
    return len(train_idx), len(val_idx), len(test_idx), min(cfg.calibration_images, len(train_idx))


# -------------------------------------------------------------------------------------------- checks
def check_geometry(cfg: DataConfig, input_shape: tuple[int, int, int]) -> tuple[int, tuple[int, int]]:
    """Channels and (H, W) the network sees; the normalisation must have one value per channel."""
    channels = int(input_shape[0])
    size = (int(input_shape[1]), int(input_shape[2]))
    if cfg.image_size is not None and (cfg.image_size, cfg.image_size) != size:
        raise DataError(f"data.image_size: {cfg.image_size} differs from the model's input {size[0]}x{size[1]} "
                        f"(model.input_shape {tuple(input_shape)}), which is what gets pruned, counted and exported; "
                        f"set model.input_shape: [{channels}, {cfg.image_size}, {cfg.image_size}] or drop data.image_size")
    if len(cfg.normalize.mean) != channels:
        raise DataError(f"data.normalize: mean and std have {len(cfg.normalize.mean)} values but the model input "
                        f"has {channels} channels (input shape {tuple(input_shape)}); give one value per channel")
    if cfg.resize is not None and cfg.resize < max(size):
        raise DataError(f"data.resize: {cfg.resize} is smaller than the {size[0]}x{size[1]} input the center crop "
                        f"takes; set data.resize >= {max(size)} (e.g. 256 for 224) or remove it")
    return channels, size


def check_same_classes(train: ImageSource, test: ImageSource) -> None:
    """Two image folders number their classes by sorted names: the names must agree or labels would not."""
    a, b = train.class_names, test.class_names
    if isinstance(train, FolderImages) and isinstance(test, FolderImages) and a != b:
        only_train, only_test = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise DataError(f"data.test: class folders of {test.where} differ from those of data.train "
                        f"(only in train: {only_train or '-'}; only in test: {only_test or '-'}); "
                        "both must have the same <class>/ folders so that labels line up")


# -------------------------------------------------------------------------------------------- splits
def _derive(seed: int, tag: str) -> int:
    """An independent 64-bit seed for one use (``tag``) of the recipe seed."""
    sequence = np.random.SeedSequence([seed % 2**64, zlib.crc32(tag.encode())])
    return int(sequence.generate_state(1, np.uint64)[0])


def _subset(source: ImageSource, subset: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded random ``subset`` of them (sorted, to read files in order)."""
    total = len(source)
    if subset is None:
        return np.arange(total, dtype=np.int64)
    if subset > total:
        raise DataError(f"{source.field}.subset: {subset} requested but {source.field} has {total} images "
                        f"({source.where}); lower it or remove it")
    rng = np.random.default_rng(_derive(seed, f"subset:{source.field}"))
    return np.sort(rng.permutation(total)[:subset])


def _split(indices: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) partition of ``indices``; both sorted."""
    total = len(indices)
    if val_split < 1:
        num_val = max(1, int(round(val_split * total)))
    elif float(val_split).is_integer():
        num_val = int(val_split)
    else:
        raise DataError(f"data.val_split: {val_split:g} is neither a fraction below 1 nor a whole number of images")
    if num_val >= total:
        raise DataError(f"data.val_split: {val_split:g} takes {num_val} of the {total} training images and leaves "
                        "none to train on; lower it (or raise data.train.subset)")
    perm = np.random.default_rng(_derive(seed, "val_split")).permutation(total)
    return np.sort(indices[perm[num_val:]]), np.sort(indices[perm[:num_val]])


class _Loader(DataLoader):
    """A DataLoader whose DataErrors stay one line when raised in a worker process (torch re-raises them
    with the worker's traceback folded into the message)."""

    def __iter__(self):
        return _OneLineErrors(super().__iter__())


class _OneLineErrors:
    def __init__(self, iterator):
        self._iterator = iterator

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._iterator)

    def __next__(self):
        try:
            return next(self._iterator)
        except DataError as exc:
            lines = str(exc).strip().splitlines()
            if len(lines) <= 1:
                raise
            raise DataError(lines[-1].split("DataError: ", 1)[-1]) from None


def _loader(dataset: ImageDataset, batch_size: int, workers: int,
            shuffle: torch.Generator | None = None) -> DataLoader:
    """A training loader (``shuffle`` given) drops a last batch of a single image: BatchNorm cannot train on
    it (e.g. 1x1 maps in an ImageNet network fed 32x32 images)."""
    lone_last = shuffle is not None and len(dataset) > batch_size and len(dataset) % batch_size == 1
    # A training loader's workers start afresh each epoch: they take their augmentation seeds from the
    # generator, which the training loop re-seeds per epoch (exact resume); eval loaders keep theirs.
    return _Loader(dataset, batch_size=batch_size, shuffle=shuffle is not None, generator=shuffle,
                   drop_last=lone_last, num_workers=workers, persistent_workers=workers > 0 and shuffle is None,
                   worker_init_fn=_seed_worker if workers > 0 else None)


def _seed_worker(worker_id: int) -> None:
    """Give each worker its own augmentation stream, derived from the loader's seeded base seed."""
    info = torch.utils.data.get_worker_info()
    info.dataset.reseed(info.seed % 2**63)
