"""``compress validate`` is a preflight: it refuses (exit 2, one line per problem, every problem) what
``compress run`` would refuse, says ok with a summary otherwise, and writes nothing outside a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app
from compressor.models.cifar_resnet import resnet20

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
CHECKPOINT = REPO / "compressor" / "assets" / "quicknet_shapes.pt"
SMALL = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}",
         "data.train.num_images=300", "data.test.num_images=100", "data.val_split=50", "data.calibration_images=32"]
NO_EXPORT = ["export.onnx=false", "profile.enabled=false"]  # the data and plan cases need no ONNX file


def validate(*overrides: str, recipe: Path = QUICKSTART):
    sets = [x for o in (*SMALL, *overrides) for x in ("--set", o)]
    result = CliRunner().invoke(app, ["validate", str(recipe), *sets])
    assert "Traceback" not in result.output, result.output
    return result


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error")]


def resnet20_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "resnet20.pt"
    torch.save(resnet20().state_dict(), path)
    return path


def truncated_checkpoint(tmp_path: Path) -> Path:
    data = CHECKPOINT.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def npz_without_labels_key(tmp_path: Path) -> Path:
    path = tmp_path / "test.npz"
    np.savez(path, data=np.zeros((8, 3, 32, 32), np.uint8), labels=np.zeros(8, np.int64))
    return path


def cifar_without_pickles(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / "README.txt").write_text("the pickles were never extracted")
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in an empty folder with an empty temp folder: afterwards both must be as empty as before (but for the
    empty cache folder torch's ONNX exporter makes in the system temp folder once per user)."""
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield work, temp
    assert list(work.iterdir()) == []
    assert [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_ok_prints_one_summary_line_and_writes_nothing(isolated):
    result = validate()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok:") and len(result.stdout.splitlines()) == 1
    line = result.stdout
    assert "quicknet" in line and "CifarResNet 3x32x32" in line and "params" in line and "MACs (ONNX graph)" in line
    assert "train 250 / val 50 / test 100 / calibration 32 images, 10 classes" in line
    assert "ONNX parity" in line and "dynamo exporter" in line
    assert errors(result) == []


def test_checkpoint_of_a_shallower_resnet(tmp_path):
    result = validate("model.arch=resnet56", f"model.checkpoint={resnet20_checkpoint(tmp_path)}")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith("error: model.checkpoint resnet20.pt does not match model 'resnet56': ")
    assert "missing keys (layer1.3." in line and "set model.arch: resnet20" in line
    assert "skipped: the trial prune and the ONNX export" in result.stderr


def test_wrong_num_classes_names_the_field():
    result = validate("data.num_classes=5")
    assert result.exit_code == 2
    lines = errors(result)
    assert lines[0] == ("error: data.num_classes: 5, but the classifier 'linear' in model.checkpoint quicknet_shapes.pt "
                        "has 10 outputs; set data.num_classes: 10 (or use a checkpoint trained for 5 classes)")
    assert all("data.num_classes" in line for line in lines), lines  # the labels of both splits say so too
    assert {"error: data.train", "error: data.test"} <= {line.split(":")[0] + ":" + line.split(":")[1] for line in lines}


def test_truncated_checkpoint(tmp_path):
    result = validate(f"model.checkpoint={truncated_checkpoint(tmp_path)}")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith(f"error: model.checkpoint {tmp_path / 'half.pt'}: not a readable PyTorch checkpoint, "
                           "maybe truncated or corrupt")
    assert "skipped:" in result.stderr


def test_npz_without_the_labels_key(tmp_path):
    path = npz_without_labels_key(tmp_path)
    result = validate(*NO_EXPORT, f"data.test={{format: npz, path: {path}, labels_key: targets}}")
    assert result.exit_code == 2
    assert errors(result) == [f"error: data.test.labels_key: {path} has no array 'targets' (it has: data, labels); "
                              "set data.test.labels_key to one of them"]


def test_cifar_folder_without_pickles(tmp_path):
    folder = cifar_without_pickles(tmp_path)
    result = validate(*NO_EXPORT, f"data.train={{format: cifar10, path: {folder}}}")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith(f"error: data.train.path: {folder} has no cifar10 train pickles (missing: data_batch_1, ")


def test_every_problem_is_listed_and_data_checks_run_without_a_checkpoint(tmp_path):
    npz, cifar = npz_without_labels_key(tmp_path), cifar_without_pickles(tmp_path)
    result = validate(f"model.checkpoint={truncated_checkpoint(tmp_path)}", "data.image_size=64",
                      f"data.train={{format: cifar10, path: {cifar}}}",
                      f"data.test={{format: npz, path: {npz}, labels_key: targets}}")
    assert result.exit_code == 2
    lines = errors(result)
    assert [line.split(" ")[1].rstrip(":") for line in lines] == [
        "model.checkpoint", "data.image_size", "data.train.path", "data.test.labels_key"], lines
    assert result.stderr.count("skipped:") == 1 and result.stdout == ""


def test_plan_and_data_problems_are_reported_together(tmp_path):
    npz = npz_without_labels_key(tmp_path)
    result = validate(*NO_EXPORT, "pruning.ignore=[layer9.*]", f"data.test={{format: npz, path: {npz}, labels_key: y}}")
    assert result.exit_code == 2
    lines = errors(result)
    assert len(lines) == 2 and "data.test.labels_key" in lines[0] and "pruning.ignore[0]" in lines[1], lines


def test_labels_beyond_num_classes_in_an_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, data=np.zeros((8, 32, 32, 3), np.uint8), labels=np.arange(8) + 5)
    result = validate(*NO_EXPORT, f"data.test={{format: npz, path: {path}, layout: NHWC}}")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith("error: data.test: labels in") and "range over 5..12 but data.num_classes is 10" in line


def test_image_folder_with_another_class_count(tmp_path):
    from PIL import Image

    for name in ("cat", "dog", "fox"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "folder" / name / "0.png")
    result = validate(*NO_EXPORT, f"data.test={{format: imagefolder, path: {tmp_path / 'folder'}}}")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "has 3 classes (cat, dog, fox) but data.num_classes is 10" in line


def test_schema_errors_stop_before_the_preflight():
    result = validate("finetune.epochs=-1", "finetune.lr=fast")
    assert result.exit_code == 2 and len(errors(result)) == 2 and "skipped" not in result.stderr


def test_schema_only_is_instant_and_torch_free():
    code = ("import sys\nfrom compressor.cli import main\n"
            "sys.argv = ['compress', 'validate', '--schema-only', 'recipes/quickstart.yaml']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print('IMPORTED:', *(m for m in ('torch', 'onnx', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: recipes/quickstart.yaml: quicknet")
    assert out.stdout.strip().splitlines()[-1] == "IMPORTED:"
