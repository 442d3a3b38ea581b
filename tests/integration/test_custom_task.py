"""``task.kind: custom`` end to end: the user's loaders, loss and metric through ``compress run / inspect / validate``.

The fast tests use the tiny two-output task of ``custom_tasks.py`` (3x16x16 scenes, a dict of ``logits`` and
``mask``, primary ``mae`` with ``direction: lower``); the slow ones run the shipped examples
(``recipes/detect_shapes_custom.yaml``, ``recipes/segment_shapes_custom.yaml``), one of them exactly as the
README quotes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from typer.testing import CliRunner

from compressor.cli import app

from . import custom_tasks as ct

REPO = Path(__file__).resolve().parents[2]
DETECT = REPO / "recipes" / "detect_shapes_custom.yaml"
SEGMENT = REPO / "recipes" / "segment_shapes_custom.yaml"
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
HERE = ct.HERE
# the tiny task's fine-tuning in the direction tests: a high constant lr, so that the val metric moves both ways
# (here 4.34, 4.63, 5.34: the lowest is the first epoch, the highest the last)
BUMPY = {"epochs": 3, "lr": 0.3, "schedule": "constant"}


def invoke(*args: str, sets=()):
    return CliRunner().invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])


def report_of(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def gates_of(report: dict) -> dict[str, dict]:
    return {g["name"]: g for g in report["gates"]}


def onnx_outputs(path: Path) -> list[str]:
    return [o.name for o in onnx.load(str(path)).graph.output]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error")]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny task runs fastest on one thread, and a second one only fights the other jobs of a 2-core machine
    (the pipeline sets torch's thread count to the cores it may use: ``environment.resolve_device``). Module
    scope: the module's shared runs come before the function-scoped fixtures (conftest's sets CI too)."""
    from compressor import environment

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(environment, "available_cores", lambda: 1)
        patch.setenv("CI", "true")
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return ct.checkpoint(tmp_path_factory.getbasetemp() / "custom_task")


def run_tiny(folder: Path, checkpoint: Path, **sections):
    """``compress run`` of the tiny task's recipe (``ct.recipe`` sections) into ``folder``/run."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = ct.write_recipe(folder / "recipe.yaml", checkpoint, **sections)
    out = folder / "run"
    return invoke("run", str(recipe), "--out", str(out)), out


# --------------------------------------------------------------------------- lower is better, end to end
@pytest.fixture(scope="module")
def directions(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The same tiny run twice: told that lower mae is better (dict outputs), and that higher is (the model
    returning the tuple ``(logits, mask)`` instead: the same weights, the same numbers)."""
    runs = {}
    for direction, as_tuple in (("lower", False), ("higher", True)):
        folder = tmp_path_factory.mktemp(direction)
        result, runs[direction] = run_tiny(folder, checkpoint, task={"direction": direction}, finetune=BUMPY,
                                           model={"kwargs": {"as_tuple": as_tuple}})
        assert result.exit_code == 0, result.output + result.stderr
    return runs


def epoch_log(run: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in json.loads((run / "pruned" / "finetune.json")
                                                                                .read_text())["epochs"]]


def test_lower_is_better_keeps_the_epoch_with_the_lowest_val_metric(directions):
    run = directions["lower"]
    log = epoch_log(run)
    values = [e["val_accuracy"] for e in log]
    assert len(values) == 3 and len(set(values)) == 3, values  # the metric moved: lowest and highest differ
    lowest = 1 + values.index(min(values))
    tune = json.loads((run / "pruned" / "finetune.json").read_text())
    report = report_of(run)
    assert tune["best_epoch"] == lowest and tune["best_val_accuracy"] == pytest.approx(min(values))
    assert report["finetune"]["best_epoch"] == report["pruned"]["best_epoch"] == lowest
    assert report["pruned"]["val_accuracy"] == pytest.approx(min(values), abs=1e-4)


def test_higher_is_better_on_the_same_training_keeps_the_highest(directions):
    assert epoch_log(directions["higher"]) == epoch_log(directions["lower"])  # direction picks, it does not train
    values = [e["val_accuracy"] for e in epoch_log(directions["higher"])]
    highest = 1 + values.index(max(values))
    report = report_of(directions["higher"])
    assert report["finetune"]["best_epoch"] == highest != report_of(directions["lower"])["finetune"]["best_epoch"]
    assert report["task"]["direction"] == "higher" and report["task"]["label"] == "mae (higher is better)"


def test_report_holds_the_primary_and_every_metric_value(directions):
    report = report_of(directions["lower"])
    assert {k: report["task"][k] for k in ("kind", "primary", "direction")} == {
        "kind": "custom", "primary": "mae", "direction": "lower"}
    assert report["task"]["label"] == "mae (lower is better)"
    for side in ("baseline", "pruned"):
        metrics = report[side]["metrics"]
        assert set(metrics) == {"mae", "error", "images"} and metrics["images"] == ct.SIZES["test"]
        assert report[side]["accuracy"] == pytest.approx(metrics["mae"], abs=1e-4) and report[side]["images"] == 128
    assert 0 < report["baseline"]["accuracy"] < 10  # the trained checkpoint, not a fresh network (about 50)
    assert abs(report["reduction"]["macs_pct"] - 45) <= 1.5
    gate = gates_of(report)["max_accuracy_drop"]  # lower is better: the gate limits pruned - baseline
    assert gate["value"] == pytest.approx(report["pruned"]["accuracy"] - report["baseline"]["accuracy"], abs=2e-4)
    assert gate["passed"] and "lower is better" in gate["detail"]
    assert "mae (lower is better)" in (directions["lower"] / "report.md").read_text()


def test_the_saved_pruned_model_scores_what_the_report_says(directions):
    from compressor.surgery import load_pruned

    run = directions["lower"]
    model = load_pruned(run).eval()
    with torch.no_grad():
        got = ct.metric(model, ct.loaders(0, 32)["test"], "cpu")
    assert got["mae"] == pytest.approx(report_of(run)["pruned"]["accuracy"], abs=1e-3)
    assert model.fc.out_features == 4 and model.mask.out_channels == 1  # the heads kept whole
    assert model.features[0].out_channels < 16  # and the rest pruned


def test_dict_outputs_export_with_their_names_and_a_parity_gate_each(directions):
    run = directions["lower"]
    report = report_of(run)
    assert onnx_outputs(run / "baseline" / "model.onnx") == ["logits", "mask"]
    assert onnx_outputs(run / "export" / "model.onnx") == ["logits", "mask"]
    names = {n for n in gates_of(report) if n.startswith("parity:")}
    assert names == {f"parity:{side}[{out}]" for side in ("baseline", "pruned") for out in ("logits", "mask")}
    assert all(g["passed"] for g in report["gates"])
    from compressor.surgery import load_pruned

    x = torch.randn(3, *ct.SHAPE)
    with torch.no_grad():
        expected = load_pruned(run).eval()(x)
    session = ort.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip(["logits", "mask"], session.run(None, {session.get_inputs()[0].name: x.numpy()})))
    for name in ("logits", "mask"):
        assert got[name].shape == tuple(expected[name].shape)
        assert np.abs(got[name] - expected[name].numpy()).max() < 1e-4


def test_tuple_outputs_export_as_output_0_and_output_1(directions):
    run = directions["higher"]
    assert onnx_outputs(run / "baseline" / "model.onnx") == ["output_0", "output_1"]
    assert onnx_outputs(run / "export" / "model.onnx") == ["output_0", "output_1"]
    names = {n for n in gates_of(report_of(run)) if n.startswith("parity:")}
    assert names == {f"parity:{side}[output_{i}]" for side in ("baseline", "pruned") for i in (0, 1)}


def test_a_rise_of_the_error_beyond_the_limit_exits_1_and_one_within_it_passes(checkpoint, tmp_path):
    """Retrain-free (epochs 0) the pruned mae is higher than the baseline's: a limit of 0 fails the run; a limit
    just above the rise passes it. A gate reading the drop as baseline - pruned (higher is better) would pass
    the first."""
    beyond, out = run_tiny(tmp_path / "beyond", checkpoint, finetune={"epochs": 0}, export={"onnx": False},
                           gates={"max_accuracy_drop": 0})
    assert beyond.exit_code == 1, beyond.output + beyond.stderr
    report = report_of(out)
    rise = report["pruned"]["accuracy"] - report["baseline"]["accuracy"]
    assert rise > 0.1, report["pruned"]
    gate = gates_of(report)["max_accuracy_drop"]
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["max_accuracy_drop"]
    assert gate["value"] == pytest.approx(rise, abs=2e-4) and report["passed"] is False
    assert "FAIL" in beyond.stdout

    within, out = run_tiny(tmp_path / "within", checkpoint, finetune={"epochs": 0}, export={"onnx": False},
                           gates={"max_accuracy_drop": round(rise + 0.01, 4)})
    assert within.exit_code == 0, within.output + within.stderr
    report = report_of(out)
    gate = gates_of(report)["max_accuracy_drop"]
    assert gate["passed"] and gate["value"] == pytest.approx(rise, abs=2e-4) and report["passed"] is True


def test_distillation_matches_every_output_of_the_teacher(checkpoint, tmp_path):
    """finetune.distill with a custom task: mean squared error to the unpruned network on both outputs (the
    classifier's KL on logits would not apply to a dict)."""
    plain, plain_out = run_tiny(tmp_path / "plain", checkpoint, export={"onnx": False})
    taught, taught_out = run_tiny(tmp_path / "taught", checkpoint, export={"onnx": False},
                                  finetune={"distill": {"weight": 0.5}})
    assert plain.exit_code == 0 and taught.exit_code == 0, taught.output + taught.stderr
    tune = json.loads((taught_out / "pruned" / "finetune.json").read_text())
    assert tune["distill"]["weight"] == 0.5
    losses = [[e["train_loss"] for e in epoch_log(run)] for run in (plain_out, taught_out)]
    assert losses[0] != losses[1] and all(np.isfinite(losses[1])), losses  # the teacher's term is in the loss


# ---------------------------------------------------------------------------------------- bad task inputs
def _quickstart_data() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())["data"]


def _without(section: str, key: str):
    def edit(recipe: dict) -> None:
        del recipe[section][key]
    return edit


def _task(**values):
    def edit(recipe: dict) -> None:
        recipe["task"].update(values)
    return edit


def _add_data(recipe: dict) -> None:
    recipe["data"] = _quickstart_data()


# case -> (how the tiny recipe is changed, the field the line names, another part of the line)
BAD = {
    "loaders module not importable": (_task(loaders="tests.integration.no_such_module:loaders"), "task.loaders",
                                      "cannot import 'tests.integration.no_such_module'"),
    "loaders raise": (_task(loaders=f"{HERE}:bad_loaders_raise"), "task.loaders", "raised FileNotFoundError"),
    "loss attribute missing": (_task(loss=f"{HERE}:no_such_loss"), "task.loss", "has no attribute 'no_such_loss'"),
    "loss not a function": (_task(loss=f"{HERE}:SHAPE"), "task.loss", "not a function"),
    "metric attribute misspelt": (_task(metric=f"{HERE}:metrik"), "task.metric", "did you mean 'metric'"),
    "loaders with wrong keys": (_task(loaders=f"{HERE}:bad_loaders_keys"), "task.loaders",
                                "returned ['test', 'train']; it must return a dict with the keys train, val, test, "
                                "calibration"),
    "batch not a pair": (_task(loaders=f"{HERE}:bad_loaders_not_pair"), "task.loaders",
                         "the val part yields a tuple of 3; each batch must be a pair"),
    "inputs of the wrong shape": (_task(loaders=f"{HERE}:bad_loaders_shape"), "task.loaders",
                                  "the test part: inputs are (32, 3, 8, 8), expected (N, 3, 16, 16)"),
    "not a callable spec": (_task(metric="metric"), "task.metric", "metric"),
    "empty primary": (_task(primary=""), "task.primary", ""),
    "unknown direction": (_task(direction="down"), "task.direction", "down"),
    "data section with a custom task": (_add_data, "data", "a custom task brings its own data"),
    "custom task without loaders": (_without("task", "loaders"), "task.loaders", "required field is missing"),
    "custom task without input shape": (_without("model", "input_shape"), "model.input_shape", ""),
    "precision variants": (lambda r: r["export"].update(precisions=["int8"]), "export.precisions",
                           "not supported with task.kind: custom"),
    "label smoothing": (lambda r: r["finetune"].update(label_smoothing=0.1), "finetune.label_smoothing",
                        "task.loss alone"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_task_input_exits_2_with_one_line_naming_the_field(case, checkpoint, tmp_path):
    edit, field, detail = BAD[case]
    recipe = ct.recipe(checkpoint)
    edit(recipe)
    path = ct.write_recipe(tmp_path / "recipe.yaml", data=recipe)
    out = tmp_path / "run"
    result = invoke("run", str(path), "--out", str(out))
    assert result.exit_code == 2, result.output + result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert field in lines[0] and detail in lines[0], lines[0]
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists(), "a bad task input must be refused before the run folder is created"


@pytest.mark.parametrize("fn, stage, expected", [
    ("metric=bad_metric_no_primary", "baseline",
     "task.primary: 'mae' is not among the values task.metric returned (accuracy, images)"),
    ("loss=bad_loss_not_scalar", "finetune", "task.loss returned (32,); it must return a scalar tensor"),
], ids=["metric without the primary", "loss not a scalar"])
def test_a_task_function_failing_at_run_time_exits_2_and_leaves_no_report(fn, stage, expected, checkpoint, tmp_path):
    key, name = fn.split("=")
    result, out = run_tiny(tmp_path, checkpoint, task={key: f"{HERE}:{name}"}, export={"onnx": False})
    assert result.exit_code == 2, result.output + result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (out / "report.json").exists() and not (out / "report.md").exists()
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and expected in status["error"]
    done = ["baseline", "prune"] if stage == "finetune" else []
    assert status["completed_stages"] == done, status


def test_validate_catches_a_bad_task_without_running(checkpoint, tmp_path):
    path = ct.write_recipe(tmp_path / "recipe.yaml", checkpoint, task={"loaders": f"{HERE}:bad_loaders_shape"})
    result = invoke("validate", str(path))
    assert result.exit_code == 2, result.output + result.stderr
    assert [line for line in result.stderr.splitlines() if "task.loaders" in line] == [
        "error: task.loaders: the test part: inputs are (32, 3, 8, 8), expected (N, 3, 16, 16) as "
        "model.input_shape says; fix the loaders or model.input_shape"], result.stderr


def test_inspect_lists_the_tiny_task_heads_and_the_groups_across_modules(checkpoint, tmp_path):
    path = ct.write_recipe(tmp_path / "recipe.yaml", checkpoint)
    result = invoke("inspect", str(path), "--json", str(tmp_path / "inspect.json"))
    assert result.exit_code == 0, result.output + result.stderr
    found = json.loads((tmp_path / "inspect.json").read_text())
    assert found["heads"] == ["fc", "mask"] and found["heads_rule"] == "auto"
    assert {found["skipped"][h] for h in ("fc", "mask")} == {"output head"}
    assert "output layers kept whole (auto:" in result.stdout and "fc, mask" in result.stdout
    assert found["crossing"] == {"features.6": ["features", "mask", "fc"]}
    assert "1 group(s) span more than one top-level module: features.6 (features -> mask -> fc)" in result.stdout


# ------------------------------------------------------------------------------- the shipped examples (slow)
EXAMPLES = {"detection": (DETECT, "map50", ["heatmap", "box"]), "segmentation": (SEGMENT, "miou", ["output_0", "output_1"])}


def compress(*args: str, sets=()) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, from the repository root (the recipes name ``examples.*`` and ``../examples``)."""
    command = [sys.executable, "-m", "compressor", *args, *[x for s in sets for x in ("--set", s)]]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CI": "true"})


def check_example_run(out: Path, primary: str, outputs: list[str]) -> dict:
    report = report_of(out)
    assert report["task"]["kind"] == "custom" and report["task"]["primary"] == primary
    assert report["task"]["direction"] == "higher"
    assert report["reduction"]["macs_pct"] >= 40
    gates = gates_of(report)
    for side in ("baseline", "pruned"):
        for name in outputs:
            assert gates[f"parity:{side}[{name}]"]["passed"], gates
    assert not {n for n in gates if n in ("parity:baseline", "parity:pruned")}  # one gate per output, not one in all
    for path in (out / "baseline" / "model.onnx", out / "export" / "model.onnx"):
        assert onnx_outputs(path) == outputs, path
    assert set(report["pruned"]["metrics"]) >= {primary, "images"}
    return report


@pytest.mark.slow
def test_the_shipped_detection_recipe_runs_end_to_end(tmp_path):
    """The shipped recipe with a MACs target in place of its latency target: the plan a latency search finds
    depends on the machine's timings, so a noisy CI machine could miss the latency gate by chance (the README
    quotes the recipe as shipped, measured on this machine)."""
    out = tmp_path / "run"
    proc = compress("run", str(DETECT.relative_to(REPO)), "--out", str(out),
                    sets=["pruning.latency_target=null", "pruning.macs_reduction_pct=45"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = check_example_run(out, *EXAMPLES["detection"][1:])
    assert report["passed"] is True and all(g["passed"] for g in report["gates"])
    assert {"max_accuracy_drop", "min_macs_reduction_pct"} <= set(gates_of(report))
    assert report["pruned"]["accuracy"] >= report["baseline"]["accuracy"] - 5
    assert report["latency"], "the shipped recipe profiles both models"


@pytest.mark.slow
def test_the_shipped_segmentation_recipe_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = compress("run", str(SEGMENT.relative_to(REPO)), "--out", str(out),
                    sets=["profile.iterations=5", "profile.repeats=2", "profile.warmup=2"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = check_example_run(out, *EXAMPLES["segmentation"][1:])
    assert report["passed"] is True
    assert set(report["pruned"]["metrics"]) == {"miou", "pixel_acc", "images"}


@pytest.mark.slow
def test_the_detection_example_without_fine_tuning_fails_its_accuracy_gate(tmp_path):
    out = tmp_path / "run"
    proc = compress("run", str(DETECT.relative_to(REPO)), "--out", str(out),
                    sets=["gates.max_accuracy_drop=0", "finetune.epochs=0", "pruning.latency_target=null",
                          "pruning.macs_reduction_pct=45", "profile.enabled=false"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = report_of(out)
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["max_accuracy_drop"]
    gate = gates_of(report)["max_accuracy_drop"]
    assert gate["value"] == pytest.approx(report["baseline"]["accuracy"] - report["pruned"]["accuracy"], abs=2e-4)
    assert gate["value"] > 20  # 45% fewer MACs and no retraining: most detections are lost
    assert report["passed"] is False and "gate max_accuracy_drop: FAIL" in proc.stdout


def test_inspect_of_the_detection_recipe_lists_its_heads_and_the_groups_across_modules(tmp_path):
    out = tmp_path / "inspect.json"
    result = invoke("inspect", str(DETECT), "--json", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    found = json.loads(out.read_text())
    assert found["heads"] == ["head.box", "head.heatmap"] and found["heads_rule"] == "auto"
    assert found["skipped"]["head.box"] == found["skipped"]["head.heatmap"] == "output head"
    assert not {"head.box", "head.heatmap"} & {g["key"] for g in found["groups"]}
    assert found["crossing"]["neck.smooth.0.0"] == ["neck", "head"]
    text = " ".join(result.stdout.split())  # the console wraps long lines
    assert "output layers kept whole (auto:" in text and "head.box, head.heatmap" in text
    assert f"{len(found['crossing'])} group(s) span more than one top-level module: " in text
    assert "neck.smooth.0.0 (neck -> head)" in text


@pytest.mark.slow
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_validate_passes_on_the_shipped_example(example):
    recipe = EXAMPLES[example][0]
    result = invoke("validate", str(recipe))
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.startswith("ok:") and "(task.loaders)" in result.stdout
