"""Progress display: rich bars on a terminal, one line per stage in CI (``CI=true``) or when piped."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def quiet() -> bool:
    """True in CI or when stderr is not a terminal: no bars, only stage lines."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not sys.stderr.isatty() or secondary_rank()


def secondary_rank() -> bool:
    """A torchrun process other than rank 0: it prints nothing (rank 0 speaks for the run)."""
    return int(os.environ.get("RANK", "0")) > 0


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def log(message: str) -> None:
    """One line on stderr (always shown, also in CI; not on torchrun ranks other than 0)."""
    if not secondary_rank():
        print(message, file=sys.stderr, flush=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (no bar when quiet)."""
    if quiet():
        yield from items
        return
    from rich.progress import Progress

    with Progress(*_columns(), console=_console(), transient=True) as bar:
        task = bar.add_task(description, total=total if total is not None else _len(items), status="")
        for item in items:
            yield item
            bar.advance(task)


class StatusBar:
    """A bar whose trailing text can be updated (loss, accuracy) while iterating."""

    def __init__(self, description: str, total: int):
        self.description, self.total = description, total
        self._bar = None
        self._task = None

    def __enter__(self) -> "StatusBar":
        if not quiet():
            from rich.progress import Progress

            self._bar = Progress(*_columns(), console=_console(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        return self

    def advance(self, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=status)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


_current: list[str] = []  # the pipeline stage started last (what an interruption reports)


def current_stage() -> str | None:
    """The pipeline stage started last: the one running now, or where an exception stopped the run (None before
    the first)."""
    return _current[-1] if _current else None


def _columns() -> tuple:
    """What a bar shows: description, bar, done/total, elapsed, rate, time left, the caller's status text."""
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:.1f}/s" if speed >= 1 else f"{1 / speed:.1f} s/it")

    return (TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), Rate(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))


@contextmanager
def stage(name: str) -> Iterator[dict]:
    """Log the start (not in CI) and the duration of a pipeline stage; yields a dict that receives ``seconds``.
    An exception leaves the stage as :func:`current_stage` (where the run stopped)."""
    if not quiet():
        log(f"[{name}] ...")
    _current[:] = [name]
    timing: dict = {}
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing["seconds"] = time.perf_counter() - start
    note = timing.get("note", "")
    log(f"[{name}] done in {timing['seconds']:.1f} s" + (f": {note}" if note else ""))


def _len(items) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
