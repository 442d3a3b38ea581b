"""How the training loop runs fast: precision, memory format, ``torch.compile`` and threads (``finetune.*``).

- ``precision: auto`` trains under bfloat16 autocast where the device computes bfloat16 natively: a CPU with
  AVX-512 BF16 or AMX (oneDNN then runs convolutions and GEMMs in bfloat16, a 2048^3 GEMM 6.5x the float32
  rate on the machine of benchmarks/README.md), a CUDA device that supports it; float32 elsewhere.
  The weights, the optimizer and every evaluation stay float32: autocast only lowers the precision of the
  convolutions and matrix products inside a training step (the loss is computed in float32).
- ``channels_last`` runs the training steps in NHWC (oneDNN's and cuDNN's native layout); the model goes back
  to the default layout when training ends, so export and evaluation see the same tensors as before.
- ``compile`` wraps the training forward in ``torch.compile``: it costs a compilation at the start of every
  training run (tens of seconds for a ResNet-56) and pays only for long runs; a batch of another size (the
  last one of an epoch) runs eagerly instead of compiling again.
- ``threads`` sets torch's intra-op threads for the loop (default: what torch chose, the physical cores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import FinetuneConfig


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions and GEMMs natively (not emulated in float32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


@dataclass(frozen=True)
class Speed:
    """The resolved ``finetune`` settings of one training run."""

    autocast: torch.dtype | None  # None: float32
    channels_last: bool
    compile: bool
    threads: int

    @classmethod
    def resolve(cls, cfg: FinetuneConfig, device: torch.device) -> Speed:
        if cfg.precision == "bf16" and not native_bf16(device):
            from ..errors import TrainingError

            raise TrainingError(f"finetune.precision: bf16, but {device.type} has no native bfloat16 (AVX-512 BF16 / "
                                "AMX on a CPU, a bf16-capable GPU); set finetune.precision: auto or fp32")
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and native_bf16(device))
        return cls(autocast=torch.bfloat16 if bf16 else None, channels_last=cfg.channels_last, compile=cfg.compile,
                   threads=cfg.threads or torch.get_num_threads())

    def describe(self) -> str:
        threads = f"{self.threads} thread" + ("s" if self.threads > 1 else "")
        parts = ["bf16 autocast" if self.autocast is not None else "fp32",
                 "channels-last" if self.channels_last else "contiguous", threads]
        return ", ".join(parts + (["torch.compile"] if self.compile else []))

    def autocast_context(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None)

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.ndim == 4 else images


class Threads:
    """``torch.set_num_threads(n)`` for a block, the previous count restored after it."""

    def __init__(self, threads: int):
        self.threads, self.before = threads, None

    def __enter__(self) -> Threads:
        self.before = torch.get_num_threads()
        if self.threads != self.before:
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)
