"""``compress schema --format markdown``: the recipe's field reference for a person (``docs/recipe.md``).

Written from the same pydantic models that validate a recipe, so it cannot drift from them (a test checks
that the committed ``docs/recipe.md`` is what this prints): one table per section, every field with its
type, default and description; a choice of kinds (``data.*.format``, ``method.name``) gets one table per kind.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .schema import Recipe

INTRO = """# Recipe reference

Every field of a `compress run` recipe: its type, its default and what it does. Generated from the schema
that validates recipes (`compress schema --format markdown`; `compress schema` prints the same as JSON
Schema, for editors). Relative paths in a recipe are relative to the recipe file; paths given with `--set`,
and relative paths that come from `${VAR}` environment values, are relative to the current directory.
`${VAR}` and `${VAR:-default}` are read from the environment. `--set key.path=value` takes YAML values.
"""


def recipe_reference() -> str:
    """The whole reference, as markdown."""
    parts = [INTRO]
    _section(parts, "", Recipe, "Top level", {})
    return "\n".join(parts).rstrip() + "\n"


def _section(parts: list[str], prefix: str, model: type[BaseModel], title: str, seen: dict, doc: str = "") -> None:
    """One table for ``model``'s fields, then one section per field that holds sections (``seen``: kinds
    already described, by the key that described them)."""
    rows, later = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        kinds = _models(field.annotation)
        kind = _kinds_note(kinds, field) if kinds else _type(field.annotation)
        rows.append([f"`{key}`", kind, _default(field), _text(field.description)])
        if kinds:
            later.append((key, kinds))
    parts.append(f"## {title}\n" + (f"\n{doc}\n" if doc else ""))
    parts.append(_table(["field", "type", "default", "meaning"], rows) + "\n")
    for key, kinds in later:
        _kinds(parts, key, kinds, seen)


def _kinds(parts: list[str], key: str, kinds: list[type[BaseModel]], seen: dict) -> None:
    if tuple(kinds) in seen:
        parts.append(f"## `{key}`\n\nThe same kinds and fields as `{seen[tuple(kinds)]}` (`{key}.*`).\n")
        return
    seen[tuple(kinds)] = key
    tag = _tag(kinds)
    for kind in kinds:
        label = f"`{key}`" + (f" with `{tag}: {_literal(kind, tag)}`" if tag else "")
        _section(parts, f"{key}.", kind, label, seen, _doc(kind))


def _doc(kind: type[BaseModel]) -> str:
    """The first paragraph of a section's own docstring (none for the ones pydantic fills in)."""
    if "__doc__" not in vars(kind) or not kind.__doc__:
        return ""
    return " ".join(kind.__doc__.strip().split("\n\n")[0].split())


def _models(annotation) -> list[type[BaseModel]]:
    """The recipe sections a field holds (one, a choice of kinds, or a list of them); [] for a plain value."""
    return [a for a in _flat(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _flat(annotation) -> list:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flat(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [x for arg in typing.get_args(annotation) for x in _flat(arg)]
    return [annotation]


def _tag(kinds: list[type[BaseModel]]) -> str | None:
    """The field whose literal tells the kinds apart (``format``, ``name``), when there are several."""
    if len(kinds) < 2:
        return None
    for name, field in kinds[0].model_fields.items():
        if typing.get_origin(field.annotation) is typing.Literal and all(name in k.model_fields for k in kinds):
            return name
    return None


def _literal(kind: type[BaseModel], tag: str) -> str:
    return " / ".join(str(a) for a in typing.get_args(kind.model_fields[tag].annotation))


def _kinds_note(kinds: list[type[BaseModel]], field) -> str:
    tag = _tag(kinds)
    if tag:
        return f"one of {len(kinds)} kinds by `{tag}`: " + ", ".join(f"`{_literal(k, tag)}`" for k in kinds)
    many = typing.get_origin(_flat_outer(field.annotation)) is list
    return "list of sections (below)" if many else "section (below)"


def _flat_outer(annotation):
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flat_outer(args[0])
    return annotation


def _type(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {_type(inner[0])}" if inner else "list"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}" if args else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{json.dumps(value, default=str)}`"


def _text(description: str | None) -> str:
    return (description or "").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\\\\|", "\\|")  # escaped once, whether or not it came escaped
