"""The detection example (examples/detection): generated scenes, TinyDetector, loss, decode and the COCO metric.

Small counts and a width-4 model keep the file to a few seconds on one core.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from examples.detection import data, task
from examples.detection.model import build

SMALL = {"train": 16, "val": 12, "test": 12, "calibration": 8}
CHECKPOINT = Path(__file__).resolve().parents[2] / "examples" / "detection" / "detector.pt"


def perfect(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The outputs that encode ``targets`` exactly (heatmap probabilities turned into logits)."""
    return {"heatmap": torch.logit(targets["heatmap"].clamp(1e-4, 1 - 1e-4)), "box": targets["box"].clone()}


class Replay(nn.Module):
    """A fake model that answers each batch, in order, with outputs built from that batch's targets."""

    def __init__(self, loader, make=perfect) -> None:
        super().__init__()
        self.answers = iter([make(targets) for _, targets in loader])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return next(self.answers)


def silent(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"heatmap": torch.full_like(targets["heatmap"], -20.0), "box": torch.zeros_like(targets["box"])}


def wrong_class(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = perfect(targets)
    return {"heatmap": out["heatmap"].roll(1, dims=1), "box": out["box"]}


# ------------------------------------------------------------------------------------------------ data
def test_a_scene_is_determined_by_seed_and_index():
    image, target = data.Scenes(5, seed=7)[2]
    again, target_again = data.Scenes(5, seed=7)[2]
    assert torch.equal(image, again) and torch.equal(target["boxes"], target_again["boxes"])
    assert not torch.equal(image, data.Scenes(5, seed=7)[3][0])
    assert not torch.equal(image, data.Scenes(5, seed=8)[2][0])
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1.0 < image.mean().item() < 1.0 and 0.5 < image.std().item() < 1.5  # roughly normalised


def test_targets_are_dense_encodings_plus_padded_ground_truth():
    for index in range(20):
        _, target = data.Scenes(20, seed=3)[index]
        n = int((target["labels"] >= 0).sum())
        assert 1 <= n <= data.MAX_OBJECTS
        assert target["heatmap"].shape == (3, 16, 16) and target["box"].shape == (4, 16, 16)
        assert target["mask"].shape == (1, 16, 16) and int(target["mask"].sum()) == n
        assert target["boxes"].shape == (4, 4) and target["labels"].dtype == torch.int64
        assert torch.all(target["labels"][n:] == -1) and torch.all(target["boxes"][n:] == 0)
        boxes = target["boxes"][:n]
        assert torch.all(boxes[:, 2:] - boxes[:, :2] >= data.MIN_SIDE) and boxes.min() >= 0 and boxes.max() <= 64
        assert int((target["heatmap"] == 1).sum()) == n  # one peak per object, at its centre cell


def test_loaders_give_tensor_batches_and_a_fixed_test_set():
    first = task.loaders(0, 4, SMALL)
    assert set(first) == {"train", "val", "test", "calibration"}
    images, targets = next(iter(first["val"]))
    assert images.shape == (4, 3, 64, 64) and all(isinstance(v, torch.Tensor) for v in targets.values())
    assert targets["boxes"].shape == (4, 4, 4) and targets["labels"].shape == (4, 4)
    other = task.loaders(1, 4, SMALL)
    assert torch.equal(next(iter(first["test"]))[0], next(iter(other["test"]))[0])  # test ignores the seed
    assert not torch.equal(next(iter(first["val"]))[0], next(iter(other["val"]))[0])
    assert torch.equal(next(iter(first["train"]))[0], next(iter(task.loaders(0, 4, SMALL)["train"]))[0])
    assert not torch.equal(next(iter(first["train"]))[0], next(iter(first["val"]))[0])


# ----------------------------------------------------------------------------------------------- model
def test_model_returns_heatmap_and_box_at_stride_4():
    model = build(width=4).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == {"heatmap", "box"}
    assert out["heatmap"].shape == (2, 3, 16, 16) and out["box"].shape == (2, 4, 16, 16)
    assert model(torch.randn(1, 3, 32, 48))["heatmap"].shape == (1, 3, 8, 12)  # nothing hard-coded
    assert torch.allclose(model.head.heatmap.bias, torch.full((3,), -2.19))


def test_model_traces_with_torch_pruning():
    import torch_pruning as tp

    model = build(width=4).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 64, 64))
    groups = list(graph.get_all_groups(root_module_types=[nn.Conv2d]))
    assert len(groups) > 5


# ------------------------------------------------------------------------------------------------ loss
def test_loss_is_smaller_for_the_encoded_targets_than_for_random_outputs():
    _, targets = next(iter(task.loaders(0, 8, SMALL)["val"]))
    random = {"heatmap": torch.randn(8, 3, 16, 16), "box": torch.randn(8, 4, 16, 16)}
    bad, good = task.loss(random, targets), task.loss(perfect(targets), targets)
    assert torch.isfinite(bad) and bad.ndim == 0 and bad > 0 and good > 0
    assert good < 0.5 * bad
    half = task.loss({k: v.bfloat16() for k, v in random.items()}, targets)
    assert half.dtype == torch.float32 and torch.isclose(half, bad, rtol=0.05)


def test_loss_has_gradients_for_both_outputs():
    _, targets = next(iter(task.loaders(0, 4, SMALL)["val"]))
    leaves = {k: v.requires_grad_() for k, v in perfect(targets).items()}
    task.loss({"heatmap": leaves["heatmap"], "box": leaves["box"] + 0.5}, targets).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in leaves.values())


# ---------------------------------------------------------------------------------------------- decode
def test_decode_of_perfect_outputs_recovers_the_ground_truth():
    _, targets = next(iter(task.loaders(0, 6, SMALL)["val"]))
    found = task.decode(perfect(targets))
    assert len(found) == 6
    for (boxes, scores, labels), truth, truth_labels in zip(found, targets["boxes"], targets["labels"]):
        n = int((truth_labels >= 0).sum())
        assert len(boxes) == n and torch.all(scores > 0.99)
        order, truth_order = boxes[:, 0].argsort(), truth[:n, 0].argsort()
        assert torch.allclose(boxes[order], truth[:n][truth_order], atol=1e-3)
        assert torch.equal(labels[order], truth_labels[:n][truth_order])


def test_decode_keeps_at_most_k_and_applies_the_threshold():
    outputs = {"heatmap": torch.randn(2, 3, 16, 16), "box": torch.zeros(2, 4, 16, 16)}
    assert all(len(b) <= 5 for b, _, _ in task.decode(outputs, k=5))
    assert all(len(b) == 0 for b, _, _ in task.decode({**outputs, "heatmap": outputs["heatmap"] - 30}))


# ---------------------------------------------------------------------------------------------- metric
@pytest.mark.parametrize(("make", "expected"), [(perfect, 100.0), (silent, 0.0), (wrong_class, 0.0)])
def test_metric_scores_a_perfect_model_100_and_a_wrong_or_silent_one_0(make, expected):
    loader = task.loaders(0, 4, SMALL)["val"]
    result = task.metric(Replay(loader, make), loader, "cpu")
    assert result["map50"] == pytest.approx(expected) and result["images"] == SMALL["val"]
    assert result["map"] <= result["map50"] + 1e-9


def test_metric_runs_a_real_model_and_restores_its_mode():
    loader = task.loaders(0, 4, SMALL)["test"]
    model = build(width=4).train()
    result = task.metric(model, loader, torch.device("cpu"))
    assert set(result) == {"map50", "map", "images"} and 0.0 <= result["map50"] <= 100.0
    assert model.training
    task.metric(model.eval(), loader, "cpu")
    assert not model.training


def test_the_shipped_checkpoint_loads_and_detects():
    if not CHECKPOINT.exists():
        pytest.skip(f"{CHECKPOINT} not trained (python -m examples.detection.train)")
    model = build()
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    loader = task.loaders(0, 50, {"test": 100, "train": 1, "val": 1, "calibration": 1})["test"]
    assert task.metric(model, loader, "cpu")["map50"] > 50.0
