"""``compress profile FILE...``: latency of ONNX files or TensorRT engines, side by side, outside a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import UsageError


def profile(
        artifacts: Annotated[list[Path], typer.Argument(
            metavar="FILE", help="ONNX classifier files or TensorRT engines (.engine, .plan); several are timed side by side, "
            "interleaved.", show_default=False)],
        backend: Annotated[Optional[list[str]], typer.Option(
            "--backend", "-b", metavar="BACKEND",
            help="onnxruntime-cpu | onnxruntime-cuda | onnxruntime-tensorrt | openvino-cpu | tensorrt | all "
            "(repeatable or comma-separated; default: onnxruntime-cpu for ONNX, tensorrt for engines).",
            show_default=False)] = None,
        batch: Annotated[Optional[list[str]], typer.Option(
            "--batch", metavar="N", help="Batch sizes: --batch 1 8 32, --batch 1,8,32 or --batch 1 --batch 8 (default: 1 8 32).",
            show_default=False)] = None,
        threads: Annotated[int, typer.Option(
            "--threads", min=0, help="Intra-op threads of onnxruntime and OpenVINO: 1 (default) as recipes' profile.threads, "
            "so the numbers match a run's report; 0 = every core this process may use.")] = 1,
        warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per artifact, backend and batch.")] = 10,
        iterations: Annotated[int, typer.Option("--iterations", min=1, help="Timed runs per round.")] = 50,
        repeats: Annotated[int, typer.Option("--repeats", min=1, help="Interleaved rounds.")] = 5,
        out: Annotated[Optional[Path], typer.Option(
            "--out", help="Folder for latency.json and latency.png (default: ./profile-<artifact stem>).",
            show_default=False)] = None) -> None:
    """Measure latency (p50/p90/p99, throughput) of ONNX files or TensorRT engines; write JSON and a plot."""
    from .artifacts import default_profile_folder
    from .cli import _comma_list, _user_errors
    from .profiling.latency import plan_targets, profile_targets, write_profile

    with _user_errors():
        files, batches = _profile_inputs(artifacts, batch)
        targets = plan_targets(files, _comma_list(backend), batches)
        out_dir = out if out is not None else default_profile_folder(files)
        if out_dir.exists() and not out_dir.is_dir():
            from .errors import OutputDirError

            raise OutputDirError(f"--out {out_dir}: exists and is not a folder")
        stats = profile_targets(targets, batches, threads or None, warmup, iterations, repeats)
        written = write_profile(stats, out_dir)
    _print_latency(stats, written)


def _profile_inputs(artifacts: list[Path], batch: list[str] | None) -> tuple[list[Path], list[int]]:
    """Files and batch sizes; bare numbers after ``--batch 1`` (``--batch 1 8 32``) are batch sizes, not files."""
    numbers = [a for a in artifacts if str(a).isdigit() and not a.exists()]
    if numbers and not batch:
        raise UsageError(f"artifact not found: {numbers[0]} (to set batch sizes use --batch {' '.join(map(str, numbers))})")
    from .cli import _comma_list

    words = _comma_list(batch) + [str(n) for n in numbers]
    if not all(w.isdigit() and int(w) > 0 for w in words):
        raise UsageError(f"--batch takes positive whole numbers, got {' '.join(words)}")
    batches = list(dict.fromkeys(int(w) for w in words)) or [1, 8, 32]
    return [a for a in artifacts if a not in numbers], batches


def _print_latency(stats: list, written: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .profiling.latency import environment, ratios_per_backend

    ratios = {(r.artifact, r.backend, r.batch): r.ratio for r in ratios_per_backend(stats)}
    env, first = environment(stats), stats[0]
    caption = (f"warm-up {first.warmup}, {first.iterations} runs x {first.repeats} interleaved rounds; threads "
               f"{'/'.join(map(str, env['threads']))}; {env['versions'].get('gpu') or env['cpu']}\n"
               "spread: (slowest - fastest round median) / median" + ("; vs first: ratio to the first artifact, "
                                                                       "median over rounds" if ratios else ""))
    headers = ["artifact", "backend", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "spread"]
    table = Table(*headers, *(["vs first"] if ratios else []), caption=caption)
    for s in stats:
        ratio = ratios.get((s.artifact, s.backend, s.batch))
        cells = [s.artifact, s.backend, str(s.batch), f"{s.p50_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.p99_ms:.3f}",
                 f"{s.throughput:,.0f}", f"{s.round_spread:.1%}"]
        table.add_row(*cells, *([f"{ratio:.2f}x" if ratio else "1.00x"] if ratios else []))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)  # piped / CI: no cut names
    console.print(table)
    png = written["png"]
    console.print(f"wrote {written['json']}" + (f" and {png}" if isinstance(png, Path) else f" (no plot: {png})"))
