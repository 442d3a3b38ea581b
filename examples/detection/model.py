"""TinyDetector: a small anchor-free, single-stage (CenterNet-style) detector for 64x64 images.

Backbone: a conv-BN-ReLU stem (stride 2) and three stages of BasicBlock residual blocks (strides 4, 8, 16;
each stage opens with a stride-2 block whose shortcut is a 1x1 conv + BN projection). Neck: FPN-style 1x1
lateral convs, top-down nearest upsampling (``scale_factor=2``) + add, and a 3x3 smoothing conv, giving one
stride-4 map (16x16 for a 64x64 input). Head: two towers (3x3 conv-ReLU, then a 1x1 conv):
``head.heatmap`` gives per-class centre logits (N, K, 16, 16), ``head.box`` the box regression (N, 4, 16, 16)
as (x offset, y offset, log width, log height) in grid cells (see ``data.encode``).

``forward`` returns ``{"heatmap": ..., "box": ...}``: the two 1x1 convs' raw outputs, nothing computed after
them, so that the pipeline recognises both as the head. No shape is hard-coded: any batch, any input size
divisible by 16. At width 16 and 64x64: 29.8 M MACs, 347 k parameters (torch_pruning.utils.count_ops_and_params).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

HEATMAP_PRIOR_BIAS = -2.19  # log(0.1 / 0.9): CenterNet's initial foreground probability of 0.1


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet's BasicBlock: two 3x3 conv-BN, ReLU between; a 1x1 conv-BN projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout)
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


def stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, 2), *(BasicBlock(cout, cout) for _ in range(blocks - 1)))


class Neck(nn.Module):
    """FPN top-down path over strides 4/8/16, kept at stride 4 only."""

    def __init__(self, widths: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.smooth = nn.Sequential(conv_bn(channels, channels), nn.ReLU(inplace=True))

    def forward(self, c4: torch.Tensor, c8: torch.Tensor, c16: torch.Tensor) -> torch.Tensor:
        p16 = self.lateral[2](c16)
        p8 = self.lateral[1](c8) + F.interpolate(p16, scale_factor=2, mode="nearest")
        p4 = self.lateral[0](c4) + F.interpolate(p8, scale_factor=2, mode="nearest")
        return self.smooth(p4)


class Head(nn.Module):
    """Two towers: ``heatmap_tower`` -> ``heatmap`` (class logits), ``box_tower`` -> ``box`` (regression)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.heatmap_tower = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.heatmap = nn.Conv2d(channels, num_classes, 1)
        self.box_tower = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.box = nn.Conv2d(channels, 4, 1)
        nn.init.constant_(self.heatmap.bias, HEATMAP_PRIOR_BIAS)
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.zeros_(self.box.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap(self.heatmap_tower(x)), "box": self.box(self.box_tower(x))}


class TinyDetector(nn.Module):
    """Residual backbone + FPN neck + CenterNet head; ``forward(x)`` -> ``{"heatmap", "box"}`` at stride 4."""

    def __init__(self, num_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        widths = (2 * width, 4 * width, 6 * width)
        self.stem = nn.Sequential(conv_bn(3, width, 3, 2), nn.ReLU(inplace=True), conv_bn(width, width), nn.ReLU(inplace=True))
        self.layer1 = stage(width, widths[0], 2)
        self.layer2 = stage(widths[0], widths[1], 2)
        self.layer3 = stage(widths[1], widths[2], 1)
        self.neck = Neck(widths, 2 * width)
        self.head = Head(2 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in (self.head.heatmap, self.head.box):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c4 = self.layer1(self.stem(x))
        c8 = self.layer2(c4)
        c16 = self.layer3(c8)
        return self.head(self.neck(c4, c8, c16))


def build(num_classes: int = 3, width: int = 16) -> TinyDetector:
    """The factory the pipeline calls to rebuild the architecture before loading ``detector.pt``."""
    return TinyDetector(num_classes=num_classes, width=width)
