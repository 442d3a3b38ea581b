"""Frozen dataclasses <-> plain JSON values, driven by their type annotations (the run records).

:func:`encode` turns a result (dataclasses, tuples, dicts, paths, numbers, numpy/torch scalars) into JSON
values; paths under ``root`` are written relative to it, so a run folder can be moved and still resumed.
:func:`decode` rebuilds the typed value from its annotation and refuses anything that does not fit (a missing
or unknown field, a wrong type) with :class:`RecordMismatch`. Fields typed as a bare ``dict`` / ``list`` (the
free-form facts a result carries for the report: a method's details, search trials, the pruning history)
come back as the JSON they are, as they appear in ``report.json``: tuples inside them as lists. Nothing is
ever unpickled: JSON in, plain values out.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any


class RecordMismatch(ValueError):
    """The data does not fit the type it is decoded as (another version of the record)."""


def encode(value: Any, root: Path | None = None) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name), root) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return _relative(value, root)
    if isinstance(value, dict):
        return {str(k): encode(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, root) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return encode(value.tolist(), root)
    raise TypeError(f"cannot record a {type(value).__name__} as JSON")


def decode(kind: Any, data: Any, root: Path | None = None, where: str = "result") -> Any:
    """``data`` (from :func:`encode`) as a value of type ``kind``; ``where`` names the field in errors."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in (Any, object):
        return data
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, data, root, where)
    if origin in (typing.Union, types.UnionType):
        return _union(args, data, root, where)
    if kind is Path:
        return _path(_expect(data, str, where), root)
    if kind is float:  # JSON keeps 1 and 1.0 apart, and so does the decoded value
        return _expect(data, (int, float), where)
    if kind in (int, str, bool):
        return _expect(data, kind, where)
    if kind in (dict, list, tuple):
        return kind(_expect(data, dict if kind is dict else list, where))
    if origin is dict:
        return {k: decode(args[1], v, root, f"{where}.{k}") for k, v in _expect(data, dict, where).items()}
    if origin in (list, tuple):
        return _sequence(origin, args, _expect(data, list, where), root, where)
    raise TypeError(f"{where}: cannot decode type {kind!r}")


def _dataclass(kind: type, data: Any, root: Path | None, where: str) -> Any:
    data = _expect(data, dict, where)
    fields = [f for f in dataclasses.fields(kind) if f.init]
    names = {f.name for f in fields}
    if set(data) != names:
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        raise RecordMismatch(f"{where}: {kind.__name__} fields differ (missing {missing}, unknown {unknown})")
    hints = typing.get_type_hints(kind)
    return kind(**{f.name: decode(hints[f.name], data[f.name], root, f"{where}.{f.name}") for f in fields})


def _union(args: tuple, data: Any, root: Path | None, where: str) -> Any:
    if data is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) != 1:
        raise TypeError(f"{where}: a union of several types cannot be decoded: {args}")
    return decode(options[0], data, root, where)


def _sequence(origin: type, args: tuple, data: list, root: Path | None, where: str) -> Any:
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(data):
            raise RecordMismatch(f"{where}: expected {len(args)} values, got {len(data)}")
        return tuple(decode(a, v, root, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    item = args[0] if args else Any
    values = [decode(item, v, root, f"{where}[{i}]") for i, v in enumerate(data)]
    return tuple(values) if origin is tuple else values


def _expect(data: Any, kind, where: str) -> Any:
    if not isinstance(data, kind) or (isinstance(data, bool) and kind in (int, (int, float))):
        raise RecordMismatch(f"{where}: expected {getattr(kind, '__name__', kind)}, got {type(data).__name__}")
    return data


def _relative(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies under it (as written, else after resolving links), else as is."""
    if root is not None:
        for inside, base in ((Path(path), Path(root)), (Path(path).resolve(), Path(root).resolve())):
            try:
                return inside.relative_to(base).as_posix()
            except ValueError:
                continue
    return str(path)


def _path(text: str, root: Path | None) -> Path:
    path = Path(text)
    return path if path.is_absolute() or root is None else Path(root) / path
