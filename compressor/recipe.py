"""Compatibility: the recipe now lives in :mod:`compressor.config` (torch-free); this module re-exports it."""

from .config import *  # noqa: F401,F403
from .config import __all__  # noqa: F401
