"""The prune stage: the method decides which channels go, surgery removes them (``surgery.schedule`` says
when), then optionally BatchNorm statistics are re-estimated; the retrain-free accuracy is measured and the
widths and group decisions are written under ``pruned/``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .._io import write_json
from ..config import FinetuneConfig, LatencyTarget, MethodOptions, ProfileConfig, PruningConfig
from ..export.artifacts import parity_images
from ..methods import CalibrationContext, TrainingMethod, build_method
from ..surgery.schedule import Trainer, prune_layerwise, train_with_masks
from .load import Context
from .results import Pruned


def prune(ctx: Context, model: nn.Module, method_cfg: MethodOptions, cfg: PruningConfig,
          tune: FinetuneConfig, latency: Latency | None = None) -> Pruned:
    """Prune ``model`` in place. A training-time method first trains with masks (``method.epochs`` with the
    fine-tuning optimizer, resumable per epoch from ``pruned/method.ckpt.pt``); the report then says how far
    the masked and the physically pruned networks differ (zero up to float rounding). ``latency``: the
    resolved ``pruning.latency_target`` with the profile settings it is measured with."""
    from ..surgery import prune as prune_one_shot
    from ..training import recalibrate_batchnorm

    inputs, device = ctx.inputs, ctx.device
    method = build_method(method_cfg, seed=ctx.seed)
    calibration = CalibrationContext(batches=lambda: inputs.loaders.calibration, device=device,
                                     num_images=inputs.loaders.num_calibration, seed=ctx.seed,
                                     macs_reduction_pct=cfg.macs_reduction_pct,
                                     network_macs=_network_macs(model, inputs.input_shape, cfg),
                                     skip_layers=_ignored(model, cfg))
    trainer = Trainer(inputs.loaders.train, inputs.loaders.val, tune, device, ctx.seed,
                      teacher=inputs.model if tune.distill is not None else None, task=inputs.task)
    masked = None
    if isinstance(method, TrainingMethod) and method_cfg.trains:  # SWP mode reconstruct trains nothing
        masked = train_with_masks(model, method, inputs.input_shape, cfg, trainer, ctx.layout.checkpoint("prune"))
    oracle = _oracle(model, inputs.input_shape, latency)
    try:
        if cfg.schedule == "layerwise":
            surgery = prune_layerwise(model, inputs.input_shape, method, cfg, calibration, trainer, oracle)
        else:
            surgery = prune_one_shot(model, inputs.input_shape, method, cfg, calibration, oracle)
    finally:
        if oracle is not None:
            oracle.close()
    _say_protected(surgery, cfg, stripes="macs_reduction_pct_stripe_graph" in method.details)
    difference = None if masked is None else _max_difference(masked, model, parity_images(inputs.loaders.calibration, 64))
    bn_images = 0
    if cfg.bn_recalibration is not None:
        loader = inputs.loaders.calibration_loader(cfg.bn_recalibration.images)
        bn_images = recalibrate_batchnorm(model, loader, device)
    retrain_free = inputs.task.evaluate(model, inputs.loaders.test, device, "pruned (before fine-tuning): test")
    write_json(ctx.layout.widths, list(surgery.widths))
    write_json(ctx.layout.groups, {"global_ratio": surgery.global_ratio, "allocation": surgery.allocation,
                                   "search": list(surgery.search), "compensation": list(surgery.compensation),
                                   "method": method.details, "pruned": [vars(g) for g in surgery.groups],
                                   "skipped": surgery.skipped, "protected": surgery.protected})
    return Pruned(surgery=surgery, retrain_free=retrain_free, bn_images=bn_images, method_details=method.details,
                  masked_vs_pruned=difference)


@dataclass(frozen=True)
class Latency:
    target: LatencyTarget  # backend and batch resolved (Recipe.latency_target)
    profile: ProfileConfig
    opset: int = 18


def _ignored(model: nn.Module, cfg: PruningConfig) -> frozenset[str]:
    """The layer names ``pruning.ignore`` matches (a method that picks layers itself, as SWP, skips them)."""
    from ..surgery.graph import select_layers

    return frozenset(name for hits in select_layers(model, cfg.ignore, "pruning.ignore").values() for name in hits)


def _network_macs(model: nn.Module, input_shape: tuple[int, int, int], cfg: PruningConfig) -> int | None:
    """The unpruned network's MACs per image, for a method that meets ``macs_reduction_pct`` itself (SWP)."""
    if cfg.macs_reduction_pct is None:
        return None
    from ..profiling.macs import count_torch

    return count_torch(model, input_shape).macs


def _oracle(model: nn.Module, input_shape: tuple[int, int, int], latency: Latency | None):
    if latency is None:
        return None
    from ..progress import log
    from .latency import WholeGraph

    target = latency.target
    log(f"[prune] latency target: {target.speedup or target.ms}{'x' if target.speedup else ' ms'} on "
        f"{target.backend}, batch {target.batch}")
    return WholeGraph(model, input_shape, target, latency.profile, latency.opset)


def _say_protected(surgery, cfg: PruningConfig, stripes: bool, shown: int = 4) -> None:
    """Groups left whole because removing them breaks the model, and a target missed because of them (``stripes``:
    the method met the MACs target with stripes, on the stripe graph)."""
    from ..progress import log

    if not surgery.protected:
        return
    items = list(surgery.protected.items())
    log(f"[prune] protected {len(items)} channel groups: removing their channels breaks the model "
        f"(all of them in report.json pruning.protected)")
    for key, why in items[:shown]:
        log(f"  {key}: {why}")
    if len(items) > shown:
        log(f"  ... and {len(items) - shown} more")
    target = cfg.macs_reduction_pct
    if target is not None and surgery.macs_reduction_pct < target - 1.0 and not stripes:
        log(f"[prune] removed {surgery.macs_reduction_pct:.1f}% of MACs, short of pruning.macs_reduction_pct "
            f"{target:g}%: the protected groups hold the rest (a min_macs_reduction_pct gate judges it)")


def _max_difference(masked: nn.Module, pruned: nn.Module, images: torch.Tensor) -> float:
    """The masked network and the physically pruned one must compute the same outputs (every one of them)."""
    from ..outputs import flatten

    images = images.to(next(pruned.parameters()).device)
    with torch.no_grad():
        pairs = zip(flatten(masked.eval()(images)), flatten(pruned.eval()(images)))
        return max(float((a - b).abs().max()) for a, b in pairs)
