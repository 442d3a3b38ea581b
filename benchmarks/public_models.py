"""Architectures nobody here wrote: pytorchcv model definitions as a user's own ``model.arch``.

``model.arch: public_models:pytorchcv`` with ``kwargs: {name: <pytorchcv model>, size: 32|64}`` builds the
named network with random weights (pytorchcv's own initialisation, seeded), replaces a fixed-size final
average pool (ImageNet definitions pool 7x7) by a global one so that ImageNet families run at 64x64, and
re-estimates BatchNorm statistics on random images so that the network's activations have realistic scales.

pytorchcv 0.0.74 is installed with ``pip install --no-deps pytorchcv==0.0.74`` (its model provider imports
torchvision, which does not import here; the model modules themselves do not need it).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

CIFAR = ["resnet20_cifar10", "resnet56_cifar10", "preresnet20_cifar10", "seresnet20_cifar10",
         "sepreresnet20_cifar10", "pyramidnet110_a48_cifar10", "densenet40_k12_cifar10", "densenet40_k12_bc_cifar10",
         "xdensenet40_2_k24_bc_cifar10", "ror3_56_cifar10", "shakeshakeresnet20_2x16d_cifar10", "diaresnet20_cifar10",
         "diapreresnet20_cifar10", "resdropresnet20_cifar10", "shakedropresnet20_cifar10", "nin_cifar10",
         "msdnet22_cifar10"]
IMAGENET = ["resnet18", "seresnet18", "cbam_resnet18", "bam_resnet18", "resnext26_32x4d", "sknet50", "dla34",
            "regnetx002", "darknet_tiny", "mobilenet_w1", "mobilenetb_w1", "mobilenetv2_w1", "mobilenetv3_small_w1",
            "mnasnet_b1", "proxylessnas_mobile", "fbnet_cb", "mixnet_s", "igcv3_w1", "ghostnet", "squeezenet_v1_1",
            "sqnxt23_w1", "shufflenetv2_w1", "shufflenet_g3_wd2", "menet108_8x1_g3", "condensenet74_c4_g4",
            "espnetv2_wd2", "dicenet_wd2", "channelnet", "peleenet", "hardnet39ds"]
SUITE = CIFAR + IMAGENET


def input_size(name: str) -> int:
    return 32 if name.endswith("_cifar10") else 64


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """pytorchcv model factory name -> the module defining it."""
    spec = importlib.util.find_spec("pytorchcv")
    if spec is None:
        raise ModuleNotFoundError("pytorchcv is not installed: pip install --no-deps pytorchcv==0.0.74")
    found = {}
    for path in sorted((Path(spec.origin).parent / "models").glob("*.py")):
        for match in re.finditer(r"^def ([a-z0-9_]+)\(", path.read_text(encoding="utf-8"), re.M):
            found.setdefault(match.group(1), path.stem)
    return found


def pytorchcv(name: str, num_classes: int = 10, size: int | None = None, seed: int = 0,
              bn_batches: int = 4) -> nn.Module:
    """The pytorchcv model ``name`` for ``num_classes`` classes at ``size`` x ``size`` inputs."""
    size = size or input_size(name)
    module = importlib.import_module(f"pytorchcv.models.{_index()[name]}")
    torch.manual_seed(seed)
    kwargs = {} if name.endswith("_cifar10") else {"num_classes": num_classes}
    try:
        model = getattr(module, name)(in_size=(size, size), **kwargs)
    except TypeError:
        model = getattr(module, name)(**kwargs)
    _global_final_pool(model)
    _estimate_batchnorm(model, size, bn_batches)
    return model.eval()


def _global_final_pool(model: nn.Module) -> None:
    for parent in model.modules():
        for key, child in list(parent.named_children()):
            if key == "final_pool" and isinstance(child, nn.AvgPool2d):
                setattr(parent, key, nn.AdaptiveAvgPool2d(1))


@torch.no_grad()
def _estimate_batchnorm(model: nn.Module, size: int, batches: int) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    model.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(batches):
        model(torch.randn(16, 3, size, size, generator=generator))
    model.eval()
