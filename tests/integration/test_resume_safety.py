"""Run records: every stage's record of a real run decodes to its typed result and back, and ``--resume``
never unpickles: a malicious pickle planted in any place of a run folder that resume reads is refused (exit 2,
one line naming the file) and never runs.

The planted object writes a marker file when unpickled; one test proves it does so when loaded the unsafe
way, so that the others can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SMALL = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}",
         "data.train.num_images=600", "data.test.num_images=100", "data.val_split=100", "data.calibration_images=32",
         "finetune.epochs=1", "data.batch_size=32", "profile.batch_sizes=[1]", "profile.iterations=2",
         "profile.repeats=1", "profile.warmup=1", "export.parity_images=8", "gates={max_accuracy_drop: null}"]


class Bomb:
    """Unpickling calls ``exec``, which writes the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Bomb(marker), "format": 1}, path)


def finished_run(root: Path, extra: list[str]) -> Path:
    out = root / "run"
    sets = [x for o in SMALL + extra for x in ("--set", o)]
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(out), *sets], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("l1"), [])


@pytest.fixture(scope="module")
def sfp_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("sfp"), ["method={name: sfp, epochs: 1}"])


@pytest.fixture(scope="module")
def swp_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("swp"), ["method={name: swp, epochs: 1, alpha: 0.05, threshold: 0.3}",
                                                         "pruning.macs_reduction_pct=null", "export.stripe.enabled=true"])


@pytest.mark.parametrize("kind", ["l1_run", "sfp_run", "swp_run"])
def test_every_stage_record_decodes_to_its_result_and_back(kind, request):
    from compressor.codec import decode, encode
    from compressor.pipeline import STAGES

    run = request.getfixturevalue(kind)
    for stage in STAGES:
        data = json.loads((run / ".stages" / f"{stage.name}.json").read_text())
        result = decode(stage.result, data["result"], run)
        assert isinstance(result, stage.result) and encode(result, run) == data["result"], stage.name
        assert (data["state_dict"] is not None) == stage.network
    exported = decode(STAGES[3].result, json.loads((run / ".stages" / "export.json").read_text())["result"], run)
    assert exported.onnx.path == run / "export" / "model.onnx" and exported.onnx.path.is_file()
    if kind == "swp_run":
        assert exported.stripe is not None and exported.stripe.layers  # tuple of LayerChoice, typed


def interrupted_copy(run: Path, tmp_path: Path, unrecorded: tuple[str, ...] = ()) -> Path:
    """A copy of a finished run that looks interrupted: no report, status running, and ``unrecorded`` stages
    (and the ones after them) without records, so that resume runs them."""
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    (out / "report.json").unlink()
    (out / "status.json").write_text(json.dumps({"status": "running"}))
    order = ["baseline", "prune", "finetune", "export", "profile"]
    for stage in order[min([order.index(s) for s in unrecorded], default=len(order)):]:
        for record in (out / ".stages").glob(f"{stage}.*"):
            record.unlink()
    return out


def resume(out: Path):
    return CliRunner().invoke(app, ["run", "--resume", str(out)])


def test_the_planted_object_does_run_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "marker"
    plant(tmp_path / "bomb.pt", marker)
    torch.load(tmp_path / "bomb.pt", weights_only=False)
    assert marker.read_text() == "ran"


PLACES = {  # place -> (stages resume must run to read it, the file)
    "baseline record": ((), ".stages/baseline.json"),
    "prune record": ((), ".stages/prune.json"),
    "finetune record": ((), ".stages/finetune.json"),
    "export record": ((), ".stages/export.json"),
    "profile record": ((), ".stages/profile.json"),
    "prune weights": ((), ".stages/prune.state.pt"),
    "finetune weights": ((), ".stages/finetune.state.pt"),
    "fine-tuning epoch checkpoint": (("finetune",), "pruned/finetune.ckpt.pt"),
    "an old pickled record": ((), ".stages/prune.pt"),
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_planted_pickle_is_refused_and_never_runs(place, l1_run, tmp_path):
    unrecorded, name = PLACES[place]
    out = interrupted_copy(l1_run, tmp_path, unrecorded)
    marker = tmp_path / "marker"
    plant(out / name, marker)
    result = resume(out)
    assert not marker.exists(), f"the pickle in {name} ran"
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and Path(name).name in errors[0] and "Traceback" not in result.output, result.output
    assert not (out / "report.json").exists()


def test_a_planted_mask_training_checkpoint_is_refused(sfp_run, tmp_path):
    out = interrupted_copy(sfp_run, tmp_path, ("prune",))
    marker = tmp_path / "marker"
    plant(out / "pruned" / "method.ckpt.pt", marker)
    result = resume(out)
    assert not marker.exists() and result.exit_code == 2, result.output
    assert "method.ckpt.pt: cannot read this training checkpoint" in result.output


def test_a_resolved_recipe_with_python_tags_is_refused(l1_run, tmp_path):
    out = interrupted_copy(l1_run, tmp_path)
    marker = tmp_path / "marker"
    text = (out / "recipe.resolved.yaml").read_text()
    payload = f"!!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').write('ran')\"]"
    (out / "recipe.resolved.yaml").write_text(text.replace("name: quickstart", f"name: {payload}", 1))
    result = resume(out)
    assert not marker.exists() and result.exit_code == 2 and "recipe.resolved.yaml" in result.output, result.output


def test_a_resolved_recipe_that_trusts_a_planted_checkpoint_does_not_unpickle_it(l1_run, tmp_path):
    """A run folder cannot switch unpickling on: --resume loads model.checkpoint with weights_only."""
    out = interrupted_copy(l1_run, tmp_path)
    marker = tmp_path / "marker"
    plant(out / "weights.pt", marker)
    text = (out / "recipe.resolved.yaml").read_text()
    text = text.replace("trust_checkpoint: false", "trust_checkpoint: true")
    text = "\n".join(f"  checkpoint: {out / 'weights.pt'}" if line.startswith("  checkpoint:") else line
                     for line in text.splitlines())
    (out / "recipe.resolved.yaml").write_text(text)
    result = resume(out)
    assert not marker.exists() and result.exit_code == 2, result.output
    assert "weights.pt" in result.output and "--resume" in result.output


def test_a_planted_report_of_a_complete_run_is_refused(l1_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(l1_run, out)
    marker = tmp_path / "marker"
    plant(out / "report.json", marker)
    result = resume(out)
    assert not marker.exists() and result.exit_code == 2 and "report.json" in result.output, result.output


def test_a_resolved_recipe_naming_model_code_is_not_imported_without_trust(l1_run, tmp_path):
    """``model.arch: module:factory`` is code the folder names: resume refuses it unless --trust-model-code."""
    import yaml

    out = interrupted_copy(l1_run, tmp_path)
    marker = tmp_path / "marker"
    recipe = yaml.safe_load((out / "recipe.resolved.yaml").read_text())
    recipe["model"].update(arch="os:system", kwargs={"command": f"echo ran > {marker}"}, input_shape=[3, 32, 32])
    (out / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe))
    result = resume(out)
    assert not marker.exists() and result.exit_code == 2, result.output
    assert "'os:system'" in result.output and "--trust-model-code" in result.output
    unrelated = CliRunner().invoke(app, ["run", str(QUICKSTART), "--trust-model-code"])
    assert unrelated.exit_code == 2 and "goes with --resume" in unrelated.output


def test_a_resolved_recipe_naming_task_code_is_not_imported_without_trust(l1_run, tmp_path):
    """A custom task's loaders, loss and metric are code the folder names too, whatever model.arch is."""
    import yaml

    out = interrupted_copy(l1_run, tmp_path)
    recipe = yaml.safe_load((out / "recipe.resolved.yaml").read_text())
    del recipe["data"]
    recipe["task"] = {"kind": "custom", "loaders": "os:system", "loss": "os:getcwd", "metric": "os:getcwd",
                      "primary": "x"}
    recipe["model"]["input_shape"] = [3, 32, 32]
    (out / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe))
    result = resume(out)
    assert result.exit_code == 2, result.output
    assert "'os:system' (task.loaders)" in result.output and "--trust-model-code" in result.output
