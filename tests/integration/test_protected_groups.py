"""A user's model whose forward breaks when one group loses channels: ``compress run`` protects that group,
prunes the rest, says so on the console and in report.json, and a MACs gate judges the shortfall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app

from .user_models import HARDVIEW

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SMALL = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}", "data.train.num_images=300",
         "data.test.num_images=100", "data.val_split=50", "finetune.epochs=0",
         "profile.enabled=false", "model.arch=hardview_net:build", "model.input_shape=[3, 32, 32]",
         "model.checkpoint=null", "pruning.round_to=1", "gates.max_accuracy_drop=null"]

@pytest.fixture()
def hardview(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "hardview_net.py").write_text(HARDVIEW)
    return tmp_path


def _run(tmp_path: Path, *overrides: str):
    sets = [x for o in [*SMALL, *overrides] for x in ("--set", o)]
    return CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(tmp_path / "run"), *sets])


def test_the_breaking_group_is_protected_and_the_rest_pruned(hardview):
    result = _run(hardview, "pruning.macs_reduction_pct=null", "pruning.ratio=0.5", "gates.min_macs_reduction_pct=null")
    assert result.exit_code == 0, result.output
    assert "protected 1 channel groups" in result.output and "conv2" in result.output
    report = json.loads((hardview / "run" / "report.json").read_text())
    assert list(report["pruning"]["protected"]) == ["conv2"]
    assert "fails in forward" in report["pruning"]["protected"]["conv2"]
    widths = {row["layer"]: row for row in report["widths"]}
    assert widths["conv1"]["out_after"] == 8 and widths["conv2"]["out_after"] == 8


def test_a_target_short_because_of_protection_fails_the_macs_gate(hardview):
    result = _run(hardview, "pruning.macs_reduction_pct=95", "gates.min_macs_reduction_pct=94")
    assert result.exit_code == 1, result.output
    assert "short of pruning.macs_reduction_pct 95%" in result.output
    report = json.loads((hardview / "run" / "report.json").read_text())
    gate = next(g for g in report["gates"] if g["name"] == "min_macs_reduction_pct")
    assert not gate["passed"] and gate["value"] < 94
