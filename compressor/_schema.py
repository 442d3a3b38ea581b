"""Shared pydantic pieces of the recipe schema (kept free of torch so that validation is light)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

BUILTIN_PREFIX = "builtin:"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


class StrictModel(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken relative to ``context['base_dir']`` (the recipe's folder, or the current
    directory for ``--set`` overrides); ``~`` is expanded; ``builtin:NAME`` names a file shipped with compressor."""
    text = str(value)
    if text.startswith(BUILTIN_PREFIX):
        return ASSETS_DIR / text[len(BUILTIN_PREFIX):]
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(base) / path
    return Path(os.path.normpath(path))


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]
