"""A finished run folder as ``compress deploy`` reads it: its resolved recipe, its report and its ONNX files.

Only files are read (``report.json``, ``recipe.resolved.yaml``, the exported ONNX graphs): no checkpoint, no
data and no model code, so a device that never saw the training data can deploy the run. ``--set`` may
change ``gates.*``, ``profile.*`` and ``export.tensorrt.*`` only (a device has its own latency budget, thread
count and engines); the model is already built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import artifacts
from ..artifacts import RunLayout
from ..errors import OutputDirError, UsageError

DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
OVERRIDABLE = ("gates.", "profile.", "export.tensorrt.")
ONNX_NAMES = (artifacts.BASELINE_ONNX, artifacts.PRUNED_ONNX, artifacts.STRIPE_ONNX)


@dataclass(frozen=True)
class FinishedRun:
    layout: RunLayout
    recipe: object            # config.Recipe as the device sees it (see open_run)
    report: dict
    files: dict[str, Path]    # artifact name -> ONNX file (FP32 exports and precision variants)
    backends: tuple[str, ...] = ()             # what the device measures
    skipped: dict = field(default_factory=dict)  # the run's backends left out -> why

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.report["model"]["input_shape"])  # type: ignore[return-value]


def open_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = (), backends: tuple[str, ...] = ()) -> FinishedRun:
    """The finished run in ``run_dir``; one clear line (exit 2) when it is not one, or a file is missing.

    ``backends`` (``--backend``; default: the run's ``profile.backends`` that time files) are what the device
    measures. The device's recipe is the run's with those backends added to ``profile.backends`` (so that a
    ``--set`` gate may name them while the run's own gates stay valid), ``export.tensorrt.enabled`` where the
    device builds engines, then the user's ``--set``.
    """
    from ..config import load_recipe

    layout = RunLayout(Path(run_dir))
    where = f"compress deploy {run_dir}"
    if not layout.root.is_dir():
        raise OutputDirError(f"{where}: no such run folder")
    if not layout.report_json.is_file() or not layout.resolved_recipe.is_file():
        missing = layout.report_json.name if layout.resolved_recipe.is_file() else layout.resolved_recipe.name
        raise OutputDirError(f"{where}: no {missing}, so it is not a finished compressor run (finish it first: "
                             f"compress run --resume {run_dir})")
    for item in overrides:
        if not item.startswith(OVERRIDABLE):
            raise UsageError(f"compress deploy --set {item!r}: only gates.*, profile.* and export.tensorrt.* can change "
                             "on a device (the model, its ONNX files and its accuracy are the run's)")
    base = load_recipe(layout.resolved_recipe, [], expand=False)
    chosen, skipped = device_backends(base.profile.backends, backends)
    device = [f"profile.backends=[{', '.join(dict.fromkeys([*base.profile.backends, *chosen]))}]"]
    device += ["export.tensorrt.enabled=true"] if "tensorrt" in chosen else []
    recipe = load_recipe(layout.resolved_recipe, [*device, *overrides], expand=False)
    report = _read_report(layout)
    return FinishedRun(layout=layout, recipe=recipe, report=report, files=_onnx_files(layout, report),
                       backends=tuple(chosen), skipped=skipped)


def device_backends(recipe_backends, asked: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """(backends to measure on the device, the recipe's backends left out -> why)."""
    from ..profiling.backends import TORCH_BACKENDS, check_backend_name

    if asked:
        for name in asked:
            check_backend_name(name)
            if name in TORCH_BACKENDS:
                raise UsageError(f"--backend {name}: deploy times the run's exported files; the PyTorch module stays "
                                 "with the run (use onnxruntime-*, openvino-cpu or tensorrt)")
        return list(dict.fromkeys(asked)), {}
    chosen = [b for b in recipe_backends if b not in TORCH_BACKENDS]
    skipped = {b: "times the PyTorch module, which stays with the run host" for b in recipe_backends
               if b in TORCH_BACKENDS}
    if not chosen:
        raise UsageError(f"the recipe profiles only {', '.join(skipped)}, which time the PyTorch module; name the "
                         "device's backends with --backend (e.g. --backend onnxruntime-cpu)")
    return chosen, skipped


def staging_folder(folder: Path) -> Path:
    """Where ``device/<name>/`` is assembled before :func:`publish` renames it into place."""
    return folder.with_name(f".{folder.name}.partial")


def publish(staging: Path, folder: Path) -> Path:
    """``staging`` becomes ``folder``, replacing an earlier one: a finished device folder or none, never half."""
    import shutil

    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(folder)
    return folder


def check_device_name(name: str) -> str:
    if not DEVICE_NAME.match(name or ""):
        raise UsageError(f"--name {name!r}: a device name is letters, digits, '.', '_' and '-' (it names the folder "
                         "device/<name>/), e.g. --name jetson-orin")
    return name


def default_device_name() -> str:
    """This machine's host name, made safe as a folder name."""
    import socket

    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-.") or "device"
    return name if DEVICE_NAME.match(name) else f"device-{name}"


def _read_report(layout: RunLayout) -> dict:
    try:
        report = json.loads(layout.report_json.read_text(encoding="utf-8"))
        report["artifacts"], report["model"]["input_shape"]  # noqa: B018 - what deploy reads
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise OutputDirError(f"{layout.report_json}: unreadable or not a compressor report ({exc}); re-run the "
                             "report with compress run --resume") from None
    return report


def _onnx_files(layout: RunLayout, report: dict) -> dict[str, Path]:
    """Every FP32 export and precision variant the report lists, each checked to exist."""
    variants = {artifacts.variant_name(side, p) for side in (artifacts.BASELINE, artifacts.PRUNED)
                for p in artifacts.QUANTIZED}
    files = {}
    for name, relative in report["artifacts"].items():
        if name in ONNX_NAMES or name in variants:
            path = layout.root / relative
            if not path.is_file():
                raise OutputDirError(f"{layout.root}: the report lists {name} at {relative}, which is missing; copy "
                                     "the whole run folder (or re-run it)")
            files[name] = path
    if artifacts.PRUNED_ONNX not in files:
        raise OutputDirError(f"{layout.root}: the run has no pruned ONNX export (export.onnx was off), so there is "
                             "nothing to deploy; run the recipe with export.onnx: true")
    return files
