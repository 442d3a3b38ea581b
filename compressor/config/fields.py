"""Shared pydantic pieces of the recipe schema: the strict base model, resolved paths, common number types.

Torch-free, like the whole ``compressor.config`` package: validating a recipe never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

BUILTIN_PREFIX = "builtin:"
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"

PositiveInt = Annotated[int, Field(gt=0)]
Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]


class StrictModel(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken relative to ``context['base_dir']`` (the recipe's folder, or the current
    directory for ``--set`` overrides); ``~`` is expanded; ``builtin:NAME`` names a file shipped with compressor."""
    return resolve_path(str(value), (info.context or {}).get("base_dir"))


def resolve_path(text: str, base_dir: Path | None) -> Path:
    """:func:`_resolve_path` outside a field: ``text`` against ``base_dir`` (None: the current directory)."""
    if text.startswith(BUILTIN_PREFIX):
        return ASSETS_DIR / text[len(BUILTIN_PREFIX):]
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    return Path(os.path.normpath(path))


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]


def unique(values: list, field: str) -> list:
    """``values`` when no entry repeats; else a ValueError naming the field and the repeated entries."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{field}: {', '.join(map(str, repeated))} listed more than once")
    return values
