"""The fine-tune stage: SGD on the pruned network (all ranks under torchrun; resumable per epoch from
``pruned/finetune.ckpt.pt``), the best epoch chosen on the validation split; then, on rank 0, the final
model's accuracy and cost and the pruned model saved without pickles (state_dict + pruning history)."""

from __future__ import annotations

import torch.nn as nn

from .._io import write_json
from ..config import FinetuneConfig, MethodOptions
from ..methods import method_for
from .load import Context
from .results import Pruned, Tuned


def finetune(ctx: Context, model: nn.Module, cfg: FinetuneConfig, method_cfg: MethodOptions,
             pruned: Pruned | None, validate: bool = True) -> Tuned | None:
    """Fine-tune ``model`` in place; the method's ``finetune_hooks`` apply (SWP keeps its pruned stripes at
    zero). Returns None on torchrun ranks other than 0 (``pruned`` is only needed, and only given, on rank 0).
    ``validate``: evaluate the final model on the validation split too (``Recipe.validates``)."""
    from ..profiling.macs import count_torch
    from ..training import LoopOptions, distributed
    from ..training import finetune as train

    inputs, device = ctx.inputs, ctx.device
    evaluate = inputs.task.evaluate
    options = LoopOptions(checkpoint=ctx.layout.checkpoint("finetune"), seed=ctx.seed, name="finetune",
                          teacher=inputs.model if cfg.distill is not None else None, task=inputs.task)
    hooks = method_for(method_cfg).finetune_hooks(model) if cfg.epochs else None
    result = train(model, inputs.loaders.train, inputs.loaders.val, cfg, device, hooks=hooks, options=options)
    if not distributed.is_main():
        return None
    if result.best_epoch is None:  # unchanged since the retrain-free evaluation
        test = pruned.retrain_free
    else:
        test = evaluate(model, inputs.loaders.test, device, "pruned: test")
    val = evaluate(model, inputs.loaders.val, device, "pruned: validation") if validate else None
    write_json(ctx.layout.finetune_log, {
        "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
        "resumed_after_epoch": result.resumed_from, "distill": cfg.distill and cfg.distill.model_dump(),
        "epochs": [vars(e) for e in result.epochs]})
    cost = count_torch(model, inputs.input_shape)
    return Tuned(result=result, test=test, val=val, macs_torch=cost.macs, params_torch=cost.params,
                 files=_save(ctx, model, pruned.surgery.history))


def _save(ctx: Context, model: nn.Module, history: list) -> dict:
    from ..surgery import save_pruned

    inputs = ctx.inputs
    num_classes = inputs.loaders.num_classes or None  # None: a custom task's model is built without num_classes
    return save_pruned(ctx.layout.pruned, model, history, inputs.architecture, num_classes, inputs.input_shape)
