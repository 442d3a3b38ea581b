"""``pruning.latency_target`` end to end on the quickstart (shrunk): the search measures, the report proves it,
a second run reuses the layer tables, and an unreachable target stops with exit 2 before fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SMALL = ["data.train.num_images=300", "data.test.num_images=100", "data.val_split=50", "data.calibration_images=32",
         "finetune.epochs=0", "profile.batch_sizes=[1, 8]", "profile.iterations=5", "profile.repeats=3",
         "profile.warmup=2", "export.parity_images=8", "gates={max_accuracy_drop: null}"]


def run(out: Path, *overrides: str):
    sets = [x for o in (*SMALL, *overrides) for x in ("--set", o)]
    return CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(out), *sets])


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "latency"


def test_the_report_proves_the_target_and_a_second_run_reuses_the_tables(tmp_path, cache):
    result = run(tmp_path / "first", "pruning.latency_target={speedup: 1.3, tolerance_pct: 15}")  # plumbing, not precision
    assert result.exit_code in (0, 1), result.output  # 1 only if the profile stage's own timing missed it
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    searched = report["pruning"]["latency_target"]
    assert searched["asked"]["backend"] == "onnxruntime-cpu" and searched["asked"]["batch"] == 8
    assert 1 <= len(searched["rounds"]) <= 8 and searched["target_speedup"] == 1.3
    assert all(r["measured_speedup"] > 0 for r in searched["rounds"])
    assert searched["model"]["layer_table"]["measured_now"] > 0 and list(cache.glob("onnxruntime-cpu-b8-*.json"))
    (gate,) = [g for g in report["gates"] if g["name"].startswith("latency_target")]
    assert gate["name"] == "latency_target[speedup 1.3x, onnxruntime-cpu, batch 8]" and gate["limit"] == 1.105
    assert {(e["batch"], e["artifact"]) for e in report["efficiency"]} == {(1, "pruned_onnx"), (8, "pruned_onnx")}
    for e in report["efficiency"]:
        assert e["efficiency"] == pytest.approx(e["speedup"] / e["macs_factor"], abs=1e-3)
    assert report["reduction"]["macs_pct"] > 0
    assert (tmp_path / "first" / report["artifacts"]["latency_macs_plot"]).is_file()
    assert "Efficiency = measured speedup" in (tmp_path / "first" / "report.md").read_text()

    again = run(tmp_path / "second", "pruning.latency_target={speedup: 1.3, tolerance_pct: 15}")
    assert again.exit_code in (0, 1), again.output
    second = json.loads((tmp_path / "second" / "report.json").read_text())
    assert second["pruning"]["latency_target"]["model"]["layer_table"]["measured_now"] == 0  # all from the cache


def test_an_unreachable_target_exits_2_before_fine_tuning_with_the_best_reachable_speedup(tmp_path, cache):
    out = tmp_path / "run"
    result = run(out, "pruning.latency_target={speedup: 25, rounds: 3}", "finetune.epochs=1")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "out of reach" in errors[0] and "best reachable speedup measured" in errors[0]
    assert "Traceback" not in result.output
    assert not (out / "report.json").exists()
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and status["completed_stages"] == ["baseline"]
