"""Pruning methods: one file per method, each registered under its options type (see ``base.py``)."""

from __future__ import annotations

from . import functionality, hrank, l1, pfp, soft, swp  # noqa: F401  (registering; l1 holds l1, l2, fpgm, random)
from .base import (
    Allocation,
    AllocationSpace,
    CalibrationContext,
    PruningMethod,
    Rounding,
    TrainingHooks,
    TrainingMethod,
    build_method,
    get_method,
    list_methods,
    method_for,
    register,
)

__all__ = [
    "Allocation",
    "AllocationSpace",
    "CalibrationContext",
    "PruningMethod",
    "Rounding",
    "TrainingHooks",
    "TrainingMethod",
    "build_method",
    "get_method",
    "list_methods",
    "method_for",
    "register",
]
