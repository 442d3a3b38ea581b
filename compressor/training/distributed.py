"""torch.distributed for ``torchrun --nproc-per-node N -m compressor run recipe.yaml``.

One process per device. Every rank loads the recipe, model and data; rank 0 alone measures the baseline,
decides the pruning and writes files; the pruned network (pruning history + state_dict) is broadcast so
every rank holds the same architecture; all ranks fine-tune under DistributedDataParallel with a
distributed sampler; rank 0 exports, profiles and reports. gloo on CPU, nccl on CUDA.

Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) every function here is a cheap no-op, so the
single-process path is the same code.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from ..errors import CompressorError

T = TypeVar("T")


class RankFailed(CompressorError):
    """Raised on the other ranks when rank 0 failed: same one-line message and exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def launched() -> bool:
    """True under torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


_suspended = False


def active() -> bool:
    """True in a torchrun process group, except inside :func:`on_main` (rank 0 alone: no collectives)."""
    return not _suspended and torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (no-op otherwise); returns this rank's device."""
    if not launched() or active():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    # Rank 0 works alone for long stretches (baseline, pruning decision, a training-time method's mask
    # training) while the others wait in a broadcast: the default 10 min (nccl) / 30 min (gloo) would abort them.
    minutes = int(os.environ.get("COMPRESSOR_DIST_TIMEOUT_MIN", "1440"))
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         timeout=datetime.timedelta(minutes=minutes))
    return device


def shutdown() -> None:
    if active():
        torch.distributed.destroy_process_group()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for small results, state_dicts and histories)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only, as if it were a single process (no collectives inside); its failure is
    re-raised on every rank, so the others exit with rank 0's error instead of waiting. Returns ``fn()``'s
    result on rank 0, else None. (A failure outside ``on_main`` on one rank only is ended by torchrun, which
    stops the other workers.)"""
    global _suspended
    if not active():
        return fn()
    result, failure = None, None
    if is_main():
        _suspended = True
        try:
            result = fn()
        except BaseException as exc:
            failure = exc
        finally:
            _suspended = False
    message = None if failure is None else (str(failure), getattr(failure, "exit_code", 1))
    message = broadcast(message)
    if failure is not None:
        raise failure
    if message is not None:
        raise RankFailed(f"rank 0 failed: {message[0]}", message[1])
    return result


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def check_batch(batch_size: int, field: str = "data.batch_size") -> None:
    """``field`` (``data.batch_size`` / ``task.batch_size``) is the global batch: it must split evenly over the ranks."""
    world = world_size()
    if batch_size % world:
        raise CompressorError(f"{field}: {batch_size} does not split over {world} processes (it is the "
                              f"global batch; each rank takes batch_size / {world}); use a multiple of {world}")


def shard_train_loader(loader, seed: int):
    """Under torchrun: the same dataset behind a DistributedSampler (its own order per epoch, every image
    once per epoch across ranks) with batch_size / world per rank; a loader that holds its images in memory
    (data/memory.py) takes its own share of one order and keeps the sampler's loader as its fallback.
    Unchanged outside torchrun."""
    if not active():
        return loader
    from torch.utils.data import DataLoader, Dataset
    from torch.utils.data.distributed import DistributedSampler

    from .checkpoint import derive_seed

    per_image = getattr(loader, "fallback", None) or loader
    if not isinstance(getattr(per_image, "dataset", None), Dataset) or getattr(loader, "batch_size", None) is None:
        from ..errors import DataError

        raise DataError(f"task.loaders: under torchrun the train part must be a torch DataLoader with a batch_size "
                        f"(it is sharded with a DistributedSampler); got a {type(loader).__name__}")
    check_batch(loader.batch_size, "the train loader's batch_size (data.batch_size, or the one task.loaders gave it)")
    per_rank = loader.batch_size // world_size()
    sampler = DistributedSampler(per_image.dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
                                 seed=derive_seed(seed, "shard") % 2**31)
    lone_last = len(sampler) > per_rank and len(sampler) % per_rank == 1  # BatchNorm cannot train on one image
    sharded = DataLoader(per_image.dataset, batch_size=per_rank, sampler=sampler, num_workers=per_image.num_workers,
                         worker_init_fn=per_image.worker_init_fn, drop_last=lone_last,
                         collate_fn=per_image.collate_fn)
    return loader.shard(rank(), world_size(), per_rank, sharded) if hasattr(loader, "shard") else sharded


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` under torchrun (rank 0's weights are broadcast on entry)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP copies them at the start of each
    forward, so after an epoch's last step each rank still holds its own; validation and the saved model use
    rank 0's."""
    if not active():
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)
