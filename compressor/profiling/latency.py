"""Latency of artifacts on every backend, measured interleaved, and latency ratios between them.

Every figure comes with its warm-up, iteration and round counts, batch, threads or device, backend and
versions. Artifacts are compared side by side in one process: after warming every (artifact, backend,
batch), each round times ``iterations`` runs of every artifact at every batch, the artifact order rotating
from round to round so that slow drift (thermal, other processes) hits all of them alike. A ratio between
two artifacts is the median over rounds of the ratio of their per-round medians, which cancels most of the
drift; ``spread`` says how much the rounds disagreed.

Backends (``backends.py`` says what each one's clock covers): onnxruntime on the CPU, CUDA or TensorRT
execution provider (:func:`profile_onnxruntime`; the GPU providers keep inputs and outputs on the device
through I/O binding, so no host<->device copy is timed), OpenVINO on the CPU (``openvino.py``), PyTorch eager
on CPU or CUDA and CUDA graphs (:func:`profile_torch`; CUDA events around the forward only) and serialized
TensorRT engines (CUDA events around ``execute_async_v3``, via :func:`profile_targets`, which mixes all of them).
Inputs are random arrays of the artifact's own input shape, built once per batch; the garbage collector is
paused while timing and the progress bar (hidden when ``compressor.progress.quiet()``) repaints only
between timed blocks.
"""

from __future__ import annotations

import gc
import platform
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..artifacts import latency_files
from ..environment import available_cores, cpu_name
from ..errors import MissingDependencyError, OutputDirError, ProfilingError, did_you_mean
from ..progress import quiet, track
from .backends import (
    ENGINE_SUFFIXES,
    ONNX_BACKENDS,
    TORCH_BACKENDS,
    OrtRunner,
    Target,
    TorchRunner,
    backend_problem,
    check_backend_name,
    make_runner,
    require_backend,
)

BACKEND = "onnxruntime-cpu"


@dataclass(frozen=True)
class LatencyStats:
    artifact: str
    backend: str
    batch: int
    threads: int                         # host threads (onnxruntime intra-op, torch); 1 for TensorRT engines
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float                    # images per second: batch / p50
    warmup: int
    iterations: int                      # timed runs per round
    repeats: int                         # interleaved rounds
    round_p50_ms: tuple[float, ...]      # the median of each round
    versions: dict = field(default_factory=dict)
    device: str = "cpu"                  # cpu | cuda:N

    @property
    def round_spread(self) -> float:
        """(slowest - fastest round median) / median of the round medians: how much the rounds disagreed."""
        if not self.round_p50_ms:
            return 0.0
        middle = statistics.median(self.round_p50_ms)
        return (max(self.round_p50_ms) - min(self.round_p50_ms)) / middle if middle > 0 else 0.0

    @classmethod
    def from_json(cls, data: dict) -> LatencyStats:
        """The inverse of :meth:`to_json` (derived keys such as ``round_spread`` are dropped)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "round_p50_ms": tuple(fields.get("round_p50_ms", ()))})

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            data[key] = round(data[key], 6)
        data["throughput"] = round(self.throughput, 3)
        data["round_p50_ms"] = [round(value, 6) for value in self.round_p50_ms]
        data["round_spread"] = round(self.round_spread, 6)
        data["versions"] = dict(self.versions)
        return data


def profile_onnxruntime(artifacts: dict[str, Path], batch_sizes: Sequence[int], threads: int | None,
                        warmup: int, iterations: int, repeats: int, backend: str = BACKEND) -> list[LatencyStats]:
    """Interleaved latency of every ONNX artifact at every batch size on one onnxruntime backend.

    ``backend`` is onnxruntime-cpu, onnxruntime-cuda or onnxruntime-tensorrt (``backends.ORT_PROVIDERS``).
    One LatencyStats per (artifact, batch), in the order artifacts x batch sizes.
    """
    _check_counts(artifacts, batch_sizes, warmup, iterations, repeats)
    threads = threads or available_cores()
    runners = [OrtRunner(name, Path(path), backend, threads) for name, path in artifacts.items()]
    return measure(runners, batch_sizes, warmup, iterations, repeats)


def profile_torch(models: dict, input_shape: Sequence[int], batch_sizes: Sequence[int], device, warmup: int,
                  iterations: int, repeats: int, cuda_graphs: bool = False) -> list[LatencyStats]:
    """Interleaved latency of PyTorch models (name -> nn.Module) on ``device`` for C x H x W ``input_shape``.

    Each model is copied to the device in eval mode (the caller's module is not touched) and run under
    ``torch.inference_mode``. On CPU the clock is ``perf_counter`` (backend torch-cpu); on CUDA it is a pair
    of CUDA events around each forward (torch-cuda) or around each replay of a CUDA graph captured per batch
    (torch-cuda-graph, ``cuda_graphs=True``), with ``torch.backends.cudnn.benchmark`` on while timing.
    """
    import torch

    _check_counts(models, batch_sizes, warmup, iterations, repeats)
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ProfilingError(f"profile_torch times models on cpu or cuda, not on {device}")
    if cuda_graphs and device.type != "cuda":
        raise ProfilingError(f"CUDA graphs need a CUDA device, got device {device}; use device='cuda' or "
                             "cuda_graphs=False")
    if device.type == "cuda":
        require_backend("torch-cuda-graph" if cuda_graphs else "torch-cuda")
    runners = [TorchRunner(name, model, input_shape, device, cuda_graphs) for name, model in models.items()]
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        return measure(runners, batch_sizes, warmup, iterations, repeats)
    finally:
        torch.backends.cudnn.benchmark = previous


def profile_targets(targets: Sequence[Target], batch_sizes: Sequence[int], threads: int | None, warmup: int,
                    iterations: int, repeats: int) -> list[LatencyStats]:
    """Interleaved latency of files on any mix of backends (``backends.plan_targets`` makes the targets)."""
    _check_counts(targets, batch_sizes, warmup, iterations, repeats)
    threads = threads or available_cores()
    return measure([make_runner(t, threads) for t in targets], batch_sizes, warmup, iterations, repeats)


def measure(runners: Sequence, batch_sizes: Sequence[int], warmup: int, iterations: int,
            repeats: int) -> list[LatencyStats]:
    """The interleaved measurement over runners (``backends`` has the runner protocol)."""
    batch_sizes = list(dict.fromkeys(batch_sizes))
    _check_counts(runners, batch_sizes, warmup, iterations, repeats)
    pairs = [(i, batch) for i in range(len(runners)) for batch in batch_sizes]
    for i, batch in track(pairs, "latency warm-up"):
        runners[i].prepare(batch)
        runners[i].warm(batch, warmup)
    samples: dict[tuple[int, int], list[list[float]]] = {pair: [] for pair in pairs}
    plan = _schedule(list(range(len(runners))), batch_sizes, repeats)
    label = "latency " + ", ".join(dict.fromkeys(r.backend for r in runners))
    with _bar(label, len(plan)) as advance, _gc_paused():
        for _, batch, i in plan:
            samples[(i, batch)].append(runners[i].time(batch, iterations))
            advance()
    versions = [r.versions() for r in runners]
    return [_stats(runners[i], batch, warmup, iterations, samples[(i, batch)], versions[i]) for i, batch in pairs]


@dataclass(frozen=True)
class LatencyRatio:
    """One artifact against a reference on one backend and batch: the median over rounds of (artifact round
    p50 / reference round p50), its inverse, and how much the rounds' ratios disagreed."""

    artifact: str
    reference: str
    batch: int
    ratio: float
    speedup: float
    spread: float  # (largest - smallest round ratio) / ratio
    backend: str

    def to_json(self) -> dict:
        return asdict(self)


def latency_ratios(stats: list[LatencyStats], reference: str) -> list[LatencyRatio]:
    """Per other artifact and batch: median over rounds of (artifact round p50 / reference round p50).
    ``stats`` are those of one backend."""
    by_key = {(s.artifact, s.batch): s for s in stats}
    names = sorted({s.artifact for s in stats})
    if reference not in names:
        raise ProfilingError(f"no latency figures for reference artifact '{reference}'"
                             + did_you_mean(reference, names))
    rows = []
    for s in stats:
        ref = by_key.get((reference, s.batch))
        if s.artifact == reference or ref is None:
            continue
        per_round = [a / b for a, b in zip(s.round_p50_ms, ref.round_p50_ms) if b > 0]
        if not per_round:
            continue
        ratio = statistics.median(per_round)
        rows.append(LatencyRatio(artifact=s.artifact, reference=reference, batch=s.batch, ratio=ratio,
                                 speedup=1.0 / ratio if ratio > 0 else float("inf"),
                                 spread=(max(per_round) - min(per_round)) / ratio if ratio > 0 else 0.0,
                                 backend=s.backend))
    return rows


def ratios_per_backend(stats: list[LatencyStats]) -> list[LatencyRatio]:
    """latency_ratios against the first artifact, separately on each backend with more than one artifact."""
    rows = []
    for backend in dict.fromkeys(s.backend for s in stats):
        same = [s for s in stats if s.backend == backend]
        names = list(dict.fromkeys(s.artifact for s in same))
        if len(names) > 1:
            rows += latency_ratios(same, reference=names[0])
    return rows


def environment(stats: Sequence[LatencyStats]) -> dict:
    """The machine and the versions behind a set of figures (written next to them)."""
    versions: dict = {}
    for s in stats:
        versions.update({k: v for k, v in s.versions.items() if k not in ("cpu", "cores_available", "python")})
    return {"cpu": cpu_name(), "cores_available": available_cores(), "threads": sorted({s.threads for s in stats}),
            "devices": sorted({s.device for s in stats}), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def write_profile(stats: list[LatencyStats], out_dir: Path, title: str = "",
                  ratios: list[LatencyRatio] | None = None) -> dict[str, Path | str]:
    """``out_dir/latency.json`` (stats, ratios, environment) and ``out_dir/latency.png``.

    Returns name -> path; without matplotlib the plot is left out and ``"png"`` holds the reason instead.
    """
    from .._io import write_json
    from .plot import plot_latency

    out_dir = Path(out_dir)
    created = not out_dir.exists()
    ratios = ratios if ratios is not None else ratios_per_backend(stats)
    data = {"stats": [s.to_json() for s in stats], "ratios": [r.to_json() for r in ratios],
            "environment": environment(stats)}
    json_path, png_path = latency_files(out_dir)
    written: dict[str, Path | str] = {}
    try:
        written["json"] = write_json(json_path, data)
        try:
            written["png"] = plot_latency(stats, png_path, title=title)
        except MissingDependencyError as exc:
            written["png"] = str(exc)
    except OSError as exc:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise OutputDirError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    return written


# ------------------------------------------------------------------------------------------ command planning
def plan_targets(paths: Sequence[Path], backends: Sequence[str], batch_sizes: Sequence[int]) -> list[Target]:
    """Check artifact files and backends (before anything is timed or written); one Target per usable pair.

    An empty ``backends`` gives each file its own default (onnxruntime-cpu for ONNX, tensorrt for engines);
    ``all`` means every backend usable here that takes the file.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ProfilingError("no artifact given: name an ONNX file or a TensorRT engine (.engine, .plan)")
    every = "all" in backends
    names = [check_backend_name(b) for b in dict.fromkeys(backends) if b != "all"]
    labels = _labels(paths)
    targets = []
    for path in paths:
        kind = _check_artifact(path, batch_sizes)
        chosen = _backends_for(kind, names, every) or [_default_backend(kind)]
        targets += [Target(labels[path], path, b) for b in chosen]
    _check_coverage(targets, names, paths)
    for backend in dict.fromkeys(t.backend for t in targets):
        require_backend(backend)
    return targets


def _check_artifact(path: Path, batch_sizes: Sequence[int]) -> str:
    """``onnx`` or ``engine``; raises for a missing file, an unreadable ONNX file, or a fixed batch that does not fit."""
    if path.is_dir():
        raise ProfilingError(f"artifact {path} is a folder; name an ONNX file or a TensorRT engine (.engine, .plan)")
    if not path.is_file():
        raise ProfilingError(f"artifact not found: {path}")
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "engine"
    fixed = onnx_fixed_batch(path)
    if fixed is not None and set(batch_sizes) != {fixed}:
        raise ProfilingError(f"{path} has a fixed batch of {fixed}: profile it with --batch {fixed}, or re-export "
                             "it with a dynamic batch dimension")
    return "onnx"


def onnx_fixed_batch(path: Path) -> int | None:
    """The fixed batch size of an ONNX classifier's input, None when dynamic (checks N x C x H x W too)."""
    import onnx

    from ..export.onnx import onnx_input_shape

    onnx_input_shape(path)  # raises ExportError for a missing / non-ONNX file or a non-image input
    proto = onnx.load(str(path), load_external_data=False)
    weights = {init.name for init in proto.graph.initializer}
    first = next(v for v in proto.graph.input if v.name not in weights)
    dim = first.type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def _backends_for(kind: str, names: list[str], every: bool) -> list[str]:
    accepted = list(ONNX_BACKENDS) if kind == "onnx" else ["tensorrt"]
    chosen = [b for b in names if b in accepted]
    if every:
        chosen += [b for b in accepted if b not in chosen and backend_problem(b) is None]
    return chosen


def _default_backend(kind: str) -> str:
    return "onnxruntime-cpu" if kind == "onnx" else "tensorrt"


def _check_coverage(targets: list[Target], names: list[str], paths: list[Path]) -> None:
    used = {t.backend for t in targets}
    for name in names:
        if name in used:
            continue
        if name in TORCH_BACKENDS:
            raise ProfilingError(f"backend {name} times a PyTorch nn.Module (profile_torch in Python), not a file; "
                                 f"for ONNX files use {', '.join(ONNX_BACKENDS)}")
        takes = "TensorRT engines (.engine, .plan)" if name == "tensorrt" else "ONNX files"
        raise ProfilingError(f"backend {name} times {takes}, and none was given ({', '.join(map(str, paths))})")


def _labels(paths: list[Path]) -> dict[Path, str]:
    """File stems, or whole paths where two stems collide."""
    stems = [p.stem for p in paths]
    return {p: (p.stem if stems.count(p.stem) == 1 else str(p)) for p in paths}


# ------------------------------------------------------------------------------------------ internals
def _check_counts(items, batch_sizes: Sequence[int], warmup: int, iterations: int, repeats: int) -> None:
    if (not items or not batch_sizes or min(batch_sizes) < 1 or iterations < 1 or repeats < 1
            or warmup < 0):
        raise ValueError("latency profiling needs artifacts, batch sizes >= 1, iterations >= 1, repeats >= 1, "
                         "warmup >= 0")


def _schedule(names: list, batch_sizes: Sequence[int], repeats: int) -> list[tuple]:
    """(round, batch, artifact) in execution order; the artifact order rotates by one each round."""
    plan = []
    for r in range(repeats):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        plan.extend((r, batch, name) for batch in batch_sizes for name in order)
    return plan


def _stats(runner, batch: int, warmup: int, iterations: int, rounds: list[list[float]],
           versions: dict) -> LatencyStats:
    import numpy as np

    every = np.asarray([t for times in rounds for t in times], dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(every, [50, 90, 99]))
    return LatencyStats(artifact=runner.artifact, backend=runner.backend, batch=batch, threads=runner.threads,
                        p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(every.mean()),
                        throughput=batch / (p50 / 1000.0), warmup=warmup, iterations=iterations,
                        repeats=len(rounds), round_p50_ms=tuple(float(np.median(times)) for times in rounds),
                        versions=dict(versions), device=str(runner.device))


@contextmanager
def _bar(description: str, total: int) -> Iterator:
    """A progress bar that repaints only between timed blocks (no refresh thread competing for the cores)."""
    if quiet():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), auto_refresh=False, transient=True) as bar:
        task = bar.add_task(description, total=total)
        bar.refresh()
        yield lambda: bar.update(task, advance=1, refresh=True)


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
