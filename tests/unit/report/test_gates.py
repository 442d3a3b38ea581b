"""Gates: each limit compared with the right measured value; parity is always a gate."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from compressor.config import ExportConfig, GatesConfig
from compressor.export.onnx import Parity, parity_limit, parity_passed
from compressor.report import evaluate_gates, render_markdown
from compressor.training.evaluate import EvalResult


def results(pruned_acc=88.5, parity=1e-6, p50=2.0, rounds=None, stats=True, scale=1.0):
    """Rounds of the pruned_onnx figure default to a symmetric spread around ``p50``; ``scale`` is the pruned
    file's max |PyTorch logit|."""
    baseline = NS(test=EvalResult(accuracy=90.0, loss=0.0, images=100),
                  onnx=NS(macs=100, max_abs_diff=1e-6, reference_max_abs=1.0, outputs=(), exporter="dynamo"),
                  macs_torch=101)
    tuned = NS(test=EvalResult(accuracy=pruned_acc, loss=0.0, images=100), macs_torch=41)
    exported = NS(onnx=NS(macs=40, max_abs_diff=parity, reference_max_abs=scale, exporter="torchscript", outputs=()),
                  stripe=None,
                  variants={})
    pruned = NS(artifact="pruned_onnx", backend="onnxruntime-cpu", batch=1, p50_ms=p50, repeats=3, iterations=10,
                threads=1, device="cpu", round_p50_ms=rounds or (p50 - 0.1, p50, p50 + 0.1))
    int8 = NS(artifact="pruned_int8", backend="onnxruntime-cpu", batch=1, p50_ms=1.2, repeats=3, iterations=10,
              threads=1, device="cpu", round_p50_ms=(1.0, 1.2, 3.0))
    return NS(baseline=baseline, tuned=tuned, exported=exported, profiled=NS(stats=(pruned, int8) if stats else ()))


def by_name(rows):
    return {r.name: r for r in rows}


def test_all_gates_pass():
    cfg = GatesConfig(max_accuracy_drop=2.0, min_macs_reduction_pct=55,
                      max_latency_ms=[{"batch": 1, "p50_ms": 2.5}])
    rows = by_name(evaluate_gates(cfg, ExportConfig(), results()))
    assert rows["max_accuracy_drop"].value == 1.5 and rows["max_accuracy_drop"].passed
    assert rows["min_macs_reduction_pct"].value == 60.0 and "ONNX" in rows["min_macs_reduction_pct"].detail
    latency = rows["max_latency_ms[onnxruntime-cpu, batch 1]"]
    assert latency.value == 2.0 and latency.passed and "spread 10.0%" in latency.detail
    assert rows["parity:baseline"].passed and rows["parity:pruned"].passed


def test_each_gate_fails_on_its_own_value():
    cfg = GatesConfig(max_accuracy_drop=1.0, min_macs_reduction_pct=70, max_latency_ms=[{"batch": 1, "p50_ms": 1.5}])
    rows = by_name(evaluate_gates(cfg, ExportConfig(parity_tolerance=1e-4), results(parity=1e-2)))
    assert not rows["max_accuracy_drop"].passed
    assert not rows["min_macs_reduction_pct"].passed
    assert not rows["max_latency_ms[onnxruntime-cpu, batch 1]"].passed
    assert not rows["parity:pruned"].passed and rows["parity:baseline"].passed


def test_unmeasured_latency_gate_fails():
    cfg = GatesConfig(max_latency_ms=[{"batch": 32, "p50_ms": 5}])
    row = by_name(evaluate_gates(cfg, ExportConfig(), results(stats=False)))
    assert row["max_latency_ms[onnxruntime-cpu, batch 32]"].passed is False
    assert row["max_latency_ms[onnxruntime-cpu, batch 32]"].value is None


def test_markdown_shows_verdict_gates_and_widths():
    report = {
        "passed": False, "recipe": {"name": "r", "seed": 0}, "method": {"name": "l1", "options": {"name": "l1"}},
        "model": {"arch": "resnet20", "input_shape": [3, 32, 32]},
        "baseline": {"accuracy": 90.0, "val_accuracy": 89.0, "macs": 4e7, "params": 2.7e5, "split": "test", "images": 10},
        "pruned": {"accuracy": 85.0, "val_accuracy": 84.0, "accuracy_before_finetune": 50.0, "macs": 2e7, "params": 1.5e5},
        "reduction": {"macs_pct": 50.0, "params_pct": 44.4, "counted_on": "the exported ONNX graphs"},
        "counting": "MACs: ...", "gates": [{"name": "max_accuracy_drop", "limit": 1.0, "value": 5.0, "passed": False,
                                            "detail": "d"}],
        "latency": [], "latency_ratios": [],
        "pruning": {"residual": "internal", "global_ratio": 0.5, "target_macs_reduction_pct": None, "search_trials": 0,
                    "groups_pruned": 9, "channels_before": 100, "channels_after": 50, "groups_skipped": {},
                    "bn_recalibration_images": 0},
        "widths": [{"layer": "layer1.0.conv1", "type": "Conv2d", "in_before": 16, "in_after": 16,
                    "out_before": 16, "out_after": 8}],
        "finetune": {"log": [], "best_epoch": None}, "artifacts": {}, "parity": {}, "timings": {"load": 1.0},
    }
    text = render_markdown(report)
    assert "(FAILED)" in text and "**FAIL**" in text and "16 -> 8" in text and "-5.00" in text
    report["artifacts"] = {"pruned_onnx": "export/model.onnx", "pruned_int8": "export/model.int8.onnx"}
    report["parity"] = {"pruned_onnx": 2e-4, "pruned_int8": 0.05}
    report["parity_detail"] = {"pruned_onnx": {"max_abs_diff": 2e-4, "reference_max_abs": 12.5, "atol": 1e-4,
                                               "rtol": 1e-3, "limit": 0.0126, "exporter": "torchscript"}}
    text = render_markdown(report)
    assert "`export/model.onnx` (torchscript exporter)" in text
    assert "| pruned_onnx | torchscript | 2.00e-04 | 12.5 | 0.0001 | 0.001 | 1.26e-02 |" in text
    assert "pruned_int8: 5.00e-02" in text and "pruned_onnx: 2.00e-04" not in text


def test_latency_gate_on_another_artifact_uses_the_median_round_and_flags_noise():
    cfg = GatesConfig(max_latency_ms=[{"batch": 1, "p50_ms": 1.5, "artifact": "pruned_int8"},
                                      {"batch": 1, "p50_ms": 3.0}])
    rows = by_name(evaluate_gates(cfg, ExportConfig(), results()))
    int8 = rows["max_latency_ms[pruned_int8, onnxruntime-cpu, batch 1]"]
    assert int8.value == 1.2 and int8.passed and "MARGINAL" in int8.detail  # rounds spread 1.0..3.0
    clear = rows["max_latency_ms[onnxruntime-cpu, batch 1]"]
    assert clear.passed and "MARGINAL" not in clear.detail


def test_variant_accuracy_gate_per_precision():
    from pathlib import Path

    run = results()
    run.exported.variants = {"int8": NS(accuracy=86.0, images=100, path=Path("model.int8.onnx")),
                             "fp16": NS(accuracy=88.5, images=100, path=Path("model.fp16.onnx"))}
    rows = by_name(evaluate_gates(GatesConfig(max_variant_accuracy_drop=1.0), ExportConfig(), run))
    assert not rows["max_variant_accuracy_drop[int8]"].passed and rows["max_variant_accuracy_drop[int8]"].value == 2.5
    assert rows["max_variant_accuracy_drop[fp16]"].passed


def test_latency_gate_takes_the_median_of_round_medians_not_the_pooled_p50():
    """Pooled p50 2.0 ms, but the rounds' medians are 1.0, 1.1 and 5.0: the gate reads 1.1, which passes a
    1.5 ms limit the pooled figure would fail."""
    cfg = GatesConfig(max_latency_ms=[{"batch": 1, "p50_ms": 1.5}])
    row = by_name(evaluate_gates(cfg, ExportConfig(), results(p50=2.0, rounds=(1.0, 5.0, 1.1))))
    gate = row["max_latency_ms[onnxruntime-cpu, batch 1]"]
    assert gate.value == 1.1 and gate.passed and "1 thread, cpu" in gate.detail
    single = by_name(evaluate_gates(cfg, ExportConfig(), results(p50=1.2, rounds=(1.9, 2.0, 2.1))))
    assert single["max_latency_ms[onnxruntime-cpu, batch 1]"].value == 2.0  # the rounds decide, not p50_ms


def test_limits_are_inclusive():
    """A drop exactly at the limit passes; a hair over it fails (and so for MACs and latency)."""
    at = by_name(evaluate_gates(GatesConfig(max_accuracy_drop=1.5, min_macs_reduction_pct=60,
                                            max_latency_ms=[{"batch": 1, "p50_ms": 2.0}]), ExportConfig(), results()))
    assert at["max_accuracy_drop"].value == 1.5 and at["max_accuracy_drop"].passed
    assert at["min_macs_reduction_pct"].value == 60.0 and at["min_macs_reduction_pct"].passed
    assert at["max_latency_ms[onnxruntime-cpu, batch 1]"].passed
    over = by_name(evaluate_gates(GatesConfig(max_accuracy_drop=1.5), ExportConfig(), results(pruned_acc=88.49)))
    assert not over["max_accuracy_drop"].passed


def test_parity_exactly_at_the_tolerance_passes():
    absolute = ExportConfig(parity_tolerance=1e-4, parity_rtol=0)
    rows = by_name(evaluate_gates(GatesConfig(), absolute, results(parity=1e-4)))
    assert rows["parity:pruned"].passed and rows["parity:pruned"].limit == 1e-4
    assert not by_name(evaluate_gates(GatesConfig(), absolute, results(parity=1.0001e-4)))["parity:pruned"].passed


def test_parity_limit_is_atol_plus_rtol_times_the_largest_logit():
    assert parity_limit(1e-4, 1e-3, 12.0) == pytest.approx(1e-4 + 1.2e-2)
    assert parity_limit(1e-4, 0.0, 1e6) == 1e-4
    assert Parity(max_abs_diff=0.0121, reference_max_abs=12.0).passed(1e-4, 1e-3)
    assert not Parity(max_abs_diff=0.0122, reference_max_abs=12.0).passed(1e-4, 1e-3)
    assert not parity_passed(float("inf"), float("inf")) and not parity_passed(float("nan"), 1.0)


def test_parity_gate_scales_with_the_logits_and_says_how():
    """Logits up to 12: a float32-noise difference of 1e-3 fails an absolute 1e-4 but passes 1e-4 + 1e-3 x 12;
    the row's limit is the effective one and its detail shows the formula with the numbers."""
    cfg = ExportConfig(parity_tolerance=1e-4, parity_rtol=1e-3)
    row = by_name(evaluate_gates(GatesConfig(), cfg, results(parity=1e-3, scale=12.0)))["parity:pruned"]
    assert row.passed and row.value == 1e-3 and row.limit == pytest.approx(0.0121)
    assert "atol + rtol x max|logits| = 0.0001 + 0.001 x 12 = 0.0121" in row.detail
    assert "torchscript exporter" in row.detail
    base = by_name(evaluate_gates(GatesConfig(), cfg, results(scale=12.0)))["parity:baseline"]
    assert base.limit == pytest.approx(1.1e-3)  # each file against its own logits' scale
    tight = by_name(evaluate_gates(GatesConfig(), ExportConfig(parity_rtol=0), results(parity=1e-3, scale=12.0)))
    assert not tight["parity:pruned"].passed and tight["parity:pruned"].limit == 1e-4


def test_parity_fields_in_the_recipe_schema():
    assert (ExportConfig().parity_tolerance, ExportConfig().parity_rtol) == (1e-4, 1e-3)
    with pytest.raises(ValueError, match="parity_rtol"):
        ExportConfig(parity_rtol=-1e-3)


def test_without_an_export_only_the_baseline_is_parity_gated_and_macs_come_from_pytorch():
    run = results()
    run.exported, run.profiled = None, None
    rows = by_name(evaluate_gates(GatesConfig(min_macs_reduction_pct=50), ExportConfig(), run))
    assert set(rows) == {"parity:baseline", "min_macs_reduction_pct", "max_accuracy_drop"}  # the default gate
    assert rows["min_macs_reduction_pct"].value == round(100 * (1 - 41 / 101), 3)
    assert "PyTorch" in rows["min_macs_reduction_pct"].detail


def test_latency_target_on_openvino_reads_the_pruned_onnx_ratio():
    """openvino-cpu times the ONNX files: the target's gate reads pruned_onnx there, not pruned_torch."""
    from compressor.report.gates import latency_target_gate

    run = results()
    ratio = NS(artifact="pruned_onnx", backend="openvino-cpu", batch=1, speedup=2.1, spread=0.02)
    run.profiled = NS(stats=(), ratios=(NS(artifact="pruned_torch", backend="openvino-cpu", batch=1, speedup=9.0,
                                           spread=0.0), ratio))
    target = NS(speedup=2.0, ms=None, tolerance_pct=5.0, backend="openvino-cpu", batch=1)
    row = latency_target_gate(target, run.profiled)
    assert row.value == 2.1 and row.passed and "pruned_onnx against its baseline" in row.detail


def test_markdown_latency_names_the_versions_of_every_backend():
    import json

    from compressor.report.markdown import _latency

    row = {"artifact": "pruned_onnx", "batch": 1, "threads": 1, "p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2,
           "throughput": 1000.0, "warmup": 2, "iterations": 5, "repeats": 3}
    report = {"latency": [{**row, "backend": "onnxruntime-cpu", "versions": {"onnxruntime": "1.32.0"}},
                          {**row, "backend": "openvino-cpu", "versions": {
                              "openvino": "2026.4.1", "openvino_config": {"INFERENCE_PRECISION_HINT": "f32"}}}],
              "latency_ratios": [], "artifacts": {}}
    text = _latency(json.loads(json.dumps(report)))
    assert "onnxruntime-cpu: onnxruntime 1.32.0; openvino-cpu: openvino 2026.4.1, openvino_config " \
           "INFERENCE_PRECISION_HINT=f32" in text
