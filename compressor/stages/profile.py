"""The profile stage (``profile.enabled`` and an ONNX export): every artifact on every ``profile.backends``
backend, interleaved in one process; ratios of each pruned artifact against its baseline counterpart on the
same backend (``profiling/plan.py``); ``profile/latency.json`` and ``latency.png``."""

from __future__ import annotations

import torch.nn as nn

from ..config import ProfileConfig
from ..export.deploy import EngineArtifact
from .load import Context
from .results import Baseline, Exported, Profiled, deployables, onnx_exports


def profile(ctx: Context, cfg: ProfileConfig, baseline: Baseline, exported: Exported, models: dict[str, nn.Module],
            title: str) -> Profiled:
    """``models``: side (baseline, pruned) -> PyTorch module, for the torch backends. The torch-cpu rows run at
    ``profile.threads``, as onnxruntime and OpenVINO do."""
    from ..profiling.latency import write_profile
    from ..profiling.plan import measure_plan

    files, engines = _files(baseline, exported)
    stats, ratios = measure_plan(cfg, files, engines, models, ctx.inputs.input_shape, ctx.device)
    write_profile(stats, ctx.layout.profile, title=title, ratios=ratios)
    return Profiled(stats=tuple(stats), ratios=tuple(ratios))


def _files(baseline: Baseline, exported: Exported) -> tuple[dict, dict]:
    """(name -> ONNX file, name -> engine file) of everything the run exported."""
    named = deployables(baseline, exported)
    files = {name: a.path for name, a in onnx_exports(baseline, exported).items()}
    files.update({name: a.path for name, a in named.items() if not isinstance(a, EngineArtifact)})
    engines = {name: a.path for name, a in named.items() if isinstance(a, EngineArtifact)}
    return files, engines
