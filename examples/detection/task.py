"""The detection task as the pipeline sees it: ``loaders``, ``loss``, ``metric`` (and ``decode``, public for tests).

Batches are ``(images, targets)``: images float (B, 3, 64, 64); targets a dict of tensors only
(``data.encode``, stacked): ``heatmap`` (B, 3, 16, 16), ``box`` (B, 4, 16, 16), ``mask`` (B, 1, 16, 16) for
training, and ``boxes`` (B, 4, 4) pixels x1,y1,x2,y2 / ``labels`` (B, 4) with -1 for padding for evaluation.
Model outputs are ``{"heatmap": logits (B, K, 16, 16), "box": (B, 4, 16, 16)}`` (``model.TinyDetector``).

The metric is COCO's box mAP computed by pycocotools on in-memory ground truth and detections:
``map50`` (AP at IoU 0.5, 101-point interpolated, averaged over classes) and ``map`` (AP@[.5:.95]), 0-100.
"""

from __future__ import annotations

import contextlib
import io

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import STRIDE, Scenes

SIZES = {"train": 2000, "val": 200, "test": 300, "calibration": 128}
TEST_SEED = 1_000_000_007  # the test set never depends on the recipe's seed; it is 3 mod 4, so no split
SEED_OFFSETS = {"train": 0, "val": 1, "calibration": 2}  # of any recipe seed (seed * 4 + offset) ever equals it
TOP_K, SCORE_THRESHOLD = 20, 0.01


def loaders(seed: int, batch_size: int, sizes: dict[str, int] | None = None) -> dict[str, DataLoader]:
    """Train (shuffled by ``torch.Generator().manual_seed(seed)``), val, test and calibration loaders over
    distinct generated scene sets; ``sizes`` overrides the counts in ``SIZES`` (tests use small ones)."""
    counts = {**SIZES, **(sizes or {})}
    result = {}
    for split, count in counts.items():
        split_seed = TEST_SEED if split == "test" else seed * 4 + SEED_OFFSETS[split]
        shuffle = split == "train"
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        result[split] = DataLoader(Scenes(count, split_seed), batch_size=batch_size, shuffle=shuffle,
                                   generator=generator, num_workers=0)
    return result


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, summed (not yet normalised)."""
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    positive = target.eq(1).float()
    pos = -((1 - p) ** alpha) * log_p * positive
    neg = -((1 - target) ** beta) * (p ** alpha) * log_not_p * (1 - positive)
    return pos.sum() + neg.sum()


def loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Focal loss on the heatmap + L1 on the box regression at object centres, both divided by the number
    of objects in the batch. Computed in float32 whatever the outputs' dtype."""
    heatmap, box = outputs["heatmap"].float(), outputs["box"].float()
    mask = targets["mask"].float()
    objects = mask.sum().clamp(min=1.0)
    heat = focal_loss(heatmap, targets["heatmap"].float())
    regression = (F.l1_loss(box, targets["box"].float(), reduction="none") * mask).sum()
    return (heat + regression) / objects


def decode(outputs: dict[str, torch.Tensor], k: int = TOP_K,
           threshold: float = SCORE_THRESHOLD) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections per image: ``(boxes (n, 4) pixels x1,y1,x2,y2, scores (n,), labels (n,))``, the top ``k``
    3x3-local maxima of the sigmoid heatmap with score >= ``threshold``, best first."""
    heat = outputs["heatmap"].detach().float().sigmoid()
    box = outputs["box"].detach().float()
    n, classes, height, width = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, index = peaks.flatten(1).topk(min(k, classes * height * width), dim=1)
    labels, cell = index // (height * width), index % (height * width)
    rows, cols = (cell // width).float(), (cell % width).float()
    regression = box.flatten(2).gather(2, cell.unsqueeze(1).expand(n, 4, -1))  # (n, 4, k)
    cx, cy = (cols + regression[:, 0]) * STRIDE, (rows + regression[:, 1]) * STRIDE
    half_w, half_h = regression[:, 2].clamp(max=8).exp() * STRIDE / 2, regression[:, 3].clamp(max=8).exp() * STRIDE / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)  # (n, k, 4)
    keep = scores >= threshold
    return [(boxes[i][keep[i]], scores[i][keep[i]], labels[i][keep[i]]) for i in range(n)]


def metric(model: nn.Module, loader: DataLoader, device: torch.device | str) -> dict[str, float]:
    """COCO mAP of ``model`` over ``loader``: ``{"map50", "map", "images"}`` (APs in percent)."""
    was_training = model.training
    model.eval()
    images, annotations, detections, classes = [], [], [], 0
    try:
        with torch.no_grad():
            for batch, targets in loader:
                outputs = model(batch.to(device))
                classes, found = outputs["heatmap"].shape[1], decode(outputs)
                for boxes, labels, (d_boxes, d_scores, d_labels) in zip(targets["boxes"], targets["labels"], found):
                    image_id = len(images) + 1
                    images.append({"id": image_id, "width": batch.shape[-1], "height": batch.shape[-2]})
                    annotations += _ground_truth(image_id, boxes, labels, len(annotations))
                    detections += _detections(image_id, d_boxes.cpu(), d_scores.cpu(), d_labels.cpu())
    finally:
        model.train(was_training)
    ap50, ap = coco_ap(images, annotations, detections, classes)
    return {"map50": 100.0 * ap50, "map": 100.0 * ap, "images": float(len(images))}


def _ground_truth(image_id: int, boxes: torch.Tensor, labels: torch.Tensor, start: int) -> list[dict]:
    found = []
    for box, label in zip(boxes.tolist(), labels.tolist()):
        if label < 0:
            continue
        x1, y1, x2, y2 = box
        found.append({"id": start + len(found) + 1, "image_id": image_id, "category_id": int(label) + 1,
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return found


def _detections(image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    return [{"image_id": image_id, "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist())]


def coco_ap(images: list[dict], annotations: list[dict], detections: list[dict], classes: int) -> tuple[float, float]:
    """(AP@0.5, AP@[.5:.95]) from pycocotools, as fractions; 0 when there are no detections."""
    if not detections or not annotations:
        return 0.0, 0.0
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return max(float(evaluation.stats[1]), 0.0), max(float(evaluation.stats[0]), 0.0)
