"""torch-pruning DependencyGraph, wrapped: building it, finding the head, and describing the groups.

A *group* is a set of coupled channels (a conv's filters, its BN, the next layers' input slices, and with
residual connections every layer writing into the same stream) that must be pruned together. We key a
group by the name of its root layer (the conv/linear whose output channels torch-pruning indexes the group
by; tracing is deterministic), which is stable across copies of the model, so that scores computed once
can be applied to a copy.

Facts about torch-pruning 1.6.1 this module works around (DESIGN.md §5): ``ignored_layers`` must be
module instances; tracing needs grad enabled and leaves the model in eval mode; custom layers need a
registered pruner, which we build from the small protocol in ``compressor.models.layers``.
"""

from __future__ import annotations

import fnmatch
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import ModelError, SurgeryError, did_you_mean

PARAM_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Slots:
    """Where a group's channels sit in one layer: its channel ``layer_idx[i]`` is group channel ``root_idx[i]``
    (an index mapping, e.g. a flatten before a linear layer, gives a group channel several positions)."""

    layer_idx: torch.Tensor
    root_idx: torch.Tensor


@dataclass(frozen=True)
class GroupInfo:
    """What a pruning group touches. ``key`` is the root layer's name."""

    key: str
    channels: int
    producers: tuple[str, ...]  # layers whose output channels are removed
    consumers: tuple[str, ...]  # layers whose input channels are removed
    residual: bool  # the channels pass through a residual addition (a residual stream)
    slices: int  # >1 when a grouped (non-depthwise) conv forces the same positions in each slice
    producer_slots: dict = field(default_factory=dict, compare=False, repr=False)  # layer -> Slots (outputs)
    consumer_slots: dict = field(default_factory=dict, compare=False, repr=False)  # layer -> Slots (inputs)
    norm_slots: dict = field(default_factory=dict, compare=False, repr=False)  # BatchNorm -> Slots
    custom_slots: dict = field(default_factory=dict, compare=False, repr=False)  # custom layer -> Slots (outputs)


def example_input(input_shape: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.randn(1, *input_shape, device=device)


def build_graph(model: nn.Module, example: torch.Tensor):
    """A torch-pruning DependencyGraph of ``model`` with our custom-layer pruners. Traced in eval mode (a
    training-mode trace would update BatchNorm running statistics with the example input); the train flag
    is restored after."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example, customized_pruners=custom_pruners(model), verbose=False)
    except Exception as exc:  # tracing runs user code: report it as a model problem
        raise ModelError(f"cannot trace {type(model).__name__} for dependency analysis: "
                         f"{_first_line(exc)} (hard-coded shapes or data-dependent control flow in forward?)") from exc
    finally:
        model.train(was_training)
    return graph


def custom_pruners(model: nn.Module) -> dict:
    """torch-pruning pruners for every layer class that implements our prunable-layer protocol."""
    classes = {type(m) for m in model.modules() if getattr(m, "compressor_prunable", False)}
    return {cls: _protocol_pruner() for cls in classes}


def _protocol_pruner():
    import torch_pruning as tp

    class ProtocolPruner(tp.pruner.BasePruningFunc):
        """Adapts ``prune_out_channels/prune_in_channels/in_channels/out_channels`` of a custom layer."""

        def prune_out_channels(self, layer, idxs):
            layer.prune_out_channels(list(idxs))
            return layer

        def prune_in_channels(self, layer, idxs):
            layer.prune_in_channels(list(idxs))
            return layer

        def get_out_channels(self, layer):
            return layer.out_channels

        def get_in_channels(self, layer):
            return layer.in_channels

    return ProtocolPruner()


def find_heads(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the layers producing the model's output (the classifier), which are never pruned."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, PARAM_LAYERS)}
    order: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: order.append((names[mod], out))) for m in names]
    was_training = model.training
    try:
        with torch.no_grad():
            output = model.eval()(example)  # eval: a training-mode pass would move BatchNorm statistics
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    outputs = [t for t in _flatten(output) if isinstance(t, torch.Tensor)]
    heads = [name for name, out in order if any(out is t for t in outputs)]
    if not heads and order:
        heads = [order[-1][0]]
    if not heads:
        raise ModelError(f"{type(model).__name__} has no Conv or Linear layer: nothing to prune")
    return sorted(set(heads))


def describe_groups(model: nn.Module, graph, skip: Iterable[nn.Module]) -> list[tuple[GroupInfo, object]]:
    """Every prunable group with its description, in model order; groups touching ``skip`` outputs are left out."""
    names = {m: n for n, m in model.named_modules()}
    found = []
    for group in graph.get_all_groups(ignored_layers=list(skip), root_module_types=PARAM_LAYERS):
        info = _describe(group, graph, names)
        if info is not None:
            found.append((info, group))
    return found


def _describe(group, graph, names: dict) -> GroupInfo | None:
    import torch_pruning as tp

    producers, consumers, residual, slices = [], [], False, 1
    slots: dict[bool, dict[str, Slots]] = {True: {}, False: {}}
    norms: dict[str, Slots] = {}
    custom: dict[str, Slots] = {}
    for item in group:
        dep, module = item.dep, item.dep.target.module
        if isinstance(module, tp.ops._ElementWiseOp) and "Add" in str(module._grad_fn):
            residual = residual or len(dep.target.inputs) >= 2
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            norms.setdefault(names[module], _slots(item))
        if not isinstance(module, PARAM_LAYERS) and not getattr(module, "compressor_prunable", False):
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        (producers if out else consumers).append(names[module])
        if isinstance(module, PARAM_LAYERS):
            slots[out].setdefault(names[module], _slots(item))
        elif out:
            custom.setdefault(names[module], _slots(item))
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and not _depthwise(module):
            slices = math.lcm(slices, module.groups)
    root = group[0].dep.target.module
    channels = len(group[0].idxs)
    if not isinstance(root, PARAM_LAYERS) or channels % slices:
        return None
    return GroupInfo(key=names[root], channels=channels, producers=tuple(dict.fromkeys(producers)),
                     consumers=tuple(dict.fromkeys(consumers)), residual=residual, slices=slices,
                     producer_slots=slots[True], consumer_slots=slots[False], norm_slots=norms, custom_slots=custom)


def _slots(item) -> Slots:
    roots = getattr(item, "root_idxs", None) or list(range(len(item.idxs)))
    return Slots(torch.as_tensor(list(item.idxs)), torch.as_tensor(list(roots)))


def _depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels


def select_layers(model: nn.Module, patterns: Iterable[str], field: str) -> dict[str, list[str]]:
    """Resolve name patterns (glob, or regex after 're:') to conv/linear layer names; each must match something."""
    layers = [n for n, m in model.named_modules() if isinstance(m, PARAM_LAYERS)]
    matched = {}
    patterns = list(patterns)
    for i, pattern in enumerate(patterns):
        where = f"{field}[{i}]" if len(patterns) > 1 or not field.endswith(".match") else field
        hits = [n for n in layers if match_name(pattern, n, where)]
        if not hits:
            raise SurgeryError(f"{where}: {pattern!r} matches no conv/linear layer" + did_you_mean(pattern, layers, limit=6))
        matched[pattern] = hits
    return matched


def match_name(pattern: str, name: str, field: str = "pattern") -> bool:
    if pattern.startswith("re:"):
        try:
            return re.fullmatch(pattern[3:], name) is not None
        except re.error as exc:
            raise SurgeryError(f"{field}: invalid regular expression {pattern[3:]!r}: {exc}") from None
    return fnmatch.fnmatchcase(name, pattern)


def _flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    return [value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
