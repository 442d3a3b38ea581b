"""Loading a checkpoint file into a built model: ``load_checkpoint(model, path) -> CheckpointInfo``.

Accepts what public repositories and training scripts actually write: a raw state_dict, or a dict holding
one under ``state_dict`` / ``model`` / ``net`` / ... (or ``model.checkpoint_key``), keys prefixed by
DataParallel/DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) (another prefix shared by all
keys, such as Lightning's ``model.``, is stripped only when that gives exactly the model's keys), and old
BatchNorm checkpoints without ``num_batches_tracked``. Files are read with ``weights_only=True`` unless
the recipe trusts them. The comparison with the model is strict; every problem is a one-line CheckpointError.
"""

from __future__ import annotations

import importlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

STATE_DICT_KEYS = ("state_dict", "model", "net", "model_state_dict", "module", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
FILLABLE_SUFFIX = "num_batches_tracked"
_SHOWN = 3  # names shown per kind of mismatch


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``load_checkpoint`` found and did."""

    path: Path
    key: str | None  # where the state_dict was found; None for a raw state_dict (or a pickled module)
    stripped_prefix: str  # e.g. "module."; "" when none
    filled: list[str] = field(default_factory=list)  # keys missing from the file, taken from the model
    metadata: dict[str, Any] = field(default_factory=dict)  # scalar entries beside the state_dict


def load_checkpoint(model: nn.Module, path: str | Path, key: str | None = None, trust: bool = False,
                    *, model_name: str | None = None) -> CheckpointInfo:
    """Load the weights in ``path`` into ``model`` (strictly) and say where they were found.

    ``key``: the entry of the checkpoint dict holding the state_dict (default: the first of
    STATE_DICT_KEYS that does). ``trust``: allow arbitrary pickled objects (``weights_only=False``).
    ``model_name`` is only used in messages (default: the model's class name).
    """
    path = Path(path)
    obj = _read(path, trust)
    state, where = _find_state_dict(obj, key, path)
    state, prefix = _strip_prefixes(state, model.state_dict())
    filled = _fill_and_check(model, state, path, model_name or type(model).__name__)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"model.checkpoint {path.name}: loading into the model failed: "
                              f"{_first_line(exc)}") from exc
    return CheckpointInfo(path, where, prefix, filled, _metadata(obj, where))


def read_state_dict(path: str | Path, key: str | None = None, trust: bool = False,
                    reference: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` as ``load_checkpoint`` finds it (wrapper prefixes stripped against the keys of
    ``reference``), loaded into nothing: ``compress validate`` compares it with the model. The same one-line
    CheckpointErrors for a missing, unreadable, truncated or untrusted file."""
    path = Path(path)
    state, _ = _find_state_dict(_read(path, trust), key, path)
    if reference is not None:
        state, _ = _strip_prefixes(state, reference.state_dict())
    return state


# -------------------------------------------------------------------------------------------- read
def _read(path: Path, trust: bool) -> Any:
    if not path.exists():
        raise CheckpointError(f"model.checkpoint: file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"model.checkpoint: {path} is a directory; point it at the weights file "
                              "(.pt/.pth/.th) inside")
    if path.stat().st_size == 0:
        raise CheckpointError(f"model.checkpoint: {path} is empty (0 bytes); re-download or re-save it")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        refused = None if trust else _refused_global(exc)
        if refused is not None:
            raise CheckpointError(
                f"model.checkpoint {path}: the file holds pickled Python objects ({refused}), which "
                "weights_only loading refuses; if you trust the file, set model.trust_checkpoint: true "
                "(unpickling can run code), or re-save it as a plain state_dict") from exc
        raise _unreadable(path, exc) from exc
    except OSError as exc:
        raise CheckpointError(f"model.checkpoint: cannot read {path}: {exc.strerror or _first_line(exc)}") from exc
    except (AttributeError, ImportError) as exc:  # trusted pickle naming code that is not importable here
        raise CheckpointError(
            f"model.checkpoint {path}: unpickling needs Python code that is not importable here "
            f"({type(exc).__name__}: {_first_line(exc)}); run from the folder holding that code, or re-save "
            "the weights as a plain state_dict") from exc
    except Exception as exc:  # any other failure means the file is not a loadable torch checkpoint
        raise _unreadable(path, exc) from exc


def _numpy_scalar_globals() -> list:
    """numpy scalars and dtypes (e.g. ``best_acc = np.float64(93.1)`` beside the weights) are plain data:
    allow them under weights_only loading instead of demanding trust_checkpoint."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    found = [core.multiarray.scalar, np.dtype]
    found += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return found


def _refused_global(exc: BaseException) -> str | None:
    """The class/function named in a weights_only refusal, or None if the error means a corrupt file."""
    text = f"{exc} {exc.__context__ or ''}"
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match is None:
        return None
    name = match.group(1)
    module, _, attr = name.rpartition(".")
    if module.split(".")[0] == "torch":  # a torch name that does not exist: the pickle was cut short
        try:
            if not hasattr(importlib.import_module(module), attr):
                return None
        except ImportError:
            return None
    return name


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    if "safetensors" in str(exc):
        return CheckpointError(f"model.checkpoint {path}: a safetensors file, which torch.load reads only with the "
                               "'safetensors' package installed: pip install safetensors")
    inner = exc.__context__ if "Weights only load failed" in str(exc) and exc.__context__ else exc
    detail = _first_line(inner).split(". ")[0][:160]
    return CheckpointError(f"model.checkpoint {path}: not a readable PyTorch checkpoint, maybe truncated or "
                           f"corrupt ({type(inner).__name__}: {detail}); re-download or re-save it with torch.save")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


# ------------------------------------------------------------------------------------ find weights
def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _as_state_dict(value: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(value, nn.Module):
        return dict(value.state_dict())
    return dict(value) if _is_state_dict(value) else None


def _top_keys(obj: Mapping) -> str:
    keys = [str(k) for k in obj]
    return ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "") if keys else "none"


def _find_state_dict(obj: Any, key: str | None, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    direct = _as_state_dict(obj)
    if direct is not None and key is None:
        return direct, None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"model.checkpoint {path}: holds a {type(obj).__name__}, not a state_dict or a "
                              "dict containing one")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"model.checkpoint_key '{key}' is not in {path.name}; top-level keys: "
                                  f"{_top_keys(obj)}")
        found = _as_state_dict(obj[key])
        if found is None:
            raise CheckpointError(f"model.checkpoint_key '{key}' in {path.name} holds a {type(obj[key]).__name__},"
                                  " not a state_dict (a dict of tensors)")
        return found, key
    for name in STATE_DICT_KEYS:
        found = _as_state_dict(obj.get(name))
        if found is not None:
            return found, name
    raise CheckpointError(f"model.checkpoint {path}: no state_dict found (tried {', '.join(STATE_DICT_KEYS)}); "
                          f"top-level keys: {_top_keys(obj)}; set model.checkpoint_key to the one holding the weights")


def _metadata(obj: Any, where: str | None) -> dict[str, Any]:
    """Scalar entries beside the state_dict (best_prec1, epoch, arch, ...)."""
    if where is None or not isinstance(obj, Mapping):
        return {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k == where or not isinstance(k, str):
            continue
        if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 200):
            out[k] = v
    return out


# ------------------------------------------------------------------------------------------- match
def _strip_prefixes(state: dict[str, torch.Tensor], model_state: Mapping[str, Any]) -> tuple[dict, str]:
    """Strip wrapper prefixes shared by all keys, repeatedly (unless the model's own keys carry them)."""
    stripped = ""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in model_state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped += prefix
                changed = True
    extra = _extra_prefix(state, model_state)
    if extra:
        state = {k[len(extra):]: v for k, v in state.items()}
    mixed = _mixed_prefix(state, model_state)
    if mixed:
        state = {k.removeprefix(mixed): v for k, v in state.items()}
    return state, stripped + extra + mixed


def _extra_prefix(state: Mapping[str, Any], model_state: Mapping[str, Any]) -> str:
    """A first key component shared by all file keys whose removal gives exactly the model's keys
    (e.g. Lightning's ``model.``); "" if there is none or the keys already match."""
    wanted = {k for k in model_state if k.rsplit(".", 1)[-1] != FILLABLE_SUFFIX}
    have = set(state)
    if wanted <= have or not have:
        return ""
    prefix = next(iter(have)).split(".", 1)[0] + "."
    if not all(k.startswith(prefix) for k in have):
        return ""
    rest = {k[len(prefix):] for k in have}
    return prefix if wanted <= rest <= set(model_state) else ""


def _mixed_prefix(state: Mapping[str, Any], model_state: Mapping[str, Any]) -> str:
    """A wrapper prefix carried by only some keys (a file mixing wrapped and unwrapped weights), accepted
    when removing it where present gives exactly the model's keys."""
    wanted = {k for k in model_state if k.rsplit(".", 1)[-1] != FILLABLE_SUFFIX}
    for prefix in WRAPPER_PREFIXES:
        if not any(k.startswith(prefix) for k in state):
            continue
        renamed = [k.removeprefix(prefix) for k in state]
        if len(set(renamed)) == len(renamed) and wanted <= set(renamed) <= set(model_state):
            return prefix
    return ""


def _fill_and_check(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> list[str]:
    """Fill missing BatchNorm counters from the model; raise on any other difference."""
    model_state = model.state_dict()
    missing = [k for k in model_state if k not in state]
    filled = [k for k in missing if k.rsplit(".", 1)[-1] == FILLABLE_SUFFIX]
    for k in filled:
        state[k] = model_state[k].clone()
    missing = [k for k in missing if k not in filled]
    unexpected = [k for k in state if k not in model_state]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in model_state.items()
              if isinstance(state.get(k), torch.Tensor) and isinstance(v, torch.Tensor) and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [_count(missing, "missing key", "missing keys"), _count(unexpected, "unexpected", "unexpected"),
                 _count(shapes, "shape mismatch", "shape mismatches")]
        raise CheckpointError(f"model.checkpoint {path.name} does not match model '{name}': "
                              f"{', '.join(p for p in parts if p)}; check model.arch / model.kwargs / data.num_classes")
    return filled


def _count(items: list[str], one: str, many: str) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
    return f"{len(items)} {one if len(items) == 1 else many} ({shown})"
