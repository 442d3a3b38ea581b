"""The baseline stage: the unpruned model's accuracy, cost and exports, the reference for every ratio."""

from __future__ import annotations

from collections.abc import Sequence

from .._io import write_json
from ..config import ExportConfig
from ..export.artifacts import Images, export_artifact, export_engines, export_variants
from .load import Context
from .results import Baseline


def baseline(ctx: Context, export: ExportConfig, batch_sizes: Sequence[int], validate: bool = True) -> Baseline:
    """The task's metric (top-1) on test and (``validate``: when anything trains, ``Recipe.validates``)
    validation, MACs and params of the PyTorch model, and (``export.onnx``) its ONNX file with the same
    precision variants and engines as the pruned model will get; ``baseline/metrics.json``."""
    from ..profiling.macs import count_torch

    inputs, layout = ctx.inputs, ctx.layout
    evaluate = inputs.task.evaluate
    test = evaluate(inputs.model, inputs.loaders.test, ctx.device, "baseline: test")
    val = evaluate(inputs.model, inputs.loaders.val, ctx.device, "baseline: validation") if validate else None
    cost = count_torch(inputs.model, inputs.input_shape)
    onnx, variants, engines = None, {}, {}
    if export.onnx:
        images = Images.of(inputs.loaders, export)
        onnx = export_artifact(inputs.model, layout.baseline_onnx, images, export.opset)
        variants = export_variants(onnx, export.precisions, export.int8, images, inputs.loaders.test)
        engines = export_engines(onnx, variants, export, images, batch_sizes, inputs.input_shape)
    result = Baseline(test=test, val=val, macs_torch=cost.macs, params_torch=cost.params, onnx=onnx, variants=variants,
                      engines=engines)
    write_json(layout.baseline_metrics, {
        "test": vars(test), "val": val and vars(val), "macs_torch": cost.macs, "params_torch": cost.params,
        "onnx": onnx and {"path": onnx.path.name, "max_abs_diff": onnx.max_abs_diff, "macs": onnx.macs,
                          "params": onnx.params, "seconds": round(onnx.seconds, 3)},
        "variants": {k: v.to_json() for k, v in variants.items()}, "engines": {k: e.to_json() for k, e in engines.items()}})
    return result
