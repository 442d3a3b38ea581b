"""The output layers a pruning keeps whole: found on the autograd graph, through parameter-free ops; overridable."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.errors import SurgeryError
from compressor.surgery.graph import example_input
from compressor.surgery.heads import find_heads, heads_for


class Detector(nn.Module):
    """A backbone, a neck that adds an upsampled deep map to a lateral one, and two heads whose outputs are
    reshaped, permuted, squashed and concatenated before they leave forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.lateral, self.top = nn.Conv2d(8, 8, 1), nn.Conv2d(16, 8, 1)
        self.cls, self.box = nn.Conv2d(8, 3, 1), nn.Conv2d(8, 4, 1)
        self.aux = nn.Linear(16, 2)

    def forward(self, x):
        c1 = F.relu(self.stem(x))
        c2 = F.relu(self.down(c1))
        p = self.lateral(c1) + F.interpolate(self.top(c2), scale_factor=2.0)
        scores = torch.sigmoid(self.cls(p)).flatten(2).permute(0, 2, 1)
        boxes = torch.cat([self.box(p)[:, :2].exp(), self.box(p)[:, 2:]], 1).flatten(2)
        return {"scores": scores, "boxes": boxes, "aux": (self.aux(c2.mean((2, 3))),)}


class Fused(nn.Module):
    """An output that is the sum of two convs: both produce it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.tanh(self.a(x) + self.b(x))


def test_heads_are_found_through_reshapes_activations_and_concats():
    assert find_heads(Detector().eval(), example_input((3, 8, 8))) == ["aux", "box", "cls"]


def test_every_layer_feeding_an_output_directly_is_a_head():
    assert find_heads(Fused(), example_input((3, 8, 8))) == ["a", "b"]


def test_a_classifier_head_is_its_linear():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    assert find_heads(net, example_input((3, 8, 8))) == ["4"]


def test_the_search_leaves_the_training_mode_and_gradients_alone():
    net = Detector().train()
    with torch.no_grad():
        find_heads(net, example_input((3, 8, 8)))
    assert net.training and all(p.grad is None for p in net.parameters())


def test_pruning_heads_replaces_the_rule_and_each_selector_must_match():
    net = Detector()
    assert heads_for(net, example_input((3, 8, 8)), ["cls", "re:bo.*"]) == ["box", "cls"]
    assert heads_for(net, example_input((3, 8, 8)), None) == ["aux", "box", "cls"]
    with pytest.raises(SurgeryError, match="pruning.heads"):
        heads_for(net, example_input((3, 8, 8)), ["nothing"])
