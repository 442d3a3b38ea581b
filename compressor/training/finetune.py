"""Fine-tuning after surgery: SGD with momentum, cosine/step/constant schedule with linear warm-up, weight
decay, label smoothing; the epoch with the best *validation* accuracy is kept (never chosen on test).
The optimizer is built here, after surgery, so it only ever sees the pruned parameters.

Training-time methods (SFP/HFP/GHFP, SWP) train through the same loop as its
:class:`~compressor.methods.base.TrainingHooks`: they name frozen parameter elements (no gradient, no
momentum, no weight-decay drift: their gradients are zeroed before every step, the elements re-zeroed and
their momentum cleared after it) and are called around every step and at the end of every epoch. The
optimizer stays here; methods never see it.

How the steps run (bfloat16 autocast where native, channels-last, ``torch.compile``, threads) is
``training/throughput.py``; the model leaves the loop in the default layout, its weights always float32.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..config import FinetuneConfig
from ..errors import TrainingError
from ..methods.base import TrainingHooks
from ..progress import StatusBar, log
from . import distributed
from .checkpoint import load_checkpoint, restore_rng, save_checkpoint, seed_epoch
from .task import Task, to_device
from .throughput import Speed, Threads


@dataclass(frozen=True)
class EpochLog:
    epoch: int  # 1-based
    lr: float  # at the start of the epoch
    train_loss: float
    train_accuracy: float | None  # top-1 on the training batches (None for a custom task)
    val_accuracy: float  # the task's primary value on the validation split
    seconds: float


@dataclass(frozen=True)
class LoopOptions:
    """Where the loop checkpoints and how it seeds; the teacher for distillation (``cfg.distill``); the task.

    ``checkpoint``: written after every epoch (rank 0) and resumed from when it exists at the start.
    ``seed`` and ``name`` derive the per-epoch random streams (see training/checkpoint.py)."""

    checkpoint: Path | None = None
    seed: int = 0
    name: str = "finetune"
    teacher: nn.Module | None = None
    task: Task | None = None  # the loss, the validation metric and its direction (None: classification)


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class FinetuneResult:
    epochs: tuple[EpochLog, ...]
    best_epoch: int | None  # None when no epoch ran
    best_val_accuracy: float | None
    seconds: float
    resumed_from: int = 0  # the epoch a checkpoint brought back (0: started fresh)


def finetune(model: nn.Module, train_loader, val_loader, cfg: FinetuneConfig, device: torch.device,
             hooks: TrainingHooks | None = None, keep_best: bool = True, options: LoopOptions | None = None
             ) -> FinetuneResult:
    """Train ``model`` in place for ``cfg.epochs``; leave it at its best validation epoch (``keep_best``) or at
    the last one (training-time methods: their masks belong to the last epoch). Under torchrun the model
    trains as DistributedDataParallel on a distributed sampler; every rank ends with the same weights."""
    start = time.perf_counter()
    if cfg.epochs == 0:
        return FinetuneResult(epochs=(), best_epoch=None, best_val_accuracy=None, seconds=0.0)
    options = options or LoopOptions()
    if cfg.distill is not None and options.teacher is None:
        raise ValueError("finetune.distill is set but no teacher model was given")
    speed = Speed.resolve(cfg, device)
    with Threads(speed.threads):
        try:
            loop = _Loop.build(model, train_loader, val_loader, cfg, device, hooks or TrainingHooks(), options, speed)
            logs, best, resumed = _train(loop, keep_best)
        finally:
            model.to(memory_format=torch.contiguous_format)  # export and evaluation see the default layout
    model.eval()
    return FinetuneResult(epochs=tuple(logs), best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"],
                          seconds=time.perf_counter() - start, resumed_from=resumed["epoch"] if resumed else 0)


def _train(loop: _Loop, keep_best: bool) -> tuple[list[EpochLog], dict, dict | None]:
    """Every epoch left (after a resume), checkpointing each; the logs, the best epoch and the resumed state."""
    model, cfg, options = loop.model, loop.cfg, loop.options
    logs, best = [], None
    resumed = _resume(options.checkpoint, loop)
    if resumed:
        logs, best = [EpochLog(**e) for e in resumed["logs"]], resumed["best"]
        log(f"  resumed after epoch {resumed['epoch']}/{cfg.epochs} from {options.checkpoint}")
    log(f"  {options.name}: {loop.speed.describe()} on {loop.device.type}")
    estimate = _Estimate(loop, cfg.epochs - len(logs))
    for epoch in range(len(logs) + 1, cfg.epochs + 1):
        seed_epoch(loop.train, options.seed, options.name, epoch, distributed.rank())
        entry = _train_epoch(loop, epoch, estimate)
        logs.append(entry)
        log(f"  epoch {epoch}/{cfg.epochs}: {_describe(entry, loop.task)}")
        if keep_best and (best is None or loop.task.better(entry.val_accuracy, best["val_accuracy"])):
            best = {"epoch": epoch, "val_accuracy": entry.val_accuracy, "state": _cpu_state(model)}
        if options.checkpoint is not None and distributed.is_main():
            save_checkpoint(options.checkpoint, epoch, model, loop.optimizer, loop.scheduler, [vars(e) for e in logs],
                            best, loop.hooks.state_dict())
    if keep_best:
        model.load_state_dict(best["state"])
    else:
        best = {"epoch": logs[-1].epoch, "val_accuracy": logs[-1].val_accuracy}
    return logs, best, resumed


@dataclass(frozen=True)
class _Loop:
    """What every epoch of one training run shares. ``net`` is what runs forward (``model`` or its DDP
    wrapper); hooks see ``model``."""

    net: nn.Module
    model: nn.Module
    train: object
    val: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    cfg: FinetuneConfig
    device: torch.device
    steps: int
    hooks: TrainingHooks
    options: LoopOptions
    speed: Speed
    compiled: nn.Module | None = None  # net under torch.compile (finetune.compile), for full batches

    @classmethod
    def build(cls, model: nn.Module, train_loader, val_loader, cfg: FinetuneConfig, device: torch.device,
              hooks: TrainingHooks, options: LoopOptions, speed: Speed) -> _Loop:
        """The optimizer is built here, after surgery (and after the layout change, which keeps the parameter
        objects): it only ever sees the pruned parameters."""
        train_loader = distributed.shard_train_loader(train_loader, options.seed)
        if speed.channels_last:
            model.to(memory_format=torch.channels_last)
        net = distributed.wrap(model, device)
        steps = _steps_per_epoch(train_loader, cfg)
        optimizer = build_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))
        compiled = torch.compile(net) if speed.compile else None
        return cls(net, model, train_loader, val_loader, optimizer, scheduler, cfg, device, steps, hooks, options,
                   speed, compiled)

    @property
    def task(self) -> Task:
        return self.options.task or _CLASSIFIER

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The compiled net for full batches; an odd-sized one runs eagerly rather than compiling again."""
        full = self.compiled is not None and images.shape[0] == getattr(self.train, "batch_size", None)
        return (self.compiled if full else self.net)(images)


def _resume(path: Path | None, loop: _Loop) -> dict | None:
    """Bring back the state after the last finished epoch, if a checkpoint is there."""
    if path is None or not Path(path).exists():
        return None
    state = load_checkpoint(path)
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    loop.hooks.load_state(loop.model, state["method"])
    restore_rng(state["rng"])
    return state


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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


class _Estimate:
    """One line, early in the first epoch a process trains, saying how long the training will take (from the
    mean time of its first steps after the first, times the steps left), when that is more than ``LONG_S``: the
    user learns that 30 CPU epochs are hours before waiting for them, not after."""

    STEPS, LONG_S = 10, 60.0

    def __init__(self, loop: _Loop, epochs: int):
        self.loop, self.epochs = loop, epochs
        self.start: float | None = None
        self.done = epochs == 0

    def after(self, step: int) -> None:
        """Called after optimizer step ``step`` (1-based) of the first epoch."""
        if self.done:
            return
        if step == 1:  # the first step pays for allocations and kernel selection: time the ones after it
            self.start = time.perf_counter()
            return
        steps = self.loop.steps
        if step < min(self.STEPS + 1, steps):
            return
        self.done = True
        per_step = (time.perf_counter() - self.start) / (step - 1)
        total = per_step * (steps * self.epochs - 1)
        if total > self.LONG_S:
            log(f"  {self.loop.options.name}: about {_duration(total)} for {self.epochs} epoch(s) of {steps} steps "
                f"({per_step:.2f} s per step from the first {step - 1}; validation passes come on top)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _train_epoch(loop: _Loop, epoch: int, estimate: _Estimate) -> EpochLog:
    start = time.perf_counter()
    lr = loop.optimizer.param_groups[0]["lr"]
    loop.net.train()
    loss_sum, correct, seen, counted = 0.0, 0, 0, True
    with StatusBar(f"{loop.options.name} epoch {epoch}/{loop.cfg.epochs}", total=loop.steps) as bar:
        for step, (images, targets) in enumerate(loop.train):
            if step >= loop.steps:
                break
            images, targets = images.to(loop.device, non_blocking=True), to_device(targets, loop.device)
            outputs, value = _step(loop, images, targets, epoch, step + 1)
            loss_sum += value * images.shape[0]
            hits = loop.task.correct(outputs, targets)
            counted, correct = counted and hits is not None, correct + (hits or 0)
            seen += images.shape[0]
            bar.advance(f"loss {loss_sum / seen:.3f}")
            estimate.after(step + 1)
    loop.hooks.end_epoch(loop.model, epoch)
    distributed.sync_buffers(loop.model)
    _check_weights(loop.model, epoch, loop.options)
    loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], loop.device)
    val = loop.task.evaluate(loop.model, loop.val, loop.device, description="validate", sharded=True)
    return EpochLog(epoch=epoch, lr=lr, train_loss=loss_sum / max(1, seen),
                    train_accuracy=100.0 * correct / max(1, seen) if counted else None,
                    val_accuracy=val.accuracy, seconds=time.perf_counter() - start)


_CLASSIFIER = Task()


def _describe(entry: EpochLog, task: Task) -> str:
    train = "" if entry.train_accuracy is None else f", train {entry.train_accuracy:.2f}%"
    val = f"val {entry.val_accuracy:.2f}%" if task.primary == "top1" else f"val {task.primary} {entry.val_accuracy:.4g}"
    return f"loss {entry.train_loss:.4f}{train}, {val} ({entry.seconds:.1f} s)"


def _step(loop: _Loop, images: torch.Tensor, targets, epoch: int, step: int) -> tuple[object, float]:
    """One optimizer step with the hooks around it; the outputs and the loss value."""
    images = loop.speed.layout(images)
    with loop.speed.autocast_context(loop.device):
        outputs = loop.forward(images)
        loss = training_loss(outputs, images, targets, loop.cfg, loop.options.teacher, loop.task)
    value = loss.item()  # the one host sync of the step: the NaN check and the running loss both use it
    _check_finite(value, epoch, step, loop.options, loop.device)
    loop.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loop.hooks.before_step(loop.model)
    frozen = loop.hooks.frozen()
    _block_gradients(frozen)
    loop.optimizer.step()
    _refreeze(frozen, loop.optimizer)
    loop.hooks.after_step(loop.model)
    loop.scheduler.step()
    return outputs, value


def training_loss(outputs, images: torch.Tensor, targets, cfg: FinetuneConfig, teacher: nn.Module | None,
                  task: Task | None = None) -> torch.Tensor:
    """The task's loss (a classifier's cross-entropy with label smoothing), blended with the task's distillation
    term when ``cfg.distill`` is set; in float32 whatever precision the outputs came in (bfloat16 autocast)."""
    task = task or _CLASSIFIER
    loss = task.loss(outputs, targets, cfg.label_smoothing)
    if cfg.distill is None:
        return loss
    with torch.no_grad():
        target = teacher(images)
    kd = task.distillation(outputs, target, cfg.distill.temperature)
    return (1 - cfg.distill.weight) * loss + cfg.distill.weight * kd


def _check_weights(model: nn.Module, epoch: int, options: LoopOptions) -> None:
    """A finite loss can still leave non-finite weights (an overflowing last step): never checkpoint them.
    Every rank holds the same weights (DDP), so every rank raises together."""
    bad = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise _diverged(options, epoch, f"non-finite weights after epoch {epoch} (first: {bad[0]})")


def _check_finite(loss: float, epoch: int, step: int, options: LoopOptions, device: torch.device) -> None:
    """Stop on a NaN/inf loss (on every rank at once), naming the epoch, step and the last good checkpoint."""
    bad = not math.isfinite(loss)
    if distributed.active():
        bad = distributed.all_reduce_sum([float(bad)], device)[0] > 0
    if bad:
        raise _diverged(options, epoch, f"the loss became {loss} at epoch {epoch}, step {step}")


def _diverged(options: LoopOptions, epoch: int, what: str) -> TrainingDiverged:
    kept = (f"the last good checkpoint (epoch {epoch - 1}) is {options.checkpoint}"
            if options.checkpoint is not None and epoch > 1 else "no earlier epoch checkpoint exists")
    return TrainingDiverged(f"{options.name}: {what}; {kept}. Lower finetune.lr (or raise finetune.warmup_epochs) "
                            "and run again")


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
