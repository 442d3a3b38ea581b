"""``compress inspect``: the groups, kept counts, groups left whole and the predicted cost, without a run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from compressor.cli import app

from .user_models import HARDVIEW

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
GROUPS = {"conv1", "layer1.0.conv1", "layer2.0.conv1", "layer2.0.conv2", "layer3.0.conv1", "layer3.0.conv2"}
RESIDUAL = {"conv1", "layer2.0.conv2", "layer3.0.conv2"}  # quicknet's three residual streams

MACS = ("pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}")  # quickstart: a latency target


def inspect(*args: str, overrides: tuple[str, ...] = (), macs: bool = True):
    sets = [x for o in (MACS if macs else ()) + tuple(overrides) for x in ("--set", o)]
    return CliRunner().invoke(app, ["inspect", *args, *sets], catch_exceptions=False)


def test_quickstart_lists_the_groups_and_meets_the_target(tmp_path):
    out = tmp_path / "deeper" / "inspect.json"
    result = inspect(str(QUICKSTART), "--json", str(out))
    assert result.exit_code == 0, result.output
    for key in GROUPS | {"linear", "output head"}:
        assert key in result.output
    assert "reached" in result.output and "NOT reached" not in result.output
    found = json.loads(out.read_text())
    assert [g["key"] for g in found["groups"]] == ["conv1", "layer1.0.conv1", "layer2.0.conv2", "layer2.0.conv1",
                                                   "layer3.0.conv2", "layer3.0.conv1"]  # model (trace) order
    for g in found["groups"]:
        assert {"key", "channels", "kept", "residual", "slices", "producers", "consumers"} <= set(g)
        assert 0 < g["kept"] <= g["channels"] and g["kept"] % 8 == 0  # round_to: 8
        assert g["residual"] == (g["key"] in RESIDUAL) and g["slices"] == 1 and g["key"] in g["producers"]
    assert any(g["kept"] < g["channels"] for g in found["groups"] if g["residual"])  # residual: coupled
    assert found["skipped"] == {"linear": "output head"} and found["protected"] == {}
    assert found["macs_before"] == 3_392_128 and found["macs_after"] < found["macs_before"]
    assert found["params_after"] < found["params_before"]
    assert abs(found["reduction_pct"]["macs"] - 50) <= 1.0
    assert abs(100 * (1 - found["macs_after"] / found["macs_before"]) - found["reduction_pct"]["macs"]) < 1e-3
    assert found["target"]["metric"] == "macs" and found["target"]["pct"] == 50 and found["target"]["reached"] is True
    assert found["allocation"] == "recipe" and found["cost_model"] == "exact"
    assert f"{found['reduction_pct']['macs']:.2f}%" in result.output


def test_internal_residual_lists_the_streams_it_leaves_alone(tmp_path):
    out = tmp_path / "inspect.json"
    result = inspect(str(QUICKSTART), "--json", str(out), overrides=("pruning.residual=internal",))
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert {g["key"] for g in found["groups"]} == GROUPS - RESIDUAL
    streams = {k for k, why in found["skipped"].items() if why == "residual stream (residual: internal)"}
    assert streams == RESIDUAL and found["skipped"]["linear"] == "output head"
    assert result.output.count("residual stream (residual: internal)") == 3
    assert found["target"]["reached"] is True


def test_reads_no_data(tmp_path):
    """The data sources are not opened: a missing image folder does not matter to inspect (it does to a run)."""
    result = inspect(str(QUICKSTART), overrides=(f"data.train={{format: imagefolder, path: {tmp_path / 'nodata'}}}",))
    assert result.exit_code == 0, result.output


def test_a_method_that_decides_the_amount_shows_groups_only(tmp_path):
    out = tmp_path / "inspect.json"
    result = inspect(str(QUICKSTART), "--json", str(out),
                     overrides=("method={name: functionality, threshold: 0.9}", "pruning.macs_reduction_pct=null"))
    assert result.exit_code == 0, result.output
    assert "decided by method functionality at run time" in result.output
    found = json.loads(out.read_text())
    assert found["allocation"] == "method" and {g["key"] for g in found["groups"]} == GROUPS
    assert all(g["kept"] is None for g in found["groups"])
    assert found["macs_after"] is None and found["reduction_pct"] is None and found["target"] is None
    assert found["macs_before"] == 3_392_128


def test_a_latency_target_lists_the_groups_and_says_the_counts_are_measured(tmp_path):
    out = tmp_path / "inspect.json"
    result = inspect(str(QUICKSTART), "--json", str(out), macs=False)
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert found["allocation"] == "latency" and {g["key"] for g in found["groups"]} == GROUPS
    assert all(g["kept"] is None for g in found["groups"])
    assert "timing on onnxruntime-cpu, batch 32" in result.output


def test_bad_recipe_exits_2_with_one_error_line(tmp_path):
    for args, overrides, expected in [([str(QUICKSTART)], ("pruning.nosuch=1",), "pruning.nosuch"),
                                      ([str(tmp_path / "none.yaml")], (), "not found"),
                                      ([str(QUICKSTART)], ("pruning.ignore=[layer9.*]",), "pruning.ignore[0]"),
                                      ([str(QUICKSTART)], ("pruning.residual=internal", "pruning.macs_reduction_pct=97"),
                                       "out of reach")]:
        out = tmp_path / "inspect.json"
        result = inspect(*args, "--json", str(out), overrides=overrides)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("error")]
        assert len(lines) == 1 and expected in lines[0], result.output
        assert "Traceback" not in result.output and not out.exists()


def test_a_hard_coded_view_shows_its_group_protected_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inspect_hardview_net.py").write_text(HARDVIEW)
    out = tmp_path / "inspect.json"
    result = inspect(str(QUICKSTART), "--json", str(out),
                     overrides=("model.arch=inspect_hardview_net:build", "model.checkpoint=null",
                                "model.input_shape=[3, 32, 32]", "pruning.macs_reduction_pct=null", "pruning.ratio=0.5",
                                "pruning.round_to=1"))
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert set(found["protected"]) == {"conv2"} and "fails in forward" in found["protected"]["conv2"]
    assert [(g["key"], g["kept"]) for g in found["groups"]] == [("conv1", 8)]
    assert found["skipped"] == {"fc": "output head"}
    assert "protected" in result.output and "fails in forward" in result.output
    assert found["target"] is None and found["reduction_pct"]["macs"] > 0
