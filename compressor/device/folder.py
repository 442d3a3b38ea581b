"""A finished run folder as ``compress deploy`` reads it: its resolved recipe, its report and its ONNX files.

Only files are read (``report.json``, ``recipe.resolved.yaml``, the exported ONNX graphs): no checkpoint, no
data and no model code, so a device that never saw the training data can deploy the run. ``--set`` may
change ``gates.*``, ``profile.*`` and ``export.tensorrt.*`` only (a device has its own latency budget, thread
count and engines); the model is already built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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
    recipe: object            # config.Recipe, with the deploy's --set applied
    report: dict
    files: dict[str, Path]    # artifact name -> ONNX file (FP32 exports and precision variants)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.report["model"]["input_shape"])  # type: ignore[return-value]


def open_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> FinishedRun:
    """The finished run in ``run_dir``; one clear line (exit 2) when it is not one, or a file is missing."""
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
    recipe = load_recipe(layout.resolved_recipe, list(overrides), expand=False)
    report = _read_report(layout)
    return FinishedRun(layout=layout, recipe=recipe, report=report, files=_onnx_files(layout, report))


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
