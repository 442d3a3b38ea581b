"""The shipped ResNet-56 recipe on the real akamaster checkpoint (skips without COMPRESSOR_SHARED_DATA).

Loads the public checkpoint layout, evaluates it on the exact 1,017 CIFAR-10 test images, prunes to a 50%
MACs target with both residual policies, exports and profiles. The retrain-free accuracy of plain L1 (no
compensation, which the recipe itself turns on) with ``residual: internal`` must match the anchor measured
independently with plain torch-pruning (44.3%).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app

REPO = Path(__file__).resolve().parents[2]


def shared_overrides(shared_data: Path, checkpoint: Path) -> list[str]:
    return [
        f"model.checkpoint={checkpoint}",
        f"data.train={{format: imagefolder, path: {shared_data / 'cifar10-jpg' / 'train.zip'}}}",
        f"data.test={{format: npz, path: {shared_data / 'cifar10-exact' / 'test_first1017.npz'}, "
        "labels_key: labels_all10000}",
        "data.val_split=100", "data.calibration_images=64",
        "profile.batch_sizes=[1]", "profile.iterations=3", "profile.repeats=1", "profile.warmup=1",
        "gates.max_accuracy_drop=null",  # 64 calibration images: the plumbing is tested here, not the accuracy
    ]


@pytest.mark.slow
@pytest.mark.parametrize("residual", ["internal", "coupled"])
@pytest.mark.parametrize("method", ["hrank", "pfp", "functionality"])
def test_data_informed_methods_on_the_resnet56_recipe(shared_data, akamaster_resnet56, tmp_path, method, residual):
    options = {"hrank": ["method.images=64"], "pfp": ["method.sample_size=32"], "functionality": ["method.images=64"]}
    overrides = shared_overrides(shared_data, akamaster_resnet56) + [f"method.name={method}",
                                                                     f"pruning.residual={residual}"] + options[method]
    out = tmp_path / "run"
    args = ["run", str(REPO / "recipes" / "resnet56_cifar10_l1.yaml"), "--out", str(out)]
    result = CliRunner().invoke(app, args + [x for o in overrides for x in ("--set", o)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["name"] == method and report["pruning"]["residual"] == residual
    assert abs(report["reduction"]["macs_pct"] - 50) <= 1.0 and report["latency"] and report["parity"]
    assert 0 <= report["pruned"]["accuracy"] <= 100 and (out / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("residual", ["internal", "coupled"])
def test_resnet56_recipe_on_the_akamaster_checkpoint(shared_data, akamaster_resnet56, tmp_path, residual):
    overrides = [
        f"model.checkpoint={akamaster_resnet56}",
        f"data.train={{format: imagefolder, path: {shared_data / 'cifar10-jpg' / 'train.zip'}}}",
        f"data.test={{format: npz, path: {shared_data / 'cifar10-exact' / 'test_first1017.npz'}, "
        "labels_key: labels_all10000}",
        "data.val_split=100", "data.calibration_images=64", f"pruning.residual={residual}",
        "profile.batch_sizes=[1]", "profile.iterations=3", "profile.repeats=1", "profile.warmup=1",
        "pruning.compensation=none", "gates.max_accuracy_drop=null",  # plain L1: the torch-pruning anchor below
    ]
    out = tmp_path / "run"
    args = ["run", str(REPO / "recipes" / "resnet56_cifar10_l1.yaml"), "--out", str(out)]
    result = CliRunner().invoke(app, args + [x for o in overrides for x in ("--set", o)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"]["accuracy"] == pytest.approx(92.72, abs=0.01)
    assert report["baseline"]["macs"] == 125_485_696  # the commonly quoted 125.49 M, counted on ONNX
    assert abs(report["reduction"]["macs_pct"] - 50) <= 1.0
    if residual == "internal":
        assert report["pruned"]["accuracy"] == pytest.approx(44.3, abs=1.5)
    assert (out / "export" / "model.onnx").is_file() and report["latency"]
