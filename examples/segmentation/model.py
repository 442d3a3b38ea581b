"""TinyUNet: a small encoder-decoder segmentation network with concatenated skips and an auxiliary head.

Layout for width ``w`` and a 64x64 input (channels @ resolution):

    enc1   double conv 3->w->w                @64
    enc2   stride-2 conv w->2w, conv 2w->2w   @32
    enc3   stride-2 conv 2w->4w, conv 4w->4w  @16
    bottleneck  stride-2 conv 4w->4w, conv 4w->4w  @8
    dec3   up x2, cat(bottleneck, enc3) 8w -> conv -> 2w  @16   -> aux (1x1 conv, num_classes)  @16
    dec2   up x2, cat(dec3, enc2)       4w -> conv -> w   @32
    dec1   up x2, cat(dec2, enc1)       2w -> conv -> w   @64   -> classifier (1x1 conv, num_classes) @64

Every conv is conv-BN-ReLU (3x3, no bias) except the two heads. ``forward`` returns the tuple
``(logits, aux_logits)``: (N, C, H, W) and (N, C, H/4, W/4), deep supervision on the lowest decoder level.
Upsampling is nearest ``F.interpolate(scale_factor=2)`` and skips are ``torch.cat`` along channels, so the
net has no hard-coded shapes (any H, W divisible by 8), traces with torch-pruning's DependencyGraph and
exports with ``torch.onnx.export(..., dynamo=True)``. At w=16, 64x64: 83.3 M MACs, 197,304 parameters
(``torch_pruning.utils.count_ops_and_params``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def double_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Two conv-BN-ReLU; the first one strides (downsampling) when ``stride`` is 2."""
    return nn.Sequential(conv_bn_relu(cin, cout, stride), conv_bn_relu(cout, cout))


class TinyUNet(nn.Module):
    """Three encoder levels, a bottleneck, three decoder levels with concatenated skips; two heads."""

    def __init__(self, num_classes: int = 4, width: int = 16):
        super().__init__()
        w = width
        self.enc1 = double_conv(3, w)
        self.enc2 = double_conv(w, 2 * w, stride=2)
        self.enc3 = double_conv(2 * w, 4 * w, stride=2)
        self.bottleneck = double_conv(4 * w, 4 * w, stride=2)
        self.dec3 = conv_bn_relu(8 * w, 2 * w)
        self.dec2 = conv_bn_relu(4 * w, w)
        self.dec1 = conv_bn_relu(2 * w, w)
        self.classifier = nn.Conv2d(w, num_classes, 1)
        self.aux = nn.Conv2d(2 * w, num_classes, 1)

    @staticmethod
    def _up_cat(low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.interpolate(low, scale_factor=2.0, mode="nearest"), skip], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        b = self.bottleneck(e3)
        d3 = self.dec3(self._up_cat(b, e3))
        d2 = self.dec2(self._up_cat(d3, e2))
        d1 = self.dec1(self._up_cat(d2, e1))
        return self.classifier(d1), self.aux(d3)


def build(num_classes: int = 4, width: int = 16) -> TinyUNet:
    """A freshly initialised TinyUNet (the pipeline's model factory)."""
    return TinyUNet(num_classes=num_classes, width=width)
