"""MobileNetV2 (Sandler et al. 2018) with torchvision's module names, structure and initialisation.

Checkpoints saved from ``torchvision.models.mobilenet_v2`` load as they are: ``features.0`` is a
conv-BN-ReLU6 ``Sequential`` (keys ``features.0.0.weight``, ``features.0.1.*``), blocks 1..17 are
:class:`InvertedResidual` with torchvision's ``.conv`` layout, ``features.18`` is the 1x1 conv to
``last_channel`` and ``classifier`` is ``Sequential(Dropout(0.2), Linear)``. ReLU6 are modules and not
in-place, so autograd-based tracing (torch-pruning) is safe. ``stem_stride=1`` suits 32x32 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# expansion t, output channels c, repeats n, first stride s (torchvision's inverted_residual_setting)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor`` without losing more than 10 %."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d + ReLU6, as torchvision's Conv2dNormActivation."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(),
        )
        self.out_channels = out_planes


class InvertedResidual(nn.Module):
    """Optional 1x1 expansion, 3x3 depthwise, 1x1 linear projection; residual when stride 1 and in == out."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (``features``, global average pool, ``classifier``)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, stem_stride: int = 2,
                 dropout: float = 0.2, round_nearest: int = 8):
        super().__init__()
        if num_classes < 1 or width_mult <= 0 or stem_stride not in (1, 2):
            raise ValueError(f"MobileNetV2 needs num_classes >= 1, width_mult > 0 and stem_stride 1 or 2, "
                             f"got {num_classes}, {width_mult}, {stem_stride}")
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU6(3, input_channel, stride=stem_stride)]
        for t, c, n, s in SETTINGS:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, stem_stride: int = 2) -> MobileNetV2:
    """MobileNetV2 (3.5 M parameters at 1000 classes, width 1.0); ``stem_stride=1`` for 32x32 inputs."""
    return MobileNetV2(num_classes, width_mult, stem_stride)
