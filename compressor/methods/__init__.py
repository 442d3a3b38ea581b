"""Pruning methods: one file per method, each registered by name (see ``base.py`` for the interface)."""

from __future__ import annotations

from . import functionality, hrank, l1, pfp, soft, swp  # noqa: F401  (registering; l1 holds l1, l2, fpgm, random)
from .base import (
    CalibrationContext,
    MethodOptions,
    PruningMethod,
    build_method,
    get_method,
    list_methods,
    register,
)


def method_options_types() -> tuple[type[MethodOptions], ...]:
    """The Options classes of every registered method (the recipe's ``method`` union)."""
    return tuple(cls.Options for cls in list_methods())


__all__ = [
    "CalibrationContext",
    "MethodOptions",
    "PruningMethod",
    "build_method",
    "get_method",
    "list_methods",
    "method_options_types",
    "register",
]
