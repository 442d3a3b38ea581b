"""Dependency-graph surgery: plan (ratios, targets, protected layers, residual policy, rounding), prune,
history save/replay and width tables. See ``prune.py`` for the entry point."""

from .graph import GroupInfo, build_graph
from .heads import find_heads
from .history import load_pruned, replay, save_pruned
from .plan import kept_channels, select_pruned
from .prune import Decision, Surgery, apply_selection, carry_out, check_forward, decide, preflight, prune, summarize, width_table

__all__ = [
    "Decision",
    "GroupInfo",
    "carry_out",
    "decide",
    "summarize",
    "Surgery",
    "apply_selection",
    "build_graph",
    "check_forward",
    "find_heads",
    "kept_channels",
    "load_pruned",
    "preflight",
    "prune",
    "replay",
    "save_pruned",
    "select_pruned",
    "width_table",
]
