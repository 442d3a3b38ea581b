"""Model zoo, ``build_model`` (recipe ``model`` section -> network) and checkpoint loading.

Zoo: CIFAR ResNet-20/32/44/56/110 (akamaster layout), VGG-16/19-BN (kuangliu layout), ImageNet
ResNet-18/34/50 and MobileNetV2 (torchvision layout), quicknet. Importing this package imports torch
only (no torch_pruning, no onnx).
"""

from __future__ import annotations

from .checkpoint import CheckpointInfo, load_checkpoint, read_state_dict
from .registry import ModelSpec, build_model, get_model_spec, list_models, register_model, zoo_models_matching

__all__ = [
    "CheckpointInfo",
    "ModelSpec",
    "build_model",
    "get_model_spec",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "register_model",
    "zoo_models_matching",
]
