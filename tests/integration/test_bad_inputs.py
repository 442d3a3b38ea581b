"""Every bad input gives exit code 2, one line naming the problem, no traceback, and no finished-looking run."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from compressor.cli import app

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
CHECKPOINT = REPO / "compressor" / "assets" / "quicknet_shapes.pt"
SMALL = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}",
         "data.train.num_images=300", "data.test.num_images=100", "data.val_split=50", "finetune.epochs=0",
         "profile.enabled=false"]


def recipe_with(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(QUICKSTART.read_text().replace(old, new))
    return path


def npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def images(n: int = 8) -> np.ndarray:
    return np.zeros((n, 3, 32, 32), dtype=np.uint8)


# Each case: tmp_path -> (recipe path, extra --set overrides, extra CLI args); then the expected message part.
CASES = {
    "recipe missing": (lambda t: (t / "nope.yaml", [], []), "recipe file not found"),
    "invalid yaml": (lambda t: (recipe_with(t, "name: quickstart", "name: [quickstart"), [], []), "invalid YAML"),
    "unknown top-level key": (lambda t: (recipe_with(t, "seed: 0", "seed: 0\nmodle: {}"), [], []),
                              "modle: unknown field"),
    "wrong type": (lambda t: (QUICKSTART, ["finetune.epochs=three"], []), "finetune.epochs"),
    "negative ratio": (lambda t: (QUICKSTART, ["pruning.macs_reduction_pct=null", "pruning.ratio=-0.2"], []),
                       "pruning.ratio"),
    "normalize length": (lambda t: (QUICKSTART, ["data.normalize.mean=[0.5, 0.5]"], []), "data.normalize"),
    "unknown method": (lambda t: (QUICKSTART, ["method.name=hrnak"], []), "method.name: unknown name 'hrnak'"),
    "malformed --set": (lambda t: (QUICKSTART, ["finetune.epochs"], []), "expected key.path=value"),
    "unset env var": (lambda t: (QUICKSTART, ["model.checkpoint=${COMPRESSOR_NOPE_VAR}"], []),
                      "${COMPRESSOR_NOPE_VAR}, which is not set"),
    "cuda without gpu": (lambda t: (QUICKSTART, ["device=cuda"], []), "device: cuda"),
    "checkpoint missing": (lambda t: (QUICKSTART, [f"model.checkpoint={t / 'none.pt'}"], []),
                           "model.checkpoint: file not found"),
    "checkpoint corrupt": (lambda t: (QUICKSTART, [f"model.checkpoint={_write(t / 'c.pt', b'not a checkpoint')}"], []),
                           "c.pt"),
    "checkpoint truncated": (lambda t: (QUICKSTART, [f"model.checkpoint={_truncated(t)}"], []), "half.pt"),
    "checkpoint of another architecture": (lambda t: (QUICKSTART, ["model.arch=resnet20"], []),
                                           "does not match model 'resnet20'"),
    "checkpoint with other class count": (lambda t: (QUICKSTART, ["data.num_classes=5"], []), "shape mismatch"),
    "unknown architecture": (lambda t: (QUICKSTART, ["model.arch=quiknet"], []), "did you mean 'quicknet'"),
    "bad model kwargs": (lambda t: (QUICKSTART, ["model.kwargs={widthz: [8, 16, 32]}"], []), "model.kwargs"),
    "user module missing": (lambda t: (QUICKSTART, ["model.arch=nosuch_pkg.nets:build", "model.input_shape=[3, 32, 32]"],
                                       []), "nosuch_pkg"),
    "data path missing": (lambda t: (QUICKSTART, [f"data.train={{format: imagefolder, path: {t / 'nodata'}}}"], []),
                          "data.train"),
    "empty image folder": (lambda t: (QUICKSTART, [f"data.train={{format: imagefolder, path: {_mkdir(t / 'empty')}}}"],
                                      []), "data.train"),
    "corrupt zip": (lambda t: (QUICKSTART, [f"data.test={{format: imagefolder, path: {_write(t / 'x.zip', b'PK junk')}}}"],
                               []), "data.test"),
    "npz without the key": (lambda t: (QUICKSTART, [f"data.test={{format: npz, path: {npz(t, pixels=images())}}}"], []),
                            "data.test"),
    "labels out of range": (lambda t: (QUICKSTART, [f"data.test={{format: npz, path: "
                                                    f"{npz(t, data=images(), labels=np.full(8, 12))}}}"], []),
                            "data.test"),
    "ignore matches nothing": (lambda t: (QUICKSTART, ["pruning.ignore=[layer9.*]"], []), "pruning.ignore[0]"),
    "layer rule matches nothing": (lambda t: (QUICKSTART, ["pruning.layers=[{match: 'fc*', ratio: 0.5}]"], []),
                                   "pruning.layers[0].match"),
    "unreachable MACs target": (lambda t: (QUICKSTART, ["pruning.residual=internal", "pruning.macs_reduction_pct=97"],
                                           []), "out of reach"),
    "too coarse to remove anything": (lambda t: (QUICKSTART, ["pruning.macs_reduction_pct=null", "pruning.ratio=0.5",
                                                              "pruning.round_to=1000"], []), "removes no channel"),
    "latency gate without export": (lambda t: (QUICKSTART, ["export.onnx=false",
                                                            "gates.max_latency_ms=[{batch: 1, p50_ms: 100}]"], []),
                                    "gates.max_latency_ms needs the ONNX export"),
    "pickled model without trust": (lambda t: (QUICKSTART, [f"model.checkpoint={_pickled_model(t)}"], []),
                                    "trust_checkpoint"),
    "distillation weight out of range": (lambda t: (QUICKSTART, ["finetune.distill={weight: 1.5}"], []),
                                         "finetune.distill.weight"),
    "unknown distillation key": (lambda t: (QUICKSTART, ["finetune.distill={temp: 2}"], []), "finetune.distill"),
    "empty zip": (lambda t: (QUICKSTART, [f"data.test={{format: imagefolder, path: {_empty_zip(t)}}}"], []),
                  "data.test"),
    "zero batch size": (lambda t: (QUICKSTART, ["data.batch_size=0"], []), "data.batch_size"),
    "tensorrt asked without tensorrt": (lambda t: (QUICKSTART, ["export.tensorrt.enabled=true"], []),
                                        "pip install 'compressor[trt]'"),
    "gpu backend without onnxruntime-gpu": (lambda t: (QUICKSTART, ["profile.enabled=true",
                                                                   "profile.backends=[onnxruntime-cuda]"], []),
                                            "onnxruntime-gpu"),
    "unknown latency backend": (lambda t: (QUICKSTART, ["profile.backends=[onnxruntime-gpu]"], []),
                                "profile.backends"),
    "tensorrt backend without engines": (lambda t: (QUICKSTART, ["profile.backends=[tensorrt]"], []),
                                         "export.tensorrt.enabled: true"),
    "latency gate on an unprofiled backend": (lambda t: (QUICKSTART, [
        "gates.max_latency_ms=[{batch: 1, p50_ms: 5, backend: torch-cpu, artifact: pruned_torch}]"], []),
        "not in profile.backends"),
    "latency gate on an artifact not exported": (lambda t: (QUICKSTART, [
        "gates.max_latency_ms=[{batch: 1, p50_ms: 5, artifact: pruned_int8}]"], []), "pruned_int8 is not measured"),
    "out dir not empty": (lambda t: (QUICKSTART, [], ["--out", str(_nonempty(t))]), "not empty"),
    "out dir unwritable": (lambda t: (QUICKSTART, [], ["--out", str(_write(t / "file", b"x") / "run")]), "--out"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _truncated(tmp: Path) -> Path:
    data = CHECKPOINT.read_bytes()
    return _write(tmp / "half.pt", data[: len(data) // 2])


def _pickled_model(tmp: Path) -> Path:
    import torch

    from compressor.models.cifar_resnet import quicknet

    path = tmp / "whole_model.pt"
    torch.save(quicknet(), path)  # a pickled nn.Module, not a state_dict: refused unless trusted
    return path


def _empty_zip(tmp: Path) -> Path:
    path = tmp / "empty.zip"
    zipfile.ZipFile(path, "w").close()
    return path


def _nonempty(tmp: Path) -> Path:
    out = tmp / "used"
    out.mkdir()
    (out / "something.txt").write_text("earlier run")
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup, expected = CASES[case]
    recipe, overrides, args = setup(tmp_path)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "run")]
    sets = [x for o in SMALL + overrides for x in ("--set", o)]
    result = CliRunner().invoke(app, ["run", str(recipe), *args, *sets])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(lines) == 1, result.output
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "report.json").exists()
    assert not (tmp_path / "run").exists(), "a bad input must be refused before the run folder is created"


def test_a_failure_after_the_start_leaves_a_failed_status_and_no_report(tmp_path, monkeypatch):
    from compressor import stages
    from compressor.errors import ExportError

    def broken_export(*args, **kwargs):
        raise ExportError("ONNX export of CifarResNet failed: simulated")

    monkeypatch.setattr(stages, "export", broken_export)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(out), *[x for o in SMALL for x in ("--set", o)]])
    assert result.exit_code == 2 and "simulated" in result.output
    assert not (out / "report.json").exists()
    status = (out / "status.json").read_text()
    assert '"status": "failed"' in status and '"finetune"' in status


def test_zip_with_path_escape_is_refused(tmp_path):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../outside/cat/0.png", b"x")
    sets = [x for o in SMALL + [f"data.train={{format: imagefolder, path: {bad}}}"] for x in ("--set", o)]
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(tmp_path / "run"), *sets])
    assert result.exit_code == 2 and "data.train" in result.output


def _resume(*args: str):
    return CliRunner().invoke(app, ["run", *args])


@pytest.mark.parametrize("args, expected", [
    (lambda t: ["--resume", str(t / "nowhere")], "no such run folder"),
    (lambda t: ["--resume", str(_mkdir(t / "plain"))], "not a compressor run folder"),
    (lambda t: [str(QUICKSTART), "--resume", str(_mkdir(t / "plain"))], "takes no RECIPE"),
    (lambda t: [], "missing RECIPE"),
], ids=["missing folder", "not a run folder", "recipe and resume", "nothing to run"])
def test_bad_resume_exits_2_with_one_line(args, expected, tmp_path):
    result = _resume(*args(tmp_path))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and expected in lines[0], result.output


def test_resume_with_a_truncated_training_checkpoint_names_it(tmp_path):
    out = tmp_path / "run"
    sets = [x for o in SMALL + ["finetune.epochs=1"] for x in ("--set", o)]
    assert CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(out), *sets]).exit_code in (0, 1)
    (out / "report.json").unlink()
    (out / ".stages" / "finetune.json").unlink()
    (out / "status.json").write_text('{"status": "running"}')
    (out / "pruned" / "finetune.ckpt.pt").write_bytes(b"PK\x03\x04 truncated")
    result = _resume("--resume", str(out))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "finetune.ckpt.pt: cannot read this training checkpoint" in lines[0], result.output
    assert not (out / "report.json").exists()


def test_a_recipe_needing_tensorrt_fails_before_any_work(tmp_path):
    import time

    start = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), "--out", str(tmp_path / "run"),
                                      "--set", "export.tensorrt.enabled=true"])
    elapsed = time.perf_counter() - start
    assert result.exit_code == 2 and "compressor[trt]" in result.output, result.output
    assert elapsed < 3.0, f"took {elapsed:.1f} s: the check must come before loading data and models"
    assert not (tmp_path / "run").exists()
