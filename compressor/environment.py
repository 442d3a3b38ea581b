"""Run environment: seeds, device, run folder, and the versions recorded in ``env.json``."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from .artifacts import RunLayout
from .errors import OutputDirError, RecipeError


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def available_cores() -> int:
    """CPU cores this process may run on (affinity / cgroup cpuset aware where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cache_dir(name: str) -> Path:
    """compressor's cache folder ``name``: $COMPRESSOR_CACHE/<name>, else $XDG_CACHE_HOME/compressor/<name>, else
    ~/.cache/compressor/<name> (not created here)."""
    if os.environ.get("COMPRESSOR_CACHE"):
        return Path(os.environ["COMPRESSOR_CACHE"]) / name
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compressor" / name


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def resolve_device(name: str):
    """``auto`` is CUDA when available, else CPU; asking for CUDA without one is a recipe error."""
    import torch

    torch.set_num_threads(available_cores())
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: cuda requested but torch sees no CUDA device; use device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def check_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse an unusable run folder before any work is done (nothing is created here)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(f"--out {out}: {_occupant(out)}")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputDirError(f"--out {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputDirError(f"--out {out}: no permission to write in {ancestor}; choose a writable folder")


def _occupant(out: Path) -> str:
    """What is in a non-empty --out folder, and what to do: an unfinished run is continued with --resume
    (--overwrite would throw its finished stages away)."""
    import json

    try:
        status = json.loads(RunLayout(out).status.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = None
    state = status.get("status") if isinstance(status, dict) else None
    if state in ("interrupted", "failed", "running"):
        where = f" in stage {status['stage']}" if status.get("stage") else ""
        done = ", ".join(status.get("completed_stages") or []) or "none"
        return (f"holds an unfinished run ({state}{where}; finished stages: {done}); continue it with "
                f"`compress run --resume {out}`, or pass --overwrite to start over")
    if state == "complete":
        return "holds a finished run; choose another --out or pass --overwrite to replace it"
    return "folder exists and is not empty; choose another --out or pass --overwrite"


def prepare_run_dir(out: Path, overwrite: bool, resume: bool = False) -> Path:
    """Create the run folder (after :func:`check_run_dir`); with ``overwrite``, drop an earlier run's markers,
    and unless resuming also its stage records and training checkpoints (a new run must not continue them)."""
    import shutil

    out, layout = Path(out), RunLayout(Path(out))
    check_run_dir(out, overwrite or resume)
    for stale in layout.markers:
        stale.unlink(missing_ok=True)
    if not resume:
        shutil.rmtree(layout.stages, ignore_errors=True)
        for checkpoint in layout.checkpoints:
            checkpoint.unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
    return out


def describe(device, recipe_path: Path | None) -> dict:
    """Versions and machine facts written to ``env.json``."""
    import torch

    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "recipe_path": str(recipe_path) if recipe_path else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_cores_available": available_cores(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "compressor": compressor_version(),
        "packages": package_versions(),
    }
    return info


def package_versions() -> dict:
    """Installed versions from package metadata (torch-pruning 1.6.1's ``__version__`` says 1.6.0)."""
    from importlib import metadata

    found = {}
    for name in ("torch", "torch-pruning", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
                 "openvino", "tensorrt", "pydantic", "typer"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def compressor_version() -> dict:
    from . import __version__

    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5, check=False).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"version": __version__, "git_sha": sha, "git_dirty": dirty}
