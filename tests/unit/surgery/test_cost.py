"""The cost model predicts exactly what counting the actually pruned model gives."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from compressor.config import PruningConfig
from compressor.models.cifar_resnet import quicknet, resnet20
from compressor.models.mobilenet import mobilenet_v2
from compressor.models.vgg import vgg16_bn
from compressor.profiling.macs import count_torch
from compressor.surgery.plan import selection
from compressor.surgery.prune import analyse, apply_selection

from .test_prune import Grouped

CASES = [
    (lambda: resnet20(shortcut="A"), "coupled", (3, 32, 32)),
    (lambda: resnet20(shortcut="B"), "internal", (3, 32, 32)),
    (lambda: quicknet(), "coupled", (3, 32, 32)),
    (lambda: vgg16_bn(), "internal", (3, 32, 32)),
    (lambda: mobilenet_v2(num_classes=10, width_mult=0.35, stem_stride=1), "coupled", (3, 32, 32)),
    (lambda: Grouped(), "internal", (3, 16, 16)),
]


@pytest.mark.parametrize("build,residual,shape", CASES)
def test_predicted_macs_and_params_equal_the_pruned_model(build, residual, shape):
    model = build().eval()
    example = torch.randn(1, *shape)
    layout = analyse(copy.deepcopy(model), example, PruningConfig(ratio=0.5, residual=residual))
    assert layout.cost.base_macs == count_torch(model, shape).macs
    rng = random.Random(0)
    for _ in range(3):
        kept = {}
        for plan in layout.plans:
            step = plan.info.slices
            kept[plan.info.key] = step * rng.randint(1, plan.info.channels // step)
        pruned = copy.deepcopy(model)
        scores = {p.info.key: torch.rand(p.info.channels) for p in layout.plans}
        apply_selection(pruned, example, selection(layout.plans, scores, kept))
        assert layout.cost.macs(kept) == count_torch(pruned, shape).macs
        weights = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in pruned.modules()
                      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        assert layout.cost.params(kept) == weights
