"""The latency oracle of ``pruning.latency_target`` (``surgery.latency_search.LatencyOracle``) on a real backend.

Single layers are timed by ``profiling.layer_latency.LayerTimer`` (cached on disk). A candidate plan is timed
as a whole graph: its channels removed from a CPU copy of the unpruned model, exported as the export stage
exports (onnxruntime and OpenVINO backends: torch's dynamo exporter, the TorchScript exporter where dynamo fails; torch
backends: the module itself) and timed interleaved with the unpruned graph in one process, the speedup being
the median over rounds of (baseline round median / candidate round median), as the profile stage reports it.
Each round runs for about ``ROUND_MS`` of the baseline's time, so that a batch-32 candidate costs seconds, not
the profile stage's minute.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from ..config import LatencyTarget, ProfileConfig
from ..errors import ExportError
from ..profiling.backends import ONNX_BACKENDS, Target, TorchRunner, make_runner, torch_threads
from ..profiling.latency import latency_ratios, measure
from ..profiling.layer_latency import LayerTimer, describe

ROUND_MS = 300.0  # each interleaved round times the baseline for about this long
WARMUP = 5
MIN_ROUNDS = 9  # whole-graph rounds per candidate at least (round medians here spread by up to 10%)


class WholeGraph:
    """Measures candidates of ``model`` on ``target.backend`` at ``target.batch`` (``profile``: threads, repeats)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], target: LatencyTarget,
                 profile: ProfileConfig, opset: int = 18):
        self.backend, self.batch = target.backend, target.batch
        self.threads, self.repeats, self.opset = profile.threads, max(MIN_ROUNDS, profile.repeats), opset
        self.timer = LayerTimer(self.backend, self.batch, self.threads, target.cache)
        self._model = copy.deepcopy(model).cpu().eval()
        self._shape = tuple(input_shape)
        self._folder = tempfile.TemporaryDirectory(prefix="compressor-latency-")
        self._count = 0
        self.exporters: dict[str, int] = {}
        self._baseline = self._runner(self._model, "baseline")
        self._baseline.prepare(self.batch)
        self._baseline.warm(self.batch, WARMUP)
        first = statistics.median(self._baseline.time(self.batch, 3))
        self._iterations = max(3, min(profile.iterations, math.ceil(ROUND_MS / max(first, 1e-3))))
        self.baseline_ms = statistics.median(self._baseline.time(self.batch, self._iterations))

    def layer_ms(self, specs) -> dict[str, float]:
        return self.timer.ms(specs)

    def speedup(self, chosen: dict[str, list[int]]) -> float:
        from ..surgery.graph import example_input
        from ..surgery.remove import apply_selection

        candidate = copy.deepcopy(self._model)
        if chosen:
            apply_selection(candidate, example_input(self._shape), chosen)
        self._count += 1
        runner = self._runner(candidate, f"candidate{self._count}")
        with torch_threads(self.threads):
            stats = measure([self._baseline, runner], [self.batch], WARMUP, self._iterations, self.repeats)
        return latency_ratios(stats, "baseline")[0].speedup

    def describe(self) -> dict:
        return {"layer_table": describe(self.timer), "round_iterations": self._iterations, "rounds": self.repeats,
                "exporters": dict(self.exporters)}

    def close(self) -> None:
        self._folder.cleanup()

    def _runner(self, model: nn.Module, name: str):
        if self.backend in ONNX_BACKENDS:
            path = Path(self._folder.name) / f"{name}.onnx"
            self._export(model, path)
            return make_runner(Target(name, path, self.backend), self.threads or torch.get_num_threads())
        device = torch.device("cpu" if self.backend == "torch-cpu" else "cuda")
        return TorchRunner(name, model, self._shape, device, self.backend == "torch-cuda-graph")

    def _export(self, model: nn.Module, path: Path) -> None:
        from ..export.onnx import export_onnx
        from ..surgery.graph import example_input

        example = example_input(self._shape)
        try:
            export_onnx(model, example, path, self.opset)
            exporter = "dynamo"
        except ExportError:
            export_onnx(model, example, path, self.opset, exporter="torchscript")
            exporter = "torchscript"
        self.exporters[exporter] = self.exporters.get(exporter, 0) + 1
