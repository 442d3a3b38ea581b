"""Gates, report.json and report.md."""

from .gates import GateResult, evaluate_gates, macs_reduction
from .markdown import render_markdown
from .report import build_report, write_report

__all__ = ["GateResult", "build_report", "evaluate_gates", "macs_reduction", "render_markdown", "write_report"]
