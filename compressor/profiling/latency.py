"""Latency of ONNX artifacts on onnxruntime CPU, measured interleaved, and latency ratios between them.

Every figure comes with its warm-up, iteration and round counts, batch, threads, backend and versions.
Artifacts are compared side by side in one process: after warming every (artifact, batch) pair, each
round times ``iterations`` runs of every artifact at every batch, the artifact order rotating from
round to round so that slow drift (thermal, other processes) hits all of them alike. A ratio between
two artifacts is the median over rounds of the ratio of their per-round medians, which cancels most
of the drift; ``spread`` says how much the rounds disagreed.

Only ``session.run`` is inside the timer (``time.perf_counter``); inputs are random float32 arrays of
the artifact's own input shape, built once; the garbage collector is paused while timing and the
progress bar (hidden when ``compressor.progress.quiet()``) repaints only between timed blocks.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..environment import available_cores, cpu_name
from ..errors import ExportError, MissingDependencyError, ProfilingError, did_you_mean
from ..export.onnx import onnx_input_shape
from ..progress import quiet, track

BACKEND = "onnxruntime-cpu"
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


@dataclass(frozen=True)
class LatencyStats:
    artifact: str
    backend: str
    batch: int
    threads: int
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

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            data[key] = round(data[key], 6)
        data["throughput"] = round(self.throughput, 3)
        data["round_p50_ms"] = [round(value, 6) for value in self.round_p50_ms]
        data["versions"] = dict(self.versions)
        return data


def profile_onnxruntime(artifacts: dict[str, Path], batch_sizes: Sequence[int], threads: int | None,
                        warmup: int, iterations: int, repeats: int) -> list[LatencyStats]:
    """Interleaved latency of every artifact at every batch size; one LatencyStats per (artifact, batch)."""
    batch_sizes = list(dict.fromkeys(batch_sizes))
    if not artifacts or not batch_sizes or iterations < 1 or repeats < 1 or warmup < 0:
        raise ValueError("profile_onnxruntime needs artifacts, batch sizes, iterations >= 1, repeats >= 1, "
                         "warmup >= 0")
    threads = threads or available_cores()
    sessions = {name: _session(Path(path), threads) for name, path in artifacts.items()}
    feeds = {(name, batch): _feed(sessions[name], Path(artifacts[name]), batch)
             for name in artifacts for batch in batch_sizes}
    for (name, _), feed in track(list(feeds.items()), "latency warm-up"):
        for _ in range(warmup):
            sessions[name].run(None, feed)
    samples: dict[tuple[str, int], list[list[float]]] = {key: [] for key in feeds}
    plan = _schedule(list(artifacts), batch_sizes, repeats)
    with _bar(f"latency {BACKEND}", len(plan)) as advance, _gc_paused():
        for _, batch, name in plan:
            samples[(name, batch)].append(_time_runs(sessions[name], feeds[(name, batch)], iterations))
            advance()
    versions = _versions(next(iter(sessions.values())))
    return [_stats(name, batch, threads, warmup, iterations, samples[(name, batch)], versions)
            for name in artifacts for batch in batch_sizes]


def latency_ratios(stats: list[LatencyStats], reference: str) -> list[dict]:
    """Per other artifact and batch: median over rounds of (artifact round p50 / reference round p50)."""
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
        rows.append({"artifact": s.artifact, "reference": reference, "batch": s.batch, "ratio": ratio,
                     "speedup": 1.0 / ratio if ratio > 0 else float("inf"),
                     "spread": (max(per_round) - min(per_round)) / ratio if ratio > 0 else 0.0})
    return rows


# ------------------------------------------------------------------------------------------ internals
def _schedule(names: list[str], batch_sizes: Sequence[int], repeats: int) -> list[tuple[int, int, str]]:
    """(round, batch, artifact) in execution order; the artifact order rotates by one each round."""
    plan = []
    for r in range(repeats):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        plan.extend((r, batch, name) for batch in batch_sizes for name in order)
    return plan


def _time_runs(session, feed: dict, iterations: int) -> list[float]:
    clock = time.perf_counter
    times = []
    for _ in range(iterations):
        start = clock()
        session.run(None, feed)
        times.append((clock() - start) * 1000.0)
    return times


def _stats(name: str, batch: int, threads: int, warmup: int, iterations: int,
           rounds: list[list[float]], versions: dict) -> LatencyStats:
    import numpy as np

    every = np.asarray([t for times in rounds for t in times], dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(every, [50, 90, 99]))
    return LatencyStats(artifact=name, backend=BACKEND, batch=batch, threads=threads, p50_ms=p50, p90_ms=p90,
                        p99_ms=p99, mean_ms=float(every.mean()), throughput=batch / (p50 / 1000.0),
                        warmup=warmup, iterations=iterations, repeats=len(rounds),
                        round_p50_ms=tuple(float(np.median(times)) for times in rounds), versions=dict(versions))


def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("latency profiling on onnxruntime-cpu", "onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"onnxruntime cannot load {path}: {first}") from exc


def _feed(session, path: Path, batch: int) -> dict:
    import numpy as np

    first = session.get_inputs()[0]
    dtype = _NUMPY_TYPES.get(first.type)
    if dtype is None:
        raise ProfilingError(f"{path}: input '{first.name}' has type {first.type}; latency profiling feeds "
                             f"random images and supports {', '.join(_NUMPY_TYPES)}")
    rng = np.random.default_rng(batch)
    shape = (batch, *onnx_input_shape(path))
    return {first.name: rng.standard_normal(shape, dtype=np.float32).astype(dtype)}


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


def _versions(session) -> dict:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "providers": list(session.get_providers()), "cpu": cpu_name(),
            "cores_available": available_cores(), "python": platform.python_version()}


