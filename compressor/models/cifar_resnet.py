"""CIFAR ResNets (He et al. 2016, section 4.2) in the layout of akamaster/pytorch_resnet_cifar10, and quicknet.

Parameter names equal the public akamaster checkpoints (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv1|bn1|
conv2|bn2``, ``linear``) once their DataParallel ``module.`` prefix is stripped. Shortcuts between
stages are option A (:class:`ZeroPadShortcut`, parameter-free, the default and what the checkpoints use)
or option B (1x1 conv + BN as ``shortcut.0`` / ``shortcut.1``). Forwards have no hard-coded shapes, so
torch-pruning can trace and shrink them.

``quicknet`` is the tiny network of the quickstart: the same blocks behind a conv + max-pool stem.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ZeroPadShortcut

SHORTCUTS = ("A", "B")


def _conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _make_shortcut(in_planes: int, planes: int, stride: int, shortcut: str) -> nn.Module:
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    if shortcut == "A":
        return ZeroPadShortcut(in_planes, planes, stride)
    return nn.Sequential(
        nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN with a shortcut: identity, option A (zero pad) or option B (1x1 conv + BN)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _make_shortcut(in_planes, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3 + BN + ReLU (optionally max-pool), stages of BasicBlocks, global average pool, ``linear``.

    Stage ``k`` (named ``layer{k+1}``) has ``blocks[k]`` blocks of ``widths[k]`` channels; the first stage
    keeps the resolution, every later one halves it.
    """

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 shortcut: str = "A", stem_pool: bool = False):
        super().__init__()
        _check_args(blocks, widths, num_classes, shortcut)
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.pool = nn.MaxPool2d(2) if stem_pool else nn.Identity()
        in_planes = widths[0]
        for k, (n, width) in enumerate(zip(blocks, widths)):
            stride = 1 if k == 0 else 2
            layers = []
            for i in range(n):
                layers.append(BasicBlock(in_planes, width, stride if i == 0 else 1, shortcut))
                in_planes = width
            self.add_module(f"layer{k + 1}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.linear = nn.Linear(in_planes, num_classes)
        self.apply(_kaiming_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        for k in range(self.num_stages):
            x = getattr(self, f"layer{k + 1}")(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def _check_args(blocks: Sequence[int], widths: Sequence[int], num_classes: int, shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv + BN), got {shortcut!r}")
    if len(blocks) != len(widths) or not blocks:
        raise ValueError(f"blocks and widths need the same (non-zero) length, got {list(blocks)} and {list(widths)}")
    if min(blocks) < 1 or min(widths) < 1 or num_classes < 1:
        raise ValueError(f"blocks, widths and num_classes must be positive, got {list(blocks)}, {list(widths)}, "
                         f"{num_classes}")


def _kaiming_init(m: nn.Module) -> None:
    """akamaster's ``_weights_init``: Kaiming-normal (fan_in, ReLU gain) for conv and linear weights."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight)


def cifar_resnet(depth: int, num_classes: int = 10, shortcut: str = "A",
                 widths: Sequence[int] = (16, 32, 64)) -> CifarResNet:
    """CIFAR ResNet of ``depth`` = 6n + 2 layers: 3 stages of n BasicBlocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
    if len(widths) != 3:
        raise ValueError(f"CIFAR ResNet has 3 stages, so widths needs 3 values, got {list(widths)}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), tuple(widths), num_classes, shortcut)


def resnet20(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-20 (0.27 M parameters)."""
    return cifar_resnet(20, num_classes, shortcut)


def resnet32(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-32 (0.46 M parameters)."""
    return cifar_resnet(32, num_classes, shortcut)


def resnet44(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-44 (0.66 M parameters)."""
    return cifar_resnet(44, num_classes, shortcut)


def resnet56(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-56 (0.85 M parameters)."""
    return cifar_resnet(56, num_classes, shortcut)


def resnet110(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-110 (1.7 M parameters)."""
    return cifar_resnet(110, num_classes, shortcut)


def quicknet(num_classes: int = 10, widths: Sequence[int] = (16, 32, 64),
             blocks: Sequence[int] = (1, 1, 1)) -> CifarResNet:
    """Tiny quickstart network: conv3x3 + BN + ReLU, MaxPool2d(2), BasicBlock stages (option-A shortcuts)."""
    return CifarResNet(tuple(blocks), tuple(widths), num_classes, shortcut="A", stem_pool=True)
