"""A pruned model reloads from state_dict + history (rebuild, replay, strict load) with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

from compressor.config import PruningConfig
from compressor.config.methods import L1Options
from compressor.errors import CheckpointError
from compressor.methods.l1 import L1
from compressor.models.cifar_resnet import resnet20
from compressor.surgery import load_pruned, prune, save_pruned


@pytest.mark.parametrize("residual", ["internal", "coupled"])
def test_save_and_reload_by_replay(tmp_path, residual):
    model = resnet20().eval()
    result = prune(model, (3, 32, 32), L1(L1Options(name="l1")), PruningConfig(ratio=0.5, residual=residual))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # fine-tuned weights differ from the original ones: the state_dict must carry them
    save_pruned(tmp_path, model, result.history, {"arch": "resnet20", "kwargs": {"shortcut": "A"}}, 10, (3, 32, 32))
    record = json.loads((tmp_path / "pruning_history.json").read_text())
    assert record["history"] and record["model"]["arch"] == "resnet20"
    reloaded = load_pruned(tmp_path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model.eval()(x))
    assert str(reloaded) == str(model)


def test_load_pruned_errors(tmp_path):
    with pytest.raises(CheckpointError, match="pruning_history.json not found"):
        load_pruned(tmp_path)
    (tmp_path / "pruning_history.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(CheckpointError, match="unsupported history format"):
        load_pruned(tmp_path)
