"""Fine-tuning after surgery: SGD with momentum, cosine/step/constant schedule with linear warm-up, weight
decay, label smoothing; the epoch with the best *validation* accuracy is kept (never chosen on test).
The optimizer is built here, after surgery, so it only ever sees the pruned parameters.

Training-time methods (SFP/HFP/GHFP) train through the same loop with :class:`TrainingHooks`: they name
frozen parameter elements (no gradient, no momentum, no weight-decay drift: their gradients are zeroed
before every step, the elements re-zeroed and their momentum cleared after it) and are called at the end of
every epoch. The optimizer stays here; methods never see it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..progress import StatusBar, log
from ..recipe import FinetuneConfig
from .evaluate import evaluate


@dataclass(frozen=True)
class EpochLog:
    epoch: int  # 1-based
    lr: float  # at the start of the epoch
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    seconds: float


class TrainingHooks:
    """What a training-time method plugs into the loop; the defaults do nothing."""

    def frozen(self) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        """(parameter, boolean mask of its frozen elements): kept exactly zero and untouched by the optimizer."""
        return []

    def before_step(self, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        """Called after ``backward`` and before the optimizer step (e.g. to add a sub-gradient)."""

    def end_epoch(self, model: nn.Module, epoch: int) -> None:  # noqa: B027 (optional hook)
        """Called after every epoch's optimizer steps, before validation (1-based epoch)."""


@dataclass(frozen=True)
class FinetuneResult:
    epochs: tuple[EpochLog, ...]
    best_epoch: int | None  # None when no epoch ran
    best_val_accuracy: float | None
    seconds: float


def finetune(model: nn.Module, train_loader, val_loader, cfg: FinetuneConfig, device: torch.device,
             hooks: TrainingHooks | None = None, keep_best: bool = True) -> FinetuneResult:
    """Train ``model`` in place for ``cfg.epochs``; leave it at its best validation epoch (``keep_best``) or at
    the last one (training-time methods: their masks belong to the last epoch)."""
    start = time.perf_counter()
    if cfg.epochs == 0:
        return FinetuneResult(epochs=(), best_epoch=None, best_val_accuracy=None, seconds=0.0)
    hooks = hooks or TrainingHooks()
    steps = _steps_per_epoch(train_loader, cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))
    logs, best, best_state = [], None, None
    for epoch in range(1, cfg.epochs + 1):
        log_entry = _train_epoch(model, train_loader, val_loader, optimizer, scheduler, cfg, device, epoch, steps,
                                 hooks)
        logs.append(log_entry)
        log(f"  epoch {epoch}/{cfg.epochs}: loss {log_entry.train_loss:.4f}, train {log_entry.train_accuracy:.2f}%, "
            f"val {log_entry.val_accuracy:.2f}% ({log_entry.seconds:.1f} s)")
        if keep_best and (best is None or log_entry.val_accuracy > best.val_accuracy):
            best, best_state = log_entry, copy.deepcopy(model.state_dict())
    if keep_best:
        model.load_state_dict(best_state)
    else:
        best = logs[-1]
    model.eval()
    return FinetuneResult(epochs=tuple(logs), best_epoch=best.epoch, best_val_accuracy=best.val_accuracy,
                          seconds=time.perf_counter() - start)


def build_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """SGD; weight decay on weights of conv/linear layers only, not on BatchNorm parameters or biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(cfg: FinetuneConfig, steps_per_epoch: int):
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    milestones = [round(m * total) for m in cfg.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def _steps_per_epoch(loader, cfg: FinetuneConfig) -> int:
    steps = len(loader)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def _train_epoch(model, train_loader, val_loader, optimizer, scheduler, cfg, device, epoch, steps,
                 hooks: TrainingHooks) -> EpochLog:
    start = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    with StatusBar(f"fine-tune epoch {epoch}/{cfg.epochs}", total=steps) as bar:
        for step, (images, labels) in enumerate(train_loader):
            if step >= steps:
                break
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hasattr(hooks, "before_step"):
                hooks.before_step(model)
            frozen = hooks.frozen()
            _block_gradients(frozen)
            optimizer.step()
            _refreeze(frozen, optimizer)
            scheduler.step()
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.numel()
            bar.advance(f"loss {loss_sum / seen:.3f}")
    hooks.end_epoch(model, epoch)
    val = evaluate(model, val_loader, device, description="validate")
    return EpochLog(epoch=epoch, lr=lr, train_loss=loss_sum / max(1, seen), train_accuracy=100.0 * correct / max(1, seen),
                    val_accuracy=val.accuracy, seconds=time.perf_counter() - start)


@torch.no_grad()
def _block_gradients(frozen: list) -> None:
    for param, mask in frozen:
        if param.grad is not None:
            param.grad[mask] = 0


@torch.no_grad()
def _refreeze(frozen: list, optimizer: torch.optim.Optimizer) -> None:
    """Frozen elements stay exactly zero: no weight-decay or momentum drift survives a step."""
    for param, mask in frozen:
        param[mask] = 0
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffer[mask] = 0
