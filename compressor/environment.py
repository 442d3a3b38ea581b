"""Run environment: seeds, device, run folder, and the versions recorded in ``env.json``."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from .errors import OutputDirError, RecipeError


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_device(name: str):
    """``auto`` is CUDA when available, else CPU; asking for CUDA without one is a recipe error."""
    import torch

    torch.set_num_threads(cpu_count())
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: cuda requested but torch sees no CUDA device; use device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    """Create the run folder; refuse to mix a new run into an earlier one unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputDirError(f"--out {out}: folder exists and is not empty; choose another --out or pass --overwrite")
        for stale in ("report.json", "report.md", "status.json"):
            (out / stale).unlink(missing_ok=True)
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
    import numpy
    import torch
    import torch_pruning

    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "recipe_path": str(recipe_path) if recipe_path else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores_available": cpu_count(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_pruning": getattr(torch_pruning, "__version__", "?") + " (1.6.1 misreports itself as 1.6.0)",
        "numpy": numpy.__version__,
        "compressor": _compressor_version(),
    }
    info.update(_optional_versions())
    return info


def _optional_versions() -> dict:
    found = {}
    for name in ("onnx", "onnxruntime", "onnxscript", "tensorrt"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError:
            found[name] = None
    return found


def _compressor_version() -> dict:
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
