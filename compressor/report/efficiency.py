"""How much of the MACs reduction became speed: the efficiency figure and the latency-against-MACs plot of
``report.md`` (the latency target's gate is in ``gates.py``).

efficiency = measured speedup / MACs-reduction factor, where the factor is baseline MACs / pruned MACs (both
counted on the exported graphs) and the speedup is the side-by-side ratio the profile stage measured for a
pruned artifact against its own baseline (same precision) on one backend and batch. 1.0: latency fell as much
as MACs did; published anchors: AMC 0.90 on a phone CPU, HALP 0.68-0.85 on GPU, plain Torch-Pruning 0.57-0.66.
"""

from __future__ import annotations

from pathlib import Path

from .. import artifacts
from ..errors import MissingDependencyError
from ..stages import Results

PLOTTED = {artifacts.PRUNED_ONNX: artifacts.BASELINE_ONNX,  # pruned artifact -> its baseline: the ones whose
           artifacts.PRUNED_TORCH: artifacts.torch_name(artifacts.BASELINE)}  # MACs are the pruned model's


def efficiency_rows(results: Results, base_macs: int, pruned_macs: int) -> list[dict]:
    """One row per pruned artifact measured against its own baseline, per backend and batch."""
    if results.profiled is None or not pruned_macs:
        return []
    factor = base_macs / pruned_macs
    rows = []
    for ratio in results.profiled.ratios:
        if ratio.artifact == artifacts.STRIPE_ONNX or not artifacts.is_headline(ratio.artifact, ratio.reference):
            continue
        rows.append({"artifact": ratio.artifact, "reference": ratio.reference, "backend": ratio.backend,
                     "batch": ratio.batch, "speedup": round(ratio.speedup, 4), "macs_factor": round(factor, 4),
                     "efficiency": round(ratio.speedup / factor, 4)})
    return rows


def plot_latency_macs(report: dict, path: Path, target=None) -> Path | str:
    """PNG: median latency against MACs (per image, exported graphs) of baseline and pruned, one panel per
    backend, a line per batch, and the target's latency as a horizontal mark. Returns the path, or why not."""
    try:
        from ..profiling.plot import _matplotlib
        Figure, FigureCanvasAgg = _matplotlib()
    except MissingDependencyError as exc:
        return str(exc)
    from .._io import write_atomic

    points = _points(report)
    if not points:
        return "no latency figures of the baseline and pruned ONNX files"
    backends = list(dict.fromkeys(b for b, _ in points))
    fig = Figure(figsize=(5.2 * len(backends), 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(backends), squeeze=False)[0]
    for ax, backend in zip(axes, backends):
        for i, ((_, batch), (xs, ys)) in enumerate((k, v) for k, v in points.items() if k[0] == backend):
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=f"batch {batch}")
            ax.plot(xs, [ys[0], ys[0] * xs[1] / xs[0]], color=f"C{i}", linestyle=":", linewidth=1,
                    label=f"latency proportional to MACs (efficiency 1), batch {batch}")
            for x, y, label in zip(xs, ys, ("baseline", "pruned")):
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if target is not None and target.backend == backend and target.batch == batch:
                goal = target.ms if target.ms is not None else ys[0] / target.speedup
                ax.axhline(goal, color=f"C{i}", linestyle="--", linewidth=1, label=f"target, batch {batch}")
        ax.set_xlabel("MACs per image (M, exported graph)")
        ax.set_ylabel("median latency per batch (ms)")
        ax.set_title(backend, fontsize=9)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['recipe']['name']}: latency against MACs", fontsize=10)
    path = Path(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def _points(report: dict) -> dict[tuple[str, int], tuple[list, list]]:
    """(backend, batch) -> ([baseline MACs, pruned MACs] in millions, [baseline p50, pruned p50])."""
    p50 = {(s["artifact"], s["backend"], s["batch"]): s["p50_ms"] for s in report["latency"]}
    macs = [report["baseline"]["macs"] / 1e6, report["pruned"]["macs"] / 1e6]
    out = {}
    for (artifact, backend, batch), value in p50.items():
        if artifact not in PLOTTED:
            continue
        base = p50.get((PLOTTED[artifact], backend, batch))
        if base is not None:
            out[(backend, batch)] = (macs, [base, value])
    return out
