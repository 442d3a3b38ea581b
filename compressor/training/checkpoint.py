"""Epoch checkpoints of the training loop, and the per-epoch random streams that make resuming exact.

After every epoch rank 0 writes one file atomically (temp file + rename): model, optimizer, scheduler,
the epoch logs, the best epoch's weights, the method's state (masks, skeleton history) and the RNG states.
A crash leaves the previous epoch's file intact, never a half-written one.

Exactness does not rest on restoring RNG states: the streams a training epoch draws from (shuffle order,
augmentation, dropout) are re-seeded at the start of every epoch from (recipe seed, loop, epoch, rank), so an
epoch run after a resume draws exactly what it would have drawn in the uninterrupted run, on any number of
ranks. The global RNG states are stored and restored as well (for anything else that draws from them).
The file holds only tensors and plain Python values: it loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .._io import save_torch
from ..errors import CompressorError

FORMAT = 1


def derive_seed(seed: int, *tags: object) -> int:
    """An independent 63-bit seed for one use of the recipe seed (``tags``: loop name, epoch, rank, stream)."""
    words = [seed % 2**32, seed // 2**32 % 2**32] + [zlib.crc32(str(t).encode()) for t in tags]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] % 2**63)


def seed_epoch(train_loader, seed: int, loop: str, epoch: int, rank: int) -> None:
    """Re-seed the shuffle, augmentation and global torch streams for one epoch of one loop."""
    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler: its seed is fixed, the epoch varies the order
        sampler.set_epoch(epoch)
    if getattr(train_loader, "generator", None) is not None:
        train_loader.generator.manual_seed(derive_seed(seed, loop, epoch, "shuffle"))
    dataset = getattr(train_loader, "dataset", None)
    if hasattr(dataset, "reseed"):
        dataset.reseed(derive_seed(seed, loop, epoch, rank, "augment"))
    torch.manual_seed(derive_seed(seed, loop, epoch, rank, "torch"))


def save_checkpoint(path: Path, epoch: int, model: nn.Module, optimizer, scheduler, logs: list[dict],
                    best: dict | None, method_state: dict) -> None:
    save_torch(path, {
        "format": FORMAT, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "logs": logs, "best": best, "method": method_state,
        "rng": _rng_states(),
    })


def load_checkpoint(path: Path) -> dict:
    """Read an epoch checkpoint written by :func:`save_checkpoint`; one clear line if it is unusable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise CompressorError(f"{path}: cannot read this training checkpoint ({type(exc).__name__}); delete it to "
                              "restart that training phase from its first epoch") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CompressorError(f"{path}: not a compressor training checkpoint (format {FORMAT}); delete it to restart "
                              "that training phase from its first epoch")
    return state


def restore_rng(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(("MT19937", np.asarray(states["numpy"][0], dtype=np.uint32), *states["numpy"][1:]))
    random.setstate(_as_tuple(states["python"]))


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate()}


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
