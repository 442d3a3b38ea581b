"""When channels go: all at once (``prune.prune``), one group at a time with fine-tuning in between
(:func:`prune_layerwise`, HRank's schedule), or after a training-time method trained with masks
(:func:`train_with_masks`, SFP/HFP/GHFP/SWP), whose final masks then go through the same surgery path.

Training between steps uses the recipe's fine-tuning optimizer settings (``training.finetune``); a
schedule never builds an optimizer itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..config import FinetuneConfig, PruningConfig
from ..methods.base import CalibrationContext, PruningMethod, TrainingHooks, TrainingMethod
from ..progress import log
from ..training import LoopOptions, finetune
from .graph import example_input
from .plan import Rounding
from .prune import Surgery, analyse, carry_out, decide, plan_counts, summarize


@dataclass(frozen=True)
class Trainer:
    """How a schedule trains: the loaders, the recipe's fine-tuning settings, the seed and the distillation
    teacher (the unpruned model when ``finetune.distill`` is set)."""

    train: object
    val: object
    finetune: FinetuneConfig
    device: torch.device
    seed: int
    teacher: nn.Module | None = None
    task: object = None  # training.task.Task (None: classification)

    def run(self, model: nn.Module, epochs: int, name: str, hooks: TrainingHooks | None = None,
            checkpoint: Path | None = None, warmup: int = 0) -> None:
        """``epochs`` epochs of the recipe's optimizer on ``model``. Plain training keeps its best validation
        epoch; with a method's ``hooks`` the last epoch is kept (the masks belong to it)."""
        tune = self.finetune.model_copy(update={"epochs": epochs, "warmup_epochs": warmup})
        options = LoopOptions(checkpoint=checkpoint, seed=self.seed, name=name, teacher=self.teacher, task=self.task)
        finetune(model, self.train, self.val, tune, self.device, hooks=hooks, keep_best=hooks is None, options=options)


def train_with_masks(model: nn.Module, method: TrainingMethod, input_shape: tuple[int, int, int], cfg: PruningConfig,
                     trainer: Trainer, checkpoint: Path | None) -> nn.Module:
    """Train ``method.epochs`` epochs with the method's masks (resumable per epoch from ``checkpoint``), make every
    pruned element final and release the masks; returns a copy of that masked network, which the physically
    pruned one must match."""
    layout = analyse(model, example_input(input_shape, trainer.device), cfg)
    plan = plan_counts(layout, cfg)
    method.begin(model, [info for info, _ in layout.groups], plan.kept, Rounding.of(cfg))
    warmup = min(trainer.finetune.warmup_epochs, method.epochs - 1)
    trainer.run(model, method.epochs, f"{method.name} training", hooks=method, checkpoint=checkpoint, warmup=warmup)
    method.finish(model)  # the checkpoint goes once the prune stage is recorded (ledger)
    masked = copy.deepcopy(model)
    method.release()
    return masked


def prune_layerwise(model: nn.Module, input_shape: tuple[int, int, int], method: PruningMethod, cfg: PruningConfig,
                    ctx: CalibrationContext, trainer: Trainer, oracle=None) -> Surgery:
    """HRank's schedule: scores once, then one group at a time in model order, fine-tuning
    ``pruning.layerwise_epochs`` after each (no epoch checkpoints: a killed run repeats the prune stage)."""
    decision = decide(model, input_shape, method, cfg, ctx, oracle)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    keys = sorted(decision.chosen, key=order.get)
    history, done = [], []
    for step, key in enumerate(keys, start=1):
        steps, compensation = carry_out(model, decision, method, cfg, ctx, keys=[key])
        history += steps
        done.append(compensation)
        log(f"  layerwise {step}/{len(keys)}: {key} loses {len(decision.chosen[key])} channels")
        if cfg.layerwise_epochs:
            trainer.run(model, cfg.layerwise_epochs, f"layerwise {step}")
    return summarize(model, decision, cfg, history, done)
