"""``compress deploy RUN_DIR``, run on the target device: engines built there, parity, latency, gates.

What it does, in order (nothing is written into ``device/<name>/`` until everything has run; the work goes
to ``device/.<name>.partial/`` and is renamed at the end, so an interrupted deploy leaves no folder that
looks complete):

1. Reads the finished run (``folder.py``): its resolved recipe (``--set gates.*`` / ``profile.*`` /
   ``export.tensorrt.*`` applied),
   its report and its ONNX files. No checkpoint, data or model code is needed on the device.
2. Picks the backends (``folder.device_backends``): ``--backend`` when given, else the recipe's
   ``profile.backends`` that time files (the torch backends time the PyTorch module, which stays with the
   run host). Each must be usable here, or the deploy stops with exit 2 and the reason.
3. ``tensorrt``: builds the engines the recipe asks for (``export.tensorrt.precisions``) on
   this GPU and TensorRT version (``engines.py``), because an engine only loads where it was built.
4. Parity on this device (``parity.py``): each FP32 graph on each accelerated backend against onnxruntime
   CPU on the same seeded random images; the FP32 rows are gates, FP16 / INT8 rows are reported.
5. Latency: every file on every backend, interleaved, as the profile stage does; ratios pruned / baseline.
6. Gates: the recipe's ``max_latency_ms`` limits and its latency target whose backend was measured here,
   plus the parity gates. Limits on backends this device did not measure are listed as not evaluated here.
7. Writes ``device/<name>/`` (``device.json``, ``latency.json`` (+ png), ``env.json``, ``report.md``, the
   engines) and adds the device to the run's ``report.json`` and ``report.md`` (``record.py``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .folder import FinishedRun, check_device_name, default_device_name, open_run, publish, staging_folder


@dataclass(frozen=True)
class DeployOptions:
    backends: tuple[str, ...] = ()            # empty: the recipe's profile.backends that time files
    name: str | None = None                   # device/<name>/; default: this machine's host name
    overrides: tuple[str, ...] = ()           # --set gates.* / profile.* / export.tensorrt.*


@dataclass(frozen=True)
class DeviceResult:
    name: str
    folder: Path
    summary: dict = field(repr=False)

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])


def deploy(run_dir: Path, options: DeployOptions = DeployOptions()) -> DeviceResult:
    """Deploy the finished run in ``run_dir`` on this machine (see the module docstring)."""
    from .record import record_device

    run = open_run(run_dir, options.overrides, options.backends)
    name = check_device_name(options.name or default_device_name())
    backends, skipped = list(run.backends), run.skipped
    check_backends(backends)
    _say(run, name, backends, skipped)
    staging = staging_folder(run.layout.device(name))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        summary = _measure(run, name, backends, staging)
        summary["skipped_backends"] = skipped
        folder = _publish(staging, run.layout.device(name), summary)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record_device(run.layout, run.report, summary)
    return DeviceResult(name=name, folder=folder, summary=summary)


def _say(run: FinishedRun, name: str, backends: list[str], skipped: dict[str, str]) -> None:
    from ..progress import log

    left = f"; left out {', '.join(skipped)} ({next(iter(skipped.values()))})" if skipped else ""
    log(f"compress deploy {run.layout.root} on {name}: {len(run.files)} files ({', '.join(run.files)}) on "
        f"{', '.join(backends)}{left}")


def check_backends(backends: list[str]) -> None:
    """Exit 2 now, before anything is built or timed, when a backend is not usable on this device."""
    from ..profiling.backends import require_backend

    for backend in backends:
        require_backend(backend)  # tensorrt: a TensorRT that loads, and a CUDA GPU


def _measure(run: FinishedRun, name: str, backends: list[str], staging: Path) -> dict:
    from ..profiling.latency import write_profile
    from ..stages.results import Profiled
    from .engines import build_device_engines
    from .gates import device_gates
    from .parity import device_parity

    start = time.perf_counter()
    engines = build_device_engines(run, staging / "engines") if "tensorrt" in backends else {}
    parity = device_parity(run, backends, engines)
    stats, ratios = _profile(run, backends, {n: e.path for n, e in engines.items()})
    gates, elsewhere = device_gates(run, Profiled(stats=tuple(stats), ratios=tuple(ratios)), parity, backends)
    write_profile(stats, staging, title=f"{run.report['recipe']['name']} on {name}", ratios=ratios)
    return {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backends": backends,
            "engines": {n: e.to_json() for n, e in engines.items()}, "parity": parity,
            "latency": [s.to_json() for s in stats], "latency_ratios": [r.to_json() for r in ratios],
            "gates": [g.to_json() for g in gates], "gates_not_here": elsewhere,
            "passed": all(g.passed for g in gates), "seconds": round(time.perf_counter() - start, 3)}


def _profile(run: FinishedRun, backends: list[str], engines: dict[str, Path]) -> tuple[list, list]:
    from ..profiling.plan import measure_plan

    cfg = run.recipe.profile.model_copy(update={"backends": backends})
    return measure_plan(cfg, run.files, engines, {}, run.input_shape, None)


def _publish(staging: Path, folder: Path, summary: dict) -> Path:
    """``env.json``, ``device.json`` and ``report.md`` into the staging folder, which then replaces ``folder``."""
    from .._io import write_json, write_text
    from ..report.devices import render_device
    from .record import device_environment

    env = device_environment()
    summary["folder"] = f"{folder.parent.name}/{folder.name}"
    summary["host"] = {key: env.get(key) for key in ("host", "cpu", "gpu", "machine", "platform")}
    write_json(staging / "env.json", env)
    write_text(staging / "report.md", render_device(summary) + "\n")
    write_json(staging / "device.json", summary)
    return publish(staging, folder)
