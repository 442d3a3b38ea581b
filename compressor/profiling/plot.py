"""Latency and throughput against batch size, one line per (artifact, backend), as a PNG.

matplotlib (the ``plot`` extra) is imported inside :func:`plot_latency` and drawn on an explicit Agg
canvas: no GUI backend is touched, and the global pyplot state (someone's notebook) is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._io import write_atomic
from ..errors import MissingDependencyError, ProfilingError

_LINES = ("-", "--", ":", "-.")
_MARKS = ("o", "s", "^", "D")


def plot_latency(stats: Sequence, path: Path, title: str = "") -> Path:
    """Write a two-panel PNG of ``stats`` (LatencyStats) to ``path`` atomically; return ``path``.

    Left: median latency per image batch with a band up to p90 (log-log). Right: throughput (images/s) at
    the median. The footer says warm-up, iterations, rounds, threads/devices and the CPU or GPU.
    """
    if not stats:
        raise ProfilingError("no latency figures to plot")
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(11, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    latency, throughput = fig.subplots(1, 2)
    series = _series(stats)
    artifact_names = list(dict.fromkeys(artifact for artifact, _ in series))
    backend_names = list(dict.fromkeys(backend for _, backend in series))
    for (artifact, backend), rows in series.items():  # colour: artifact; line style and marker: backend
        b = backend_names.index(backend)
        style = {"color": f"C{artifact_names.index(artifact) % 10}", "linestyle": _LINES[b % 4], "marker": _MARKS[b % 4],
                 "label": f"{artifact} ({backend})" if len(backend_names) > 1 else artifact}
        batches = [s.batch for s in rows]
        latency.plot(batches, [s.p50_ms for s in rows], **style)
        latency.fill_between(batches, [s.p50_ms for s in rows], [s.p90_ms for s in rows], color=style["color"],
                             alpha=0.15, linewidth=0)
        throughput.plot(batches, [s.throughput for s in rows], **style)
    _style(latency, "latency per batch (ms): p50, band to p90", log_y=True)
    _style(throughput, "throughput (images/s at p50)", log_y=False)
    throughput.set_ylim(0, 1.1 * max(s.throughput for s in stats))  # room above the top marker
    _batch_ticks((latency, throughput), sorted({s.batch for s in stats}))
    latency.legend(fontsize=8, loc="upper left")
    artifacts, backends = (", ".join(dict.fromkeys(key[i] for key in series)) for i in (0, 1))
    fig.suptitle(title or f"{artifacts} on {backends}", fontsize=11)
    fig.text(0.5, -0.01, _footer(stats), ha="center", va="top", fontsize=7.5, color="0.35")
    path = Path(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plotting latency", "matplotlib", extra="plot") from None
    return Figure, FigureCanvasAgg


def _series(stats: Sequence) -> dict[tuple[str, str], list]:
    """(artifact, backend) -> stats sorted by batch, in first-seen order."""
    series: dict[tuple[str, str], list] = {}
    for s in stats:
        series.setdefault((s.artifact, s.backend), []).append(s)
    return {key: sorted(rows, key=lambda s: s.batch) for key, rows in series.items()}


def _style(ax, title: str, log_y: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_title(title, fontsize=10)
    ax.set_xscale("log", base=2)
    if log_y:  # latency grows about linearly with batch: log-log keeps batch 1 readable next to batch 256
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("batch size (images)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.12)


def _batch_ticks(axes, batches: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    for ax in axes:
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(b) for b in batches])
        if len(batches) == 1:
            ax.set_xlim(batches[0] / 1.5, batches[0] * 1.5)


def _footer(stats: Sequence) -> str:
    first = stats[0]
    threads = "/".join(str(t) for t in sorted({s.threads for s in stats}))
    devices = ", ".join(sorted({s.device for s in stats}))
    hardware = first.versions.get("gpu") or first.versions.get("cpu", "")
    counts = f"warm-up {first.warmup}, {first.iterations} timed runs x {first.repeats} interleaved rounds"
    return f"{counts}; threads {threads}; device {devices}; {hardware}"
