"""CIFAR VGG-16-BN and VGG-19-BN in the layout of kuangliu/pytorch-cifar.

``features`` is one ``nn.Sequential`` of [Conv2d 3x3 (pad 1, with bias), BatchNorm2d, ReLU] triples with
``MaxPool2d(2, 2)`` at the 'M' positions of the standard configuration, so checkpoint keys are
``features.0.weight``, ``features.0.bias``, ``features.1.running_mean``, ..., then global average pooling
(kuangliu's 1x1 average pool is a no-op at 32x32 and has no parameters) and ``classifier = Linear(512, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


def make_features(cfg: Sequence[int | str], in_channels: int = 3) -> nn.Sequential:
    """Conv-BN-ReLU triples with a 2x2 max-pool at every 'M'."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
            in_channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG with BatchNorm for 32x32 inputs: ``features``, global average pool, ``classifier``."""

    def __init__(self, cfg: Sequence[int | str], num_classes: int = 10):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.features = make_features(cfg)
        last = [v for v in cfg if v != "M"][-1]
        self.classifier = nn.Linear(int(last), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def vgg16_bn(num_classes: int = 10) -> VGG:
    """CIFAR VGG-16 with BatchNorm (14.7 M parameters)."""
    return VGG(CFGS["vgg16"], num_classes)


def vgg19_bn(num_classes: int = 10) -> VGG:
    """CIFAR VGG-19 with BatchNorm (20.0 M parameters)."""
    return VGG(CFGS["vgg19"], num_classes)
