"""Fine-tuning: schedules, optimizer groups, best epoch chosen on validation, BatchNorm re-estimation."""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from compressor.config import FinetuneConfig
from compressor.training import build_optimizer, evaluate, finetune, lr_factor, recalibrate_batchnorm
from compressor.training.evaluate import EvalResult

finetune_module = importlib.import_module("compressor.training.finetune")  # the module, not the function


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def loader(n: int = 48, batch: int = 16, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_cosine_with_warmup_and_step_schedules():
    cos = lr_factor(FinetuneConfig(epochs=10, warmup_epochs=2, schedule="cosine"), steps_per_epoch=10)
    assert cos(0) == pytest.approx(0.05) and cos(19) == pytest.approx(1.0)
    assert cos(20) == pytest.approx(1.0) and cos(60) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    step = lr_factor(FinetuneConfig(epochs=10, schedule="step", milestones=[0.5, 0.75], gamma=0.1), 10)
    assert [step(s) for s in (0, 49, 50, 74, 75)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(FinetuneConfig(epochs=3, schedule="constant"), 5)(14) == 1.0


def test_no_weight_decay_on_batchnorm_and_biases():
    model = tiny_model()
    opt = build_optimizer(model, FinetuneConfig(epochs=1, weight_decay=0.01))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model[0].weight) in decayed and id(model[5].weight) in decayed
    assert id(model[0].bias) not in decayed and id(model[1].weight) not in decayed


def test_zero_epochs_changes_nothing():
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    result = finetune(model, loader(), loader(seed=1), FinetuneConfig(epochs=0), torch.device("cpu"))
    assert result.best_epoch is None and result.epochs == ()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_best_epoch_is_chosen_on_validation(monkeypatch):
    """Validation accuracies 50, 80, 60: the model must end with epoch 2's weights."""
    scripted = iter([50.0, 80.0, 60.0])
    snapshots = []

    def fake_evaluate(model, val_loader, device, description=""):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return EvalResult(accuracy=next(scripted), loss=0.0, images=1)

    monkeypatch.setattr(importlib.import_module("compressor.training.task"), "evaluate_sharded", fake_evaluate)
    model = tiny_model()
    result = finetune(model, loader(), loader(seed=1), FinetuneConfig(epochs=3, lr=0.5), torch.device("cpu"))
    assert result.best_epoch == 2 and result.best_val_accuracy == 80.0
    assert not torch.equal(snapshots[1]["0.weight"], snapshots[2]["0.weight"])  # training moved the weights
    assert all(torch.equal(snapshots[1][k], v) for k, v in model.state_dict().items())


def test_training_reduces_loss_and_caps_steps():
    torch.manual_seed(0)
    model = tiny_model()
    data = loader(n=96)
    start = evaluate(model, data, torch.device("cpu")).loss
    result = finetune(model, data, data, FinetuneConfig(epochs=4, lr=0.1, max_steps_per_epoch=3), torch.device("cpu"))
    assert len(result.epochs) == 4 and all(math.isfinite(e.train_loss) for e in result.epochs)
    assert evaluate(model, data, torch.device("cpu")).loss < start


def test_evaluate_counts_top1():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    model[1].weight.data = torch.eye(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]).view(4, 2, 1, 1)
    y = torch.tensor([0, 1, 1, 1])
    result = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=3), torch.device("cpu"))
    assert result.accuracy == 75.0 and result.images == 4


def test_batchnorm_recalibration_equals_data_statistics():
    bn = nn.BatchNorm2d(3)
    model = nn.Sequential(bn).eval()
    x = torch.randn(64, 3, 4, 4) * 2 + 5
    seen = recalibrate_batchnorm(model, DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=16),
                                 torch.device("cpu"))
    assert seen == 64 and not model.training and bn.momentum == 0.1
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-5)
    batch_vars = torch.stack([x[i:i + 16].var((0, 2, 3), unbiased=True) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(bn.running_var, batch_vars, atol=1e-4)
