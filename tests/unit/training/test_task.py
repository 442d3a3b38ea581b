"""The run-time task: a custom loss and metric in the fine-tuning loop, which way is better, bad metric results."""

from __future__ import annotations

import copy
from types import SimpleNamespace as NS

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from compressor.config import ExportConfig, FinetuneConfig, GatesConfig
from compressor.errors import DataError
from compressor.report import evaluate_gates
from compressor.training import LoopOptions, finetune
from compressor.training.evaluate import EvalResult
from compressor.training.task import CustomTask, Task, to_device


class TwoHeads(nn.Module):
    """A dict of two outputs: a per-pixel map and a pooled vector."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.map, self.vector = nn.Conv2d(4, 1, 1), nn.Linear(4, 2)

    def forward(self, x):
        h = self.body(x)
        return {"map": self.map(h), "vector": self.vector(h.mean((2, 3)))}


def regression_data(n: int = 32, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=gen)
    targets = {"map": x.mean(1, keepdim=True), "vector": x.mean((2, 3))[:, :2]}
    return DataLoader(TensorDataset(x, targets["map"], targets["vector"]), batch_size=8,
                      collate_fn=lambda rows: (torch.stack([r[0] for r in rows]),
                                               {"map": torch.stack([r[1] for r in rows]),
                                                "vector": torch.stack([r[2] for r in rows])}))


def loss(outputs, targets):
    return sum(nn.functional.mse_loss(outputs[k].float(), targets[k]) for k in ("map", "vector"))


def error_metric(model, loader, device):
    total, n = 0.0, 0
    for x, t in loader:
        total += float(loss(model(x.to(device)), to_device(t, device))) * len(x)
        n += len(x)
    return {"error": total / n, "images": n}


def test_lower_is_better_keeps_the_epoch_with_the_lowest_validation_value(monkeypatch):
    """Scripted validation errors 5, 2, 3: the model must end with epoch 2's weights (a higher-is-better task
    would keep epoch 1's)."""
    scripted, snapshots = iter([5.0, 2.0, 3.0]), []

    def metric(model, loader, device):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"error": next(scripted)}

    task = CustomTask(loss, metric, "error", "lower")
    model = TwoHeads()
    result = finetune(model, regression_data(), regression_data(seed=1), FinetuneConfig(epochs=3, lr=0.1),
                      torch.device("cpu"), options=LoopOptions(task=task))
    assert result.best_epoch == 2 and result.best_val_accuracy == 2.0
    assert all(torch.equal(snapshots[1][k], v) for k, v in model.state_dict().items())
    assert all(e.train_accuracy is None for e in result.epochs)  # no top-1 for a custom task


def test_a_custom_loss_trains_the_model():
    torch.manual_seed(0)
    task = CustomTask(loss, error_metric, "error", "lower")
    model, data = TwoHeads(), regression_data(n=64)
    before = task.evaluate(model, data, torch.device("cpu")).accuracy
    finetune(model, data, data, FinetuneConfig(epochs=4, lr=0.05), torch.device("cpu"), options=LoopOptions(task=task))
    after = task.evaluate(model, data, torch.device("cpu"))
    assert after.accuracy < 0.5 * before and after.metric == "error" and after.images == 64
    assert after.describe().startswith("error ")


def test_distillation_matches_every_output_of_the_teacher():
    task = CustomTask(loss, error_metric, "error", "lower")
    x = torch.randn(4, 3, 6, 6)
    student, teacher = TwoHeads(), TwoHeads()
    assert task.distillation(student(x), student(x), 4.0).item() == 0.0
    assert task.distillation(student(x), teacher(x), 4.0).item() > 0.0
    expected = (nn.functional.mse_loss(student(x)["map"], teacher(x)["map"])
                + nn.functional.mse_loss(student(x)["vector"], teacher(x)["vector"])) / 2
    assert task.distillation(student(x), teacher(x), 4.0).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("returned,field", [
    ([1.0], "task.metric returned a list"),
    ({"other": 1.0}, "task.primary: 'error' is not among the values task.metric returned (other)"),
    ({"error": "high"}, "not a number"),
])
def test_an_unusable_metric_result_is_one_line_naming_the_field(returned, field):
    task = CustomTask(loss, lambda model, loader, device: returned, "error", "lower")
    with pytest.raises(DataError) as info:
        task.evaluate(TwoHeads(), regression_data(), torch.device("cpu"))
    assert field in str(info.value) and "\n" not in str(info.value)


def test_a_loss_that_is_not_a_scalar_is_refused():
    task = CustomTask(lambda outputs, targets: outputs["map"], error_metric, "error", "lower")
    with pytest.raises(DataError, match="task.loss returned \\(2, 1, 6, 6\\); it must return a scalar tensor"):
        task.loss(TwoHeads()(torch.randn(2, 3, 6, 6)), None)


def test_the_model_mode_is_restored_after_the_metric():
    model = TwoHeads().train()
    CustomTask(loss, error_metric, "error", "lower").evaluate(model, regression_data(), torch.device("cpu"))
    assert model.training


def test_better_and_worse_follow_the_direction():
    higher, lower = Task(), CustomTask(loss, error_metric, "error", "lower")
    assert higher.better(2.0, 1.0) and not higher.better(1.0, 2.0) and higher.better(0.0, None)
    assert lower.better(1.0, 2.0) and not lower.better(2.0, 1.0) and lower.better(5.0, float("nan"))
    assert higher.worse_by(90.0, 88.0) == 2.0 and lower.worse_by(1.0, 1.5) == 0.5


@pytest.mark.parametrize("direction,pruned,passed", [("lower", 1.4, True), ("lower", 1.6, False),
                                                     ("higher", 0.4, False), ("higher", 1.4, True)])
def test_the_accuracy_gate_limits_how_much_worse_the_primary_got(direction, pruned, passed):
    onnx = NS(macs=10, max_abs_diff=0.0, reference_max_abs=1.0, exporter="dynamo", outputs=())
    results = NS(baseline=NS(test=EvalResult(1.0, float("nan"), 10, "error"), onnx=onnx, macs_torch=10),
                 tuned=NS(test=EvalResult(pruned, float("nan"), 10, "error"), macs_torch=5),
                 exported=NS(onnx=onnx, stripe=None, variants={}), profiled=None)
    gate = {g.name: g for g in evaluate_gates(GatesConfig(max_accuracy_drop=0.5), ExportConfig(), results,
                                              direction=direction)}["max_accuracy_drop"]
    assert gate.passed is passed
    assert ("lower is better" in gate.detail) is (direction == "lower")


def test_to_device_moves_nested_targets_and_keeps_the_rest():
    moved = to_device({"a": [torch.ones(1), (torch.zeros(2), "name")], "b": 3}, torch.device("cpu"))
    assert isinstance(moved["a"][1], tuple) and moved["a"][1][1] == "name" and moved["b"] == 3


def test_to_device_keeps_namedtuples():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    moved = to_device(Pair(torch.ones(1), 2), torch.device("cpu"))
    assert isinstance(moved, Pair) and moved.b == 2


def test_an_exception_in_the_users_metric_is_one_line_naming_the_field_and_the_place():
    def metric(model, loader, device):
        raise RuntimeError("boom\nsecond line")

    with pytest.raises(DataError) as info:
        CustomTask(loss, metric, "error", "lower").evaluate(TwoHeads(), regression_data(), torch.device("cpu"))
    message = str(info.value)
    assert message.startswith("task.metric raised RuntimeError: boom (") and "test_task.py:" in message
    assert "in metric)" in message and "\n" not in message
