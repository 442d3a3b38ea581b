"""Reading a recipe: YAML, ``${VAR}`` expansion, ``--set`` overrides, one validation.

``load_recipe(path, overrides)`` is the only entry point; it returns a frozen :class:`~.schema.Recipe` or
raises :class:`~compressor.errors.RecipeError` with one line. Relative paths in the file are relative to the
file; relative paths given with ``--set`` are relative to the current directory. ``${VAR}`` and
``${VAR:-default}`` in string values are taken from the environment; a relative path that comes from the
environment is relative to the current directory too (:func:`_from_shell`), the default to the recipe file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import RecipeError
from .messages import error_list, format_validation_error
from .schema import Recipe

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), expand: bool = True) -> Recipe:
    """Read, expand, override and validate a recipe file. Raises :class:`RecipeError` with one line.
    ``expand=False`` takes ``${...}`` literally: a resolved recipe (``recipe.resolved.yaml``) was expanded once
    already, and a run folder must not read the resuming machine's environment."""
    path = Path(path)
    raw = _read_yaml(path)
    raw = _expand_env(raw, where="") if expand else raw
    recipe = _validate(raw, path, base_dir=path.resolve().parent)
    if not overrides:
        return recipe
    data = recipe.model_dump(mode="json", exclude_unset=True)  # what the file says; defaults come back on validation
    for item in overrides:
        _apply_override(data, item)
    return _validate(_expand_env(data, where="") if expand else data, path, base_dir=Path.cwd(), via_set=True)


def recipe_json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compressor recipe"
    return schema


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (absolute paths, every default spelled out)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"recipe {path}:{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path}: not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path}: the top level must be a mapping of sections (model, data, ...)")
    return raw


def _expand_env(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return _from_shell(os.environ[name]) if match.start() == 0 else os.environ[name]
            if default is not None:
                return default
            raise RecipeError(f"recipe field {where} uses ${{{name}}}, which is not set in the environment; "
                              f"export {name}=... or override the field with --set {where}=...")
        return _ENV.sub(sub, value)
    return value


def _from_shell(value: str) -> str:
    """An environment value that is a relative path (it exists here, or it has a folder in it) is meant from the
    shell's folder, where it was typed, not from the recipe's: made absolute against the current directory.
    (A default after ``:-`` is written in the recipe, so it stays relative to the recipe file.)"""
    path = Path(value)
    if value and not path.is_absolute() and (os.sep in value or "/" in value or path.exists()):
        return str(Path.cwd() / path)
    return value


def _validate(raw: dict, path: Path, base_dir: Path, via_set: bool = False) -> Recipe:
    try:
        return Recipe.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors()
        first = format_validation_error(errors[0])
        more = f" (+{len(errors) - 1} more; `compress validate {path}` lists all)" if len(errors) > 1 else ""
        raise RecipeError(f"recipe {path}: {first}{more}") from error_list(errors)



def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key.path=value, e.g. --set finetune.epochs=3")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise RecipeError(f"--set {item!r}: empty part in the key path {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _step(node, part, parts[: i + 1], item, create=True, list_next=parts[i + 1].lstrip("-").isdigit())
    last = parts[-1]
    if isinstance(node, list):
        index = _index(last, node, item)
        node[index] = _merged(node[index], value)
    elif isinstance(node, dict):
        node[last] = _merged(node.get(last), value)
    else:
        raise RecipeError(f"--set {item!r}: {'.'.join(parts[:-1])} is a value, not a section")


def _merged(old: Any, new: Any) -> Any:
    """``--set section={...}`` updates the named fields and keeps the others, unless it switches the kind of
    entry (another ``format`` or ``name``), which replaces the entry: its fields mean something else.
    ``--set section={}`` resets the section to its defaults."""
    if not (isinstance(old, dict) and isinstance(new, dict)) or not new:
        return new
    if any(key in new and key in old and new[key] != old[key] for key in ("format", "name")):
        return new
    return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}


def _step(node: Any, part: str, path: list[str], item: str, create: bool, list_next: bool = False) -> Any:
    if isinstance(node, list):
        return node[_index(part, node, item)]
    if not isinstance(node, dict):
        raise RecipeError(f"--set {item!r}: {'.'.join(path[:-1])} is a value, not a section")
    if node.get(part) is None and create:
        node[part] = [] if list_next else {}
    return node[part]


def _index(part: str, node: list, item: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise RecipeError(f"--set {item!r}: {part!r} is not an index of a list with {len(node)} entries")
    return int(part)
