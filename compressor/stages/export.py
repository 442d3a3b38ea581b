"""The export stage (``export.onnx: true``): the pruned model as deployable files under ``export/``.

Dense-slim ``model.onnx`` (parity-checked, MACs counted on the graph), the stripe graph where convs have
zero stripes (SWP), the precision variants and the TensorRT engines the recipe asks for, with the same
rules as the baseline's (``export/artifacts.py``)."""

from __future__ import annotations

import torch.nn as nn

from .._io import write_json
from ..config import ExportConfig, ProfileConfig
from ..export.artifacts import Images, export_artifact, export_engines, export_stripe_artifact, export_variants
from .load import Context
from .results import Exported


def export(ctx: Context, model: nn.Module, cfg: ExportConfig, profile: ProfileConfig) -> Exported:
    """``profile`` says at which batch and threads the stripe graph's per-layer choice is measured (default:
    the largest profiled batch) and up to which batch the engines are built."""
    inputs, layout = ctx.inputs, ctx.layout
    images = Images.of(inputs.loaders, cfg)
    onnx = export_artifact(model, layout.pruned_onnx, images, cfg.opset)
    stripe_cfg = cfg.stripe.model_copy(update={"batch": cfg.stripe.batch or max(profile.batch_sizes)})
    stripe = export_stripe_artifact(model, onnx, layout.stripe_onnx, layout.stripe_layers, images, stripe_cfg,
                                    profile.threads)
    variants = export_variants(onnx, cfg.precisions, cfg.int8, images, inputs.loaders.test)
    engines = export_engines(onnx, variants, cfg, images, profile.batch_sizes, inputs.input_shape)
    if variants or engines:
        write_json(layout.deploy, {"variants": {k: v.to_json() for k, v in variants.items()},
                                   "engines": {k: e.to_json() for k, e in engines.items()}})
    return Exported(onnx=onnx, stripe=stripe, variants=variants, engines=engines)
