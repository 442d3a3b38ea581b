"""Validation errors as one line each: ``field.path: message``, with the valid keys for an unknown one.

``compress validate`` lists every error of a recipe (:func:`all_error_lines`); a run stops at the first.
"""

from __future__ import annotations

from typing import Any, get_args

from ..errors import RecipeError, did_you_mean
from .fields import StrictModel
from .schema import Recipe


class _ErrorList(Exception):
    """Carries every validation error so that `compress validate` can list them all."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def error_list(errors: list[dict]) -> _ErrorList:
    return _ErrorList([format_validation_error(e) for e in errors])


def all_error_lines(exc: RecipeError) -> list[str]:
    cause = exc.__cause__
    return cause.lines if isinstance(cause, _ErrorList) else [str(exc)]


_UNION_FIELDS = {("method",), ("task",), ("data", "train"), ("data", "test")}


def format_validation_error(err: dict) -> str:
    """One pydantic error as 'field.path: message', with the list of valid keys for unknown ones."""
    loc = list(err.get("loc", ()))
    shown = _without_union_tags(loc) if err["type"] != "union_tag_invalid" else loc
    field = ".".join(str(p) for p in shown) or "(top level)"
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"{field}: unknown field" + (did_you_mean(str(loc[-1]), allowed, limit=20) if allowed else "")
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        key = str(ctx.get("discriminator", "kind")).strip("'")
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        return f"{field}.{key}: unknown {key} {ctx.get('tag')!r}" + did_you_mean(str(ctx.get("tag")), tags, limit=20)
    if kind == "union_tag_not_found":
        key = str(err.get("ctx", {}).get("discriminator", "kind")).strip("'")
        return f"{field}.{key}: required field is missing (it says which kind of entry this is)"
    if kind == "missing":
        return f"{field}: required field is missing"
    value = err.get("input")
    if kind == "value_error" and msg.startswith(f"{field}."):  # a section's check that names its own field
        return msg
    if kind == "value_error" or isinstance(value, (dict, list)):
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {value!r})"


def _without_union_tags(loc: list) -> list:
    """pydantic puts the tag of a discriminated union into the location; users never wrote it."""
    for i in range(1, len(loc)):
        if tuple(loc[:i]) in _UNION_FIELDS and isinstance(loc[i], str):
            return loc[:i] + loc[i + 1:]
    return loc


def _allowed_keys(loc: list) -> list[str]:
    """Field names valid at a location of the recipe (for 'unknown field' hints)."""
    model: Any = Recipe
    path: list = []
    for part in loc:
        if isinstance(part, int):
            continue
        if tuple(path) in _UNION_FIELDS and part not in getattr(model, "model_fields", {}):
            model = _union_member(model, part)  # ``part`` is the tag pydantic inserted
            continue
        path.append(part)
        field = getattr(model, "model_fields", {}).get(part)
        model = _models_in(field.annotation)[0] if field and _models_in(field.annotation) else None
        if model is not None and len(_models_in(field.annotation)) > 1:
            model = _models_in(field.annotation)  # decided by the next (tag) part
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}).keys()) if not isinstance(model, list) else []


def _models_in(annotation: Any) -> list:
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _union_member(members: Any, tag: str) -> Any:
    for member in members if isinstance(members, list) else [members]:
        for key in ("name", "format"):
            field = getattr(member, "model_fields", {}).get(key)
            if field is not None and tag in getattr(field.annotation, "__args__", ()):
                return member
    return None

