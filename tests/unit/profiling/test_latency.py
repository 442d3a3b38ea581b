"""Latency profiling: structure of the interleaved measurement and ratio arithmetic (no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch

from compressor.environment import available_cores
from compressor.export import export_onnx
from compressor.profiling import LatencyStats, ProfilingError, latency_ratios, profile_onnxruntime
from compressor.profiling.latency import _schedule

from ..export.nets import PlainNet, SingleConv


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    """Two tiny exported models with different input shapes."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("latency")
    big = export_onnx(PlainNet(), torch.randn(1, 3, 16, 16), folder / "plain.onnx")
    small = export_onnx(SingleConv(), torch.randn(1, 3, 8, 8), folder / "conv.onnx")
    return {"baseline": big, "pruned": small}


def test_profile_returns_sane_stats_for_every_artifact_and_batch(artifacts):
    stats = profile_onnxruntime(artifacts, batch_sizes=[1, 3], threads=1, warmup=1, iterations=4, repeats=3)
    assert [(s.artifact, s.batch) for s in stats] == [("baseline", 1), ("baseline", 3), ("pruned", 1), ("pruned", 3)]
    for s in stats:
        assert s.backend == "onnxruntime-cpu" and s.threads == 1
        assert (s.warmup, s.iterations, s.repeats) == (1, 4, 3)
        assert 0 < s.p50_ms <= s.p90_ms <= s.p99_ms
        assert s.mean_ms > 0
        assert len(s.round_p50_ms) == 3 and all(v > 0 for v in s.round_p50_ms)
        assert s.throughput == pytest.approx(s.batch / (s.p50_ms / 1000.0))
        assert s.versions["providers"] == ["CPUExecutionProvider"] and s.versions["onnxruntime"]
        data = json.loads(json.dumps(s.to_json()))
        assert data["artifact"] == s.artifact and len(data["round_p50_ms"]) == 3
        assert {"p50_ms", "p90_ms", "p99_ms", "throughput", "batch", "backend"} <= set(data)


def test_threads_default_to_available_cores(artifacts):
    stats = profile_onnxruntime({"pruned": artifacts["pruned"]}, [2], threads=None, warmup=0, iterations=1, repeats=1)
    assert [s.threads for s in stats] == [available_cores()]


def test_schedule_is_interleaved_and_rotates():
    plan = _schedule(["a", "b", "c"], [1, 8], repeats=4)
    assert plan[:6] == [(0, 1, "a"), (0, 1, "b"), (0, 1, "c"), (0, 8, "a"), (0, 8, "b"), (0, 8, "c")]
    firsts = [plan[i][2] for i in range(0, len(plan), 6)]
    assert firsts == ["a", "b", "c", "a"]
    assert len(plan) == 4 * 2 * 3


def _stats(artifact: str, batch: int, rounds: tuple[float, ...]) -> LatencyStats:
    p50 = sorted(rounds)[len(rounds) // 2]
    return LatencyStats(artifact=artifact, backend="onnxruntime-cpu", batch=batch, threads=2, p50_ms=p50,
                        p90_ms=p50, p99_ms=p50, mean_ms=p50, throughput=batch / (p50 / 1000), warmup=1,
                        iterations=10, repeats=len(rounds), round_p50_ms=rounds, versions={})


def test_latency_ratios_arithmetic():
    stats = [_stats("baseline", 1, (2.0, 2.0, 2.0)), _stats("pruned", 1, (1.0, 1.5, 0.5)),
             _stats("baseline", 8, (10.0, 20.0, 40.0)), _stats("pruned", 8, (5.0, 10.0, 20.0)),
             _stats("other", 8, (20.0, 20.0, 20.0))]
    rows = {(r.artifact, r.batch): r for r in latency_ratios(stats, "baseline")}
    assert set(rows) == {("pruned", 1), ("pruned", 8), ("other", 8)}
    assert rows[("pruned", 1)].ratio == pytest.approx(0.5)           # median of 0.5, 0.75, 0.25
    assert rows[("pruned", 1)].speedup == pytest.approx(2.0)
    assert rows[("pruned", 1)].spread == pytest.approx((0.75 - 0.25) / 0.5)
    assert rows[("pruned", 8)].ratio == pytest.approx(0.5)           # drift cancels: every round is 0.5
    assert rows[("pruned", 8)].spread == pytest.approx(0.0)
    assert rows[("other", 8)].ratio == pytest.approx(1.0)           # median of 2, 1, 0.5
    assert rows[("other", 8)].spread == pytest.approx(1.5)
    assert all(r.reference == "baseline" and r.backend == "onnxruntime-cpu" for r in rows.values())


def test_latency_ratios_unknown_reference_lists_choices():
    with pytest.raises(ProfilingError, match="did you mean 'baseline'"):
        latency_ratios([_stats("baseline", 1, (1.0,)), _stats("pruned", 1, (1.0,))], "basline")


def test_profile_rejects_empty_plan(artifacts):
    with pytest.raises(ValueError):
        profile_onnxruntime(artifacts, [], threads=1, warmup=0, iterations=1, repeats=1)
