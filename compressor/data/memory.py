"""The training loader that holds the decoded train part in memory (``data.in_memory``).

Fine-tuning on a CPU spends its time in the network, but a per-image loader still costs a Python call, a
handful of small tensor ops and a collate per image, and a zip of JPEGs is decoded again in every worker.
:class:`MemoryTrainLoader` decodes the train part once, on its first iteration, into one uint8
``(N, C, H, W)`` tensor, and builds each batch with a few batched ops: one gather that does the
pad-and-random-crop and the horizontal flip of every image at once, then the conversion to float and the
normalisation. The arithmetic is the per-image path's (pixels / 255, zero padding, ``(x - mean) / std``),
so for the same crop offsets and flips the batches are bit for bit the per-image ones
(tests/unit/data/test_memory.py); the random draws are made per batch instead of per image, from the same
seeded generators, so an epoch after ``--resume`` draws exactly what the uninterrupted run drew.

It applies when every image is stored at the network's input size and channel count and the augmentation
is crop/flip only (no ``random_resized_crop``, no ``resize``), and the tensor stays under
``MEMORY_MAX_BYTES``; ``in_memory: auto`` otherwise keeps the per-image loader (saying why), and
``in_memory: true`` stops with the reason. CIFAR-10 (50,000 images of 3x32x32) takes 147 MiB.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError
from ..progress import log

MEMORY_MAX_BYTES = 4 * 2**30  # in_memory: auto keeps larger train parts on the per-image loader


class MemoryTrainLoader:
    """Shuffled, augmented, normalised ``(images float32 (B, C, H, W), labels int64 (B,))`` batches of
    ``dataset`` (an :class:`~compressor.data.loaders.ImageDataset` with a train transform).

    ``generator`` draws the order (re-seeded per epoch by the training loop, as a DataLoader's);
    ``dataset.generator`` draws the augmentation (``dataset.reseed``). ``fallback`` is the per-image loader
    used when ``auto`` finds an image it cannot hold (``required``: raise instead) or was told why it cannot
    (``refused``, from :func:`memory_plan`; said once, on the first epoch). ``rank``/``world``
    give this process its share of every epoch's order (torchrun; :meth:`shard`)."""

    def __init__(self, dataset, batch_size: int, generator: torch.Generator, fallback, required: bool = False,
                 refused: str | None = None, rank: int = 0, world: int = 1):
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator
        self.fallback, self.required, self.refused = fallback, required, refused
        self.rank, self.world = rank, world
        self._images: torch.Tensor | None = None
        self._labels = torch.from_numpy(dataset.source.labels[dataset.indices])
        self._use_fallback = False

    @property
    def sampler(self):
        """The fallback's sampler, so that the loop's ``set_epoch`` reaches a DistributedSampler (torchrun)."""
        return getattr(self.fallback, "sampler", None)

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.dataset) / self.world)
        full, rest = divmod(per_rank, self.batch_size)
        return full + (rest > 1 or (rest == 1 and per_rank <= self.batch_size))  # a lone last image is dropped

    def __iter__(self):
        if self._images is None and not self._use_fallback:
            self._load()
        if self._use_fallback:
            yield from self.fallback
            return
        order = self._order()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.dataset.transform.batch(self._images[index], self.dataset.generator), self._labels[index]

    def shard(self, rank: int, world: int, batch_size: int, fallback) -> MemoryTrainLoader:
        """This rank's loader under torchrun: the same images and generators, ``batch_size`` per rank;
        ``fallback`` is the per-image loader of this rank (a DistributedSampler over ``dataset``)."""
        return MemoryTrainLoader(self.dataset, batch_size, self.generator, fallback, self.required, self.refused,
                                 rank, world)

    def _order(self) -> torch.Tensor:
        """One permutation per epoch, the same on every rank (the generator is seeded without the rank); each
        rank takes every world-th image of it, padded by repetition as DistributedSampler does."""
        order = torch.randperm(len(self.dataset), generator=self.generator)
        if self.world == 1:
            return order
        per_rank = math.ceil(len(order) / self.world)
        padded = order.repeat(math.ceil(per_rank * self.world / len(order)))[:per_rank * self.world]
        return padded[self.rank::self.world]

    def _load(self) -> None:
        """Decode the train part once; an image of another shape or channel count keeps the per-image loader."""
        if self.refused is not None:  # known from the recipe: said on the first epoch, where it matters
            self._refuse(self.refused)
            return
        dataset = self.dataset
        expected = (dataset.transform.channels, *dataset.transform.size)
        images = dataset.source.read_many(dataset.indices)
        shapes = [tuple(images.shape[1:])] if isinstance(images, np.ndarray) else [tuple(i.shape) for i in images]
        wrong = next((i for i, shape in enumerate(shapes) if shape != expected), None)
        if wrong is not None:
            index = int(dataset.indices[wrong])  # one shape for an (N, C, H, W) array: its first image
            self._refuse(f"image {index} of {dataset.source.where} is {'x'.join(map(str, shapes[wrong]))} "
                         f"(C x H x W), not the network's {'x'.join(map(str, expected))}")
            return
        self._images = torch.from_numpy(np.ascontiguousarray(images if isinstance(images, np.ndarray)
                                                             else np.stack(images)))
        log(f"  {dataset.source.field}: {len(dataset):,} training images held in memory "
            f"({self._images.numel() / 2**20:.{0 if self._images.numel() >= 10 * 2**20 else 1}f} MiB, uint8), "
            "augmented in batches")

    def _refuse(self, reason: str) -> None:
        if self.required:
            raise refusal(reason)
        log(f"  data.in_memory: {reason}; training reads images one by one")
        self._use_fallback = True


def refusal(reason: str) -> DataError:
    """The one line of ``in_memory: true`` when the train part cannot be held (``reason``)."""
    return DataError(f"data.in_memory: true, but {reason}; set data.in_memory: auto (or false) to read the "
                     "training images one by one")


def memory_plan(cfg, source, count: int, input_shape: tuple[int, int, int]) -> str | None:
    """Why the train part cannot be held in memory (None: it can, as far as known before decoding)."""
    if cfg.augment.random_resized_crop:
        return "augment.random_resized_crop resizes every image afresh"
    if cfg.resize is not None:
        return "data.resize resizes every image"
    if source.channels != input_shape[0]:
        return f"the images have {source.channels} channels and the network takes {input_shape[0]}"
    size = count * math.prod(input_shape)
    if size > MEMORY_MAX_BYTES:
        return (f"{count:,} images of {'x'.join(map(str, input_shape))} take {size / 2**30:.1f} GiB, over the "
                f"{MEMORY_MAX_BYTES / 2**30:.0f} GiB that in_memory: auto holds")
    return None
