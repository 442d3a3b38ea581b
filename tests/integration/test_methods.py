"""Every data-informed method through ``compress run``, both residual policies, with a complete report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app
from compressor.config import load_recipe
from compressor.models import build_model
from compressor.surgery import preflight

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SMALL = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}",
         "data.train.num_images=1500", "data.test.num_images=300", "data.val_split=200", "data.calibration_images=64",
         "finetune.epochs=1", "data.batch_size=32", "profile.batch_sizes=[1]", "profile.iterations=3",
         "profile.repeats=1", "profile.warmup=1", "export.parity_images=8", "gates={max_accuracy_drop: null}"]
METHOD_OPTIONS = {"hrank": ["method.images=32"], "pfp": ["method.sample_size=16"], "functionality": ["method.images=32"]}


def run(tmp_path: Path, overrides: list[str], recipe: Path = QUICKSTART) -> dict:
    out = tmp_path / "run"
    sets = [x for o in overrides for x in ("--set", o)]
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), *sets], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("residual", ["internal", "coupled"])
@pytest.mark.parametrize("method", ["hrank", "pfp", "functionality"])
def test_method_runs_end_to_end(tmp_path, method, residual):
    report = run(tmp_path, SMALL + [f"method.name={method}", f"pruning.residual={residual}"] + METHOD_OPTIONS[method])
    assert report["method"]["name"] == method and report["pruning"]["residual"] == residual
    assert abs(report["reduction"]["macs_pct"] - 50) <= 1.0
    assert report["latency"] and report["parity"] and all(g["passed"] for g in report["gates"])
    assert report["pruning"]["groups_pruned"] > 0
    if method == "pfp":
        assert report["pruning"]["allocation"] == "method" and "epsilon" in report["pruning"]["method_details"]
    if method == "functionality":
        assert report["pruning"]["compensation"]["kind"] == "fold" and report["pruning"]["compensation"]["layers"]


def test_layerwise_schedule_prunes_one_group_at_a_time(tmp_path):
    report = run(tmp_path, SMALL + ["method.name=hrank", "method.images=32", "pruning.residual=internal",
                                    "pruning.schedule=layerwise", "pruning.layerwise_epochs=1",
                                    "finetune.max_steps_per_epoch=3", "finetune.epochs=0"])
    assert report["pruning"]["schedule"] == "layerwise" and report["pruning"]["groups_pruned"] == 3
    assert abs(report["reduction"]["macs_pct"] - 50) <= 1.0


def test_least_squares_compensation_in_the_pipeline(tmp_path):
    report = run(tmp_path, SMALL + ["pruning.residual=internal", "pruning.compensation=least_squares",
                                    "finetune.epochs=0"])
    assert report["pruning"]["compensation"]["kind"] == "least_squares"
    compensation = report["pruning"]["compensation"]
    assert len(compensation["layers"]) + len(compensation["skipped"]) == 3 and compensation["layers"]
    assert all("under-determined" in why for why in compensation["skipped"].values())  # 64 images: too few rows


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_plans_on_its_model(recipe):
    """Builds the recipe's network (random weights) and checks its pruning plan: selectors, layer_ratios length,
    reachable targets, and a trial prune that still runs."""
    loaded = load_recipe(recipe)
    num_classes = loaded.data.num_classes if loaded.data is not None else None  # None: a custom task's model
    model, shape = build_model(loaded.model.model_copy(update={"checkpoint": None}), num_classes)
    preflight(model, shape, loaded.pruning)


@pytest.mark.parametrize("method", ["sfp", "hfp", "ghfp"])
def test_training_time_methods_end_to_end(tmp_path, method):
    report = run(tmp_path, SMALL + [f"method.name={method}", "method.epochs=2", "pruning.residual=coupled",
                                    "finetune.epochs=0"])
    pruning = report["pruning"]
    assert pruning["allocation"] == "method" and pruning["masked_vs_pruned_max_abs_diff"] < 1e-4
    schedule = pruning["method_details"]["schedule"]
    assert [s["epoch"] for s in schedule] == [0, 1, 2] and schedule[-1]["hard"] <= schedule[-1]["pruned"]
    assert abs(report["reduction"]["macs_pct"] - 50) <= 1.0


def test_swp_reconstruct_meets_a_macs_target_on_the_stripe_graph(tmp_path):
    """Mode reconstruct with pruning.macs_reduction_pct: no channel plan is searched, the stripes removed meet
    the target as the stripe graph executes, and the exported stripe graph (every pruned conv as stripes)
    counts at most those MACs."""
    report = run(tmp_path, SMALL + ["method={name: swp, mode: reconstruct}", "pruning.macs_reduction_pct=30",
                                    "finetune.epochs=0", "export.stripe.form=stripe"])
    details, stripe = report["pruning"]["method_details"], report["stripe"]
    assert details["macs_target_pct"] == 30 and details["macs_reduction_pct_stripe_graph"] >= 30
    assert 1 - stripe["macs"] / report["baseline"]["macs"] >= 0.30 - 1e-6
    assert report["parity"]["stripe_onnx"] < 1e-4


def test_swp_end_to_end_writes_a_stripe_graph(tmp_path):
    """delta just under the initial 1: entries the loss pushes down go (a deterministic, partial sparsity). The
    stripe graph is exported (every sparse layer as stripes), matches PyTorch and is profiled with the others."""
    report = run(tmp_path, SMALL + ["method={name: swp, epochs: 2, alpha: 0.0001, threshold: 0.999}",
                                    "pruning={residual: internal, macs_reduction_pct: null}", "finetune.epochs=0",
                                    "export.stripe.form=stripe"])
    pruning, stripe = report["pruning"], report["stripe"]
    details = pruning["method_details"]
    assert 0 < details["stripe_sparsity"] < 1 and [h["epoch"] for h in details["history"]] == [1, 2]
    assert pruning["masked_vs_pruned_max_abs_diff"] < 1e-4
    assert stripe["stripe_layers"] > 0 and report["parity"]["stripe_onnx"] < 1e-4
    assert {s["artifact"] for s in report["latency"]} == {"baseline_onnx", "pruned_onnx", "stripe_onnx"}
    assert {(r["artifact"], r["reference"]) for r in report["latency_ratios"]} == {
        ("pruned_onnx", "baseline_onnx"), ("stripe_onnx", "baseline_onnx"), ("stripe_onnx", "pruned_onnx")}
    assert (tmp_path / "run" / report["artifacts"]["stripe_onnx"]).is_file()
    assert any(g["name"] == "parity:stripe" and g["passed"] for g in report["gates"])
