"""The segmentation example (examples/segmentation): generated data, TinyUNet, and the task's loss and metric.

Fast (tiny counts and widths); the checkpoint-quality numbers are measured by ``examples.segmentation.train``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from examples.segmentation import data, task
from examples.segmentation.model import TinyUNet, build


def test_scenes_are_determined_by_seed_and_index():
    a, b = data.Scenes(6, seed=3), data.Scenes(6, seed=3)
    image, mask = a[4]
    again_image, again_mask = b[4]  # a fresh dataset, and after other items were drawn
    _ = b[0], b[5]
    assert torch.equal(image, again_image) and torch.equal(mask, again_mask)
    assert torch.equal(b[4][0], image)
    assert not torch.equal(a[3][0], image)  # another index
    assert not torch.equal(data.Scenes(6, seed=4)[4][0], image)  # another seed


def test_scene_shapes_dtypes_and_normalisation():
    image, mask = data.Scenes(1, seed=0)[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and mask.dtype == torch.long
    raw = torch.stack([data.Scenes(40, seed=1)[i][0] for i in range(40)])
    assert abs(float(raw.mean())) < 0.25 and 0.6 < float(raw.std()) < 1.5  # roughly standardised
    with pytest.raises(IndexError):
        data.Scenes(2, seed=0)[2]


def test_masks_hold_every_class_and_only_known_labels():
    masks = torch.stack([data.Scenes(12, seed=7)[i][1] for i in range(12)])
    assert int(masks.min()) == 0 and int(masks.max()) <= 3
    assert set(masks.unique().tolist()) == {0, 1, 2, 3}
    assert all(int((m > 0).sum()) > 0 for m in masks)  # every scene has at least one visible object


def test_objects_differ_from_background_in_the_image():
    image, mask = data.Scenes(1, seed=11)[0]
    inside, outside = image[:, mask > 0].mean(1), image[:, mask == 0].mean(1)
    assert float((inside - outside).abs().sum()) > 0.3


def test_loaders_splits_sizes_and_batches():
    out = task.loaders(seed=0, batch_size=16)
    assert set(out) == {"train", "val", "test", "calibration"}
    assert {k: len(v.dataset) for k, v in out.items()} == task.SIZES
    images, masks = next(iter(out["val"]))
    assert images.shape == (16, 3, 64, 64) and masks.shape == (16, 64, 64) and masks.dtype == torch.long
    seeds = task.split_seeds(0)
    assert len(set(seeds.values())) == 4
    assert task.split_seeds(5)["test"] == seeds["test"]  # the test set does not move with the recipe seed
    assert torch.equal(next(iter(task.loaders(1, 4)["test"]))[0], next(iter(task.loaders(0, 4)["test"]))[0])


def test_train_loader_shuffle_follows_the_seed():
    def first_order(seed: int) -> list[int]:
        sampler = task.loaders(seed, batch_size=8)["train"].sampler
        return list(iter(sampler))[:20]

    assert first_order(0) == first_order(0)
    assert first_order(0) != first_order(1)
    assert first_order(0) != list(range(20))


def test_model_returns_logits_and_aux_logits():
    model = TinyUNet(num_classes=4, width=4).eval()
    logits, aux = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 4, 64, 64) and aux.shape == (2, 4, 16, 16)
    logits, aux = build(num_classes=5, width=4).eval()(torch.randn(1, 3, 32, 48))  # no hard-coded shapes
    assert logits.shape == (1, 5, 32, 48) and aux.shape == (1, 5, 8, 12)


def test_default_model_size():
    model = build()
    params = sum(p.numel() for p in model.parameters())
    assert 100_000 <= params <= 500_000
    assert isinstance(model.classifier, nn.Conv2d) and isinstance(model.aux, nn.Conv2d)


def _one_hot_logits(mask: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    return scale * F.one_hot(mask, data.NUM_CLASSES).permute(0, 3, 1, 2).float()


def test_loss_is_lower_for_matching_logits():
    masks = torch.stack([data.Scenes(2, seed=2)[i][1] for i in range(2)])
    good = (_one_hot_logits(masks), _one_hot_logits(masks[:, ::4, ::4]))
    noise = (torch.randn(2, 4, 64, 64), torch.randn(2, 4, 16, 16))
    good_loss, noise_loss = task.loss(good, masks), task.loss(noise, masks)
    assert good_loss.dim() == 0 and math.isfinite(float(good_loss)) and math.isfinite(float(noise_loss))
    assert float(good_loss) < 1e-3 < float(noise_loss)
    wrong_aux = (good[0], _one_hot_logits((masks[:, ::4, ::4] + 1) % 4))
    assert float(task.loss(wrong_aux, masks)) > 0.4 * 10  # the aux term counts, with weight 0.4
    bf16 = tuple(t.bfloat16() for t in noise)
    assert task.loss(bf16, masks).dtype == torch.float32


def test_confusion_matrix_counts():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    target = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = task.confusion(pred, target, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]  # rows: true class, columns: predicted


def test_miou_perfect_half_overlap_and_absent_classes():
    target = torch.zeros(4, 4, dtype=torch.long)
    target[:, 2:] = 1
    assert task.miou_from_confusion(task.confusion(target, target, 4)) == pytest.approx(100.0)
    pred = target.clone()
    pred[:2, 2:] = 0  # half of class 1 predicted as background
    # class 0: TP 8, union 8 + 4 = 12 -> 66.67; class 1: TP 4, union 8 -> 50; classes 2 and 3 absent: skipped
    cm = task.confusion(pred, target, 4)
    assert task.miou_from_confusion(cm) == pytest.approx((800 / 12 + 50) / 2)
    assert task.pixel_accuracy(cm) == pytest.approx(75.0)
    pred[0, 0] = 3  # a false positive of an absent class counts: IoU 0 for class 3
    cm = task.confusion(pred, target, 4)
    assert task.miou_from_confusion(cm) == pytest.approx((700 / 12 + 50 + 0) / 3)


class _Oracle(nn.Module):
    """Returns one-hot logits of the true masks of the scenes it is fed (looked up by image)."""

    def __init__(self, dataset: data.Scenes):
        super().__init__()
        self.table = [(dataset[i][0], dataset[i][1]) for i in range(len(dataset))]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masks = torch.stack([next(m for x, m in self.table if torch.equal(x, image)) for image in images])
        return _one_hot_logits(masks), _one_hot_logits(masks[:, ::4, ::4])


def test_metric_of_a_perfect_model_is_100():
    dataset = data.Scenes(6, seed=9)
    result = task.metric(_Oracle(dataset), DataLoader(dataset, batch_size=4), "cpu")
    assert result == {"miou": pytest.approx(100.0), "pixel_acc": pytest.approx(100.0), "images": 6}


def test_metric_end_to_end_with_a_tiny_model_restores_mode():
    dataset = data.Scenes(5, seed=10)
    model = TinyUNet(width=4).train()
    result = task.metric(model, DataLoader(dataset, batch_size=2), torch.device("cpu"))
    assert model.training
    assert result["images"] == 5 and 0.0 <= result["miou"] < 100.0 and 0.0 <= result["pixel_acc"] <= 100.0
    model.eval()
    with torch.no_grad():
        batches = [(model(x)[0].argmax(1), m) for x, m in DataLoader(dataset, batch_size=2)]
    cm = sum(task.confusion(p, m, 4) for p, m in batches)
    assert result["miou"] == pytest.approx(task.miou_from_confusion(cm))
    assert result["pixel_acc"] == pytest.approx(task.pixel_accuracy(cm))
    task.metric(model, DataLoader(dataset, batch_size=5), "cpu")
    assert not model.training


def test_torch_pruning_traces_and_prunes_the_model():
    tp = pytest.importorskip("torch_pruning")
    model = TinyUNet(width=8).eval()
    example = torch.randn(1, 3, 64, 64)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MagnitudePruner(model, (example,), importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, ignored_layers=[model.classifier, model.aux])
    pruner.step()
    logits, aux = model(example)
    assert logits.shape == (1, 4, 64, 64) and aux.shape == (1, 4, 16, 16)
    assert model.classifier.out_channels == 4 and model.aux.out_channels == 4
    assert model.enc1[0][0].out_channels == 4 and sum(p.numel() for p in model.parameters()) < before / 2


@pytest.mark.slow  # about 7 s: the dynamo exporter
def test_onnx_dynamo_export_keeps_both_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = TinyUNet(width=4).eval()
    path = tmp_path / "unet.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 64, 64),), str(path), dynamo=True, input_names=["input"],
                      output_names=["logits", "aux_logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                      verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "aux_logits"]
    images = torch.randn(3, 3, 64, 64)
    got = session.run(None, {"input": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    for onnx_out, torch_out in zip(got, expected):
        assert onnx_out.shape == tuple(torch_out.shape)
        assert float(abs(torch.from_numpy(onnx_out) - torch_out).max()) < 1e-4
