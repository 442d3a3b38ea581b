"""torch-pruning DependencyGraph, wrapped: building it, finding the head, and describing the groups.

A *group* is a set of coupled channels (a conv's filters, its BN, the next layers' input slices, and with
residual connections every layer writing into the same stream) that must be pruned together. We key a
group by the name of its root layer (the conv/linear whose output channels torch-pruning indexes the group
by; tracing is deterministic), which is stable across copies of the model, so that scores computed once
can be applied to a copy.

Facts about torch-pruning 1.6.1 this module works around (DESIGN.md §5): ``ignored_layers`` must be
module instances; tracing needs grad enabled and leaves the model in eval mode; custom layers need a
registered pruner, which we build from the small protocol in ``compressor.models.layers``. Since issue 13:
the example goes in as ``(x,)`` (a bare tensor is unpacked, so a model that also runs unbatched was traced
on a 3-D tensor); layers whose outputs never reach the model's output are traced too (torch-pruning walks
back from the output only) and the last of them protected like the head; a conv/linear subclass with
weight-shaped extras (a mask) gets a pruner that prunes them with the weight. Fixes inside torch-pruning's
index mappings live in ``patches.py``.
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
    pieces: tuple[frozenset, ...] = ()  # root channels that make up the whole width of one layer (a split piece,
    # a concat input): a plan keeps at least one of each, or the layer would be left with no channel
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

    from . import patches

    patches.apply()
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = dead_end_layers(model, example)  # traced too, so that their inputs are pruned with the rest
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=(example,), customized_pruners=custom_pruners(model), verbose=False,
                forward_fn=_with_outputs_of(extra) if extra else None)
    except Exception as exc:  # tracing runs user code: report it as a model problem
        raise ModelError(f"cannot trace {type(model).__name__} for dependency analysis: "
                         f"{_first_line(exc)} (hard-coded shapes or data-dependent control flow in forward?)") from exc
    finally:
        model.train(was_training)
    return graph


def custom_pruners(model: nn.Module) -> dict:
    """torch-pruning pruners for every layer class that implements our prunable-layer protocol, and for
    conv/linear subclasses holding extra weight-shaped tensors (a mask, cause C5)."""
    classes = {type(m) for m in model.modules() if getattr(m, "compressor_prunable", False)}
    pruners = {cls: _protocol_pruner() for cls in classes}
    weight_like = {type(m) for m in model.modules() if isinstance(m, PARAM_LAYERS) and weight_shaped_extras(m)}
    pruners.update({cls: _weight_like_pruner() for cls in weight_like - classes})
    return pruners


def weight_shaped_extras(module: nn.Module) -> list[str]:
    """Names of a layer's own parameters and buffers, other than weight and bias, shaped like its weight."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return []
    tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return [n for n, t in tensors if n not in ("weight", "bias") and t is not None and t.shape == weight.shape]


def _weight_like_pruner():
    """torch-pruning's own conv/linear pruning, applied to the weight-shaped extras as to the weight."""
    from torch_pruning.pruner import function as tpf

    class WeightLikePruner(tpf.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            _select_extras(layer, _kept(range(_base(layer).get_out_channels(layer)), idxs), _out_dim(layer))
            return _base(layer).prune_out_channels(layer, idxs)

        def prune_in_channels(self, layer, idxs):
            if _depthwise(layer):  # as torch-pruning: a depthwise conv loses inputs and outputs together
                return self.prune_out_channels(layer, idxs)
            keep = _kept(range(_base(layer).get_in_channels(layer)), idxs)
            groups = getattr(layer, "groups", 1)
            if groups > 1:
                keep = keep[: len(keep) // groups]  # torch-pruning's rule for grouped convs
            _select_extras(layer, keep, 1 - _out_dim(layer))
            return _base(layer).prune_in_channels(layer, idxs)

        def get_out_channels(self, layer):
            return _base(layer).get_out_channels(layer)

        def get_in_channels(self, layer):
            return _base(layer).get_in_channels(layer)

    def _base(layer):
        if isinstance(layer, nn.Linear):
            return tpf.LinearPruner()
        return tpf.DepthwiseConvPruner() if _depthwise(layer) else tpf.ConvPruner()

    return WeightLikePruner()


def _kept(channels, idxs) -> list[int]:
    return sorted(set(channels) - set(idxs))


def _out_dim(layer: nn.Module) -> int:
    return 1 if getattr(layer, "transposed", False) else 0


def _select_extras(layer: nn.Module, keep: list[int], dim: int) -> None:
    index = torch.as_tensor(keep, dtype=torch.long)
    for name in weight_shaped_extras(layer):
        tensor = getattr(layer, name)
        picked = torch.index_select(tensor.data, dim, index.to(tensor.device)).contiguous()
        if isinstance(tensor, nn.Parameter):
            setattr(layer, name, nn.Parameter(picked, requires_grad=tensor.requires_grad))
        else:
            setattr(layer, name, picked)


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
    pieces: set[frozenset] = set()
    channels = len(group[0].idxs)
    for item in group:
        dep, module = item.dep, item.dep.target.module
        piece = _whole_layer_piece(item, graph, channels)
        if piece is not None:
            pieces.add(piece)
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
    if not isinstance(root, PARAM_LAYERS) or channels % slices:
        return None
    return GroupInfo(key=names[root], channels=channels, producers=tuple(dict.fromkeys(producers)),
                     consumers=tuple(dict.fromkeys(consumers)), residual=residual, slices=slices,
                     pieces=tuple(sorted(pieces, key=min)), producer_slots=slots[True], consumer_slots=slots[False],
                     norm_slots=norms, custom_slots=custom)


def _whole_layer_piece(item, graph, channels: int) -> frozenset | None:
    """The group's root channels that are the whole width of this item's layer, when they are only part of
    the group (a split piece feeding a conv, a concat input produced by a conv); else None."""
    module = item.dep.target.module
    if not isinstance(module, (*PARAM_LAYERS, nn.modules.batchnorm._BatchNorm)):
        return None
    out = graph.is_out_channel_pruning_fn(item.dep.handler)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        width = module.num_features
    elif isinstance(module, nn.Linear):
        width = module.out_features if out else module.in_features
    else:
        width = module.out_channels if out else module.in_channels
    roots = frozenset(int(i) for i in _slots(item).root_idx.tolist())
    if len(item.idxs) != width or len(roots) >= channels:
        return None
    return roots


def _slots(item) -> Slots:
    roots = getattr(item, "root_idxs", None) or list(range(len(item.idxs)))
    return Slots(torch.as_tensor(list(item.idxs)), torch.as_tensor(list(roots)))


def _depthwise(conv: nn.Module) -> bool:
    return isinstance(conv, nn.modules.conv._ConvNd) and conv.groups == conv.in_channels == conv.out_channels > 1


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


def dead_end_layers(model: nn.Module, example: torch.Tensor, terminal_only: bool = False) -> list[str]:
    """Conv/linear layers that run in forward but whose outputs never reach the model's output (early-exit
    classifiers computed and dropped, cause C7). torch-pruning traces back from the output only, so their
    inputs would keep channels their producers lost. With ``terminal_only``: just the last layer of each
    such branch (the ones whose outputs nothing reads), which are protected like the head."""
    outputs: dict[str, torch.Tensor] = {}
    output = _run_capturing(model, example, outputs, [n for n, m in model.named_modules() if isinstance(m, PARAM_LAYERS)])
    live = _ancestors([t.grad_fn for t in _flatten(output) if isinstance(t, torch.Tensor) and t.grad_fn is not None])
    dead = {n: t for n, t in outputs.items() if t.grad_fn is not None and t.grad_fn not in live}
    if not terminal_only:
        return list(dead)
    read = _ancestors([fn for t in dead.values() for fn, _ in t.grad_fn.next_functions if fn is not None])
    return [n for n, t in dead.items() if t.grad_fn not in read]


def _run_capturing(model: nn.Module, example: torch.Tensor, captured: dict, names: list[str]):
    """One eval-mode forward with grad enabled, recording the outputs of the layers ``names``."""
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.setdefault(n, out)) for n in names]
    was_training = model.training
    try:
        with torch.enable_grad():
            return model.eval()(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()


def _ancestors(roots: list) -> set:
    """Every autograd node reachable from ``roots`` (included)."""
    seen, stack = set(), list(roots)
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in getattr(fn, "next_functions", ()))
    return seen


def _with_outputs_of(names: list[str]):
    """A torch-pruning ``forward_fn`` returning the model's output and the outputs of the layers ``names``."""
    def forward(model, inputs):
        captured: dict[str, torch.Tensor] = {}
        output = _run_capturing(model, inputs[0], captured, names)
        return [*_flatten(output), *captured.values()]

    return forward


def _flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    return [value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
