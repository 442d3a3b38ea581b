"""What data-informed methods observe on calibration images, shared by HRank, PFP and functionality.

- :func:`calibration_batches`: at most N images of the calibration loader, with a progress bar.
- :func:`per_channel`: per-layer statistics turned into one value per group channel, through the group's
  slots (``GroupInfo.producer_slots`` / ``consumer_slots``).
- :class:`InputProbe`: the inputs of chosen layers during a forward pass (what the next layer sees).
- :class:`ReluProbe`: the post-ReLU map each producing conv leads to, found on the autograd graph of the
  forward pass: conv -> [BatchNorm] -> [residual add] -> ReLU. Any other path (ReLU6, SiLU, pooling before
  the activation, a branch) is an error naming the layer: rank-based criteria are only defined after ReLU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from ..errors import ModelError
from ..progress import track
from .base import CalibrationContext

_PASS_THROUGH = ("BatchNormBackward", "AddBackward")  # channel-preserving steps allowed between conv and ReLU
_ACTIVATIONS = ("Hardtanh", "Silu", "Gelu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid",
                "Mish", "Softplus", "Prelu", "Celu", "Selu")


def calibration_batches(ctx: CalibrationContext, limit: int | None, description: str) -> Iterator[torch.Tensor]:
    """Images (on ``ctx.device``) of the calibration loader, at most ``limit`` of them."""
    total = ctx.num_images if limit is None else min(limit, ctx.num_images)
    seen = 0
    batches = ctx.batches()
    for images, _ in track(batches, description, total=len(batches) if hasattr(batches, "__len__") else None):
        if seen >= total:
            break
        images = images[: total - seen]
        seen += images.shape[0]
        yield images.to(ctx.device, non_blocking=True)


def per_channel(values: dict[str, torch.Tensor], slots: dict, channels: int, reduce: str = "mean") -> torch.Tensor:
    """Per-layer statistics (indexed by the layer's own channels) as one value per group channel."""
    out = torch.zeros(channels, dtype=torch.float64)
    count = torch.zeros(channels, dtype=torch.float64)
    for layer, slot in slots.items():
        value = values[layer].double()[slot.layer_idx]
        if reduce == "max":
            out.scatter_reduce_(0, slot.root_idx, value, reduce="amax", include_self=True)
        else:
            out.index_add_(0, slot.root_idx, value)
            count.index_add_(0, slot.root_idx, torch.ones_like(value))
    return out if reduce == "max" else out / count.clamp(min=1)


def one_forward(model: nn.Module, ctx: CalibrationContext, hooks: list, images: int = 1) -> None:
    """Push ``images`` calibration images through ``model`` (eval, no grad) with ``hooks`` attached (handles
    already registered), then remove them: for shapes and wiring, not statistics."""
    try:
        batch, _ = next(iter(ctx.batches()))
        with torch.no_grad():
            model.eval()(batch[:images].to(ctx.device))
    finally:
        for hook in hooks:
            hook.remove()


def observable(module: nn.Module) -> bool:
    """Layers whose inputs methods analyse per channel: linear layers and ungrouped convolutions."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1)


def input_grams(model: nn.Module, layers: list[str], ctx: CalibrationContext, images: int | None,
                description: str) -> tuple[dict[str, torch.Tensor], int]:
    """Per layer: the sum of r r^T over images and positions, r = [input channels, 1] (float64, on CPU);
    and the number of images seen. Means, covariances and regressions of input channels all follow."""
    probe = InputProbe(model, layers)
    grams: dict[str, torch.Tensor] = {}
    seen = 0
    for batch in calibration_batches(ctx, images, description):
        for layer, x in probe.run(batch).items():
            rows = x.double().transpose(0, 1).reshape(x.shape[1], -1).T if x.dim() > 2 else x.double()
            rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype, device=rows.device)], 1)
            gram = (rows.T @ rows).cpu()
            grams[layer] = grams[layer] + gram if layer in grams else gram
        seen += batch.shape[0]
    return grams, seen


class InputProbe:
    """Records the input of each named layer during ``run(images)``."""

    def __init__(self, model: nn.Module, layers: list[str]):
        self.model = model
        self.layers = layers

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        handles = [self.model.get_submodule(name).register_forward_pre_hook(self._hook(name, seen))
                   for name in self.layers]
        try:
            with torch.no_grad():
                self.model.eval()(images)
        finally:
            for handle in handles:
                handle.remove()
        return seen

    @staticmethod
    def _hook(name: str, seen: dict):
        def hook(module, inputs):
            seen[name] = inputs[0].detach()
        return hook


class ReluProbe:
    """The post-ReLU maps each named producer (conv) leads to, via the forward pass's autograd graph."""

    def __init__(self, model: nn.Module, producers: list[str]):
        self.model = model
        self.producers = producers

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        handles = [self.model.get_submodule(name).register_forward_hook(self._hook(name, outputs))
                   for name in self.producers]
        try:
            with torch.enable_grad():
                result = self.model.eval()(images.requires_grad_(False))
        finally:
            for handle in handles:
                handle.remove()
        consumers = _consumers(result)
        return {name: _relu_after(name, out, consumers).detach() for name, out in outputs.items()}

    @staticmethod
    def _hook(name: str, outputs: dict):
        def hook(module, inputs, output):
            outputs[name] = output
        return hook


def _consumers(output) -> dict:
    """Autograd node -> the nodes that use its result (the forward direction of the graph)."""
    roots = [t.grad_fn for t in (output if isinstance(output, (list, tuple)) else [output])
             if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    consumers: dict = {}
    stack, seen = list(roots), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None:
                consumers.setdefault(parent, []).append(node)
                stack.append(parent)
    return consumers


def _relu_after(name: str, output: torch.Tensor, consumers: dict) -> torch.Tensor:
    node = output.grad_fn
    if node is None:
        raise ModelError(f"layer {name}: its output does not depend on trainable parameters; cannot trace it")
    while True:
        following = consumers.get(node, [])
        kind = type(following[0]).__name__ if len(following) == 1 else None
        if kind is None:
            how = "is used by several operations" if following else "is not used"
            raise ModelError(f"layer {name}: its output {how} before any ReLU; HRank needs conv -> [BN] -> ReLU "
                             "(prune it with another method, or ignore it with pruning.ignore)")
        if kind.startswith("ReluBackward"):
            return following[0]._saved_result
        if any(kind.startswith(a) for a in _ACTIVATIONS):
            raise ModelError(f"layer {name}: followed by {kind.removesuffix('Backward0')}, not ReLU; the rank of "
                             "feature maps is only meaningful after ReLU (HRank issue #13); use another method "
                             "or pruning.ignore")
        if not any(p in kind for p in _PASS_THROUGH):
            raise ModelError(f"layer {name}: reaches {kind.removesuffix('Backward0')} before any ReLU; HRank "
                             "needs conv -> [BN] -> [residual add] -> ReLU")
        node = following[0]
