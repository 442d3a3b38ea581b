"""The one-line duration estimate before a long training run (``training.finetune._Estimate``)."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

ft = importlib.import_module("compressor.training.finetune")  # the package exports a function of that name


@pytest.fixture()
def clock(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(ft.time, "perf_counter", lambda: now["t"])
    return now


def run_steps(estimate, clock, seconds: list[float]) -> None:
    for i, s in enumerate(seconds, start=1):
        clock["t"] += s
        estimate.after(i)


def test_a_long_run_is_announced_once_from_the_steps_after_the_first(clock, capsys):
    loop = SimpleNamespace(steps=100, options=SimpleNamespace(name="finetune"))
    estimate = ft._Estimate(loop, epochs=30)
    run_steps(estimate, clock, [5.0] + [0.5] * 30)  # a slow first step is not counted
    lines = [line for line in capsys.readouterr().err.splitlines() if "about" in line]
    assert lines == ["  finetune: about 25 min for 30 epoch(s) of 100 steps (0.50 s per step from the first 10; "
                     "validation passes come on top)"]


def test_a_short_run_says_nothing(clock, capsys):
    loop = SimpleNamespace(steps=20, options=SimpleNamespace(name="finetune"))
    estimate = ft._Estimate(loop, epochs=2)
    run_steps(estimate, clock, [0.1] * 20)
    assert "about" not in capsys.readouterr().err and estimate.done


def test_durations_read_naturally():
    assert ft._duration(59) == "59 s" and ft._duration(600) == "10 min" and ft._duration(3 * 3600) == "3.0 h"
