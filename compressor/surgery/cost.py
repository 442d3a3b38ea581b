"""Exact MACs and parameters of a pruning plan, without pruning anything.

Every conv/linear layer costs ``positions x kernel x (in / groups) x out`` MACs (the convention of
``compressor.profiling.macs``: Conv/Gemm/MatMul only, per image). A plan keeps ``k_g`` of the ``C_g``
channels of each group g; a layer loses, on its output side, the channels of the groups it produces for,
and on its input side those of the groups it consumes, times the index multiplicity torch-pruning's
mapping gives it (a flatten in front of a linear layer maps one channel to H x W features). Depthwise
convolutions lose input, output and groups together. ``tests/unit/surgery/test_cost.py`` checks this
against counting the actually pruned model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .graph import PARAM_LAYERS, GroupInfo, dead_end_layers


@dataclass
class _Layer:
    positions: int  # output positions per image (H_out x W_out; rows for a linear layer), summed over its calls
    kernel: int
    cin: int
    cout: int
    groups: int
    depthwise: bool
    bias: bool
    out_cuts: list  # (group key, multiplicity)
    in_cuts: list
    shape: dict = field(default_factory=dict)  # what timing the layer alone needs: stride, padding, dilation, in_hw


class CostModel:
    """``macs(kept)`` / ``params(kept)`` for ``kept``: group key -> channels kept (absent: unpruned)."""

    def __init__(self, layers: dict[str, _Layer], channels: dict[str, int]):
        self._layers = layers
        self._channels = channels
        self.layers = layers  # name -> geometry and cuts (read by the latency model)
        self.channels = channels
        self.base_macs = self.macs({})
        self.base_params = self.params({})

    @classmethod
    def build(cls, model: nn.Module, example: torch.Tensor, groups: list[tuple[GroupInfo, object]], graph) -> "CostModel":
        layers = _geometry(model, example, frozenset(dead_end_layers(model, example)))
        names = {m: n for n, m in model.named_modules()}
        for info, group in groups:
            root = len(group[0].idxs)
            for dep, idxs in group:
                name = names.get(dep.target.module)
                if name not in layers:
                    continue
                cuts = layers[name].out_cuts if graph.is_out_channel_pruning_fn(dep.handler) else layers[name].in_cuts
                cuts.append((info.key, len(idxs) / root))
        return cls(layers, {info.key: info.channels for info, _ in groups})

    def macs(self, kept: dict[str, int]) -> int:
        return int(round(sum(layer.positions * layer.kernel * self._fan_in(layer, kept) * self._out(layer, kept)
                             for layer in self._layers.values())))

    def params(self, kept: dict[str, int]) -> int:
        """Weights and biases of the conv/linear layers (the 'compressible' parameters)."""
        total = 0.0
        for layer in self._layers.values():
            out = self._out(layer, kept)
            total += layer.kernel * self._fan_in(layer, kept) * out + (out if layer.bias else 0)
        return int(round(total))

    def reduction_pct(self, kept: dict[str, int], metric: str = "macs") -> float:
        if metric == "params":
            return 100.0 * (1 - self.params(kept) / self.base_params)
        return 100.0 * (1 - self.macs(kept) / self.base_macs)

    def _removed(self, cuts: list, kept: dict[str, int]) -> float:
        return sum(mult * (self._channels[key] - kept[key]) for key, mult in cuts if key in kept)

    def _out(self, layer: _Layer, kept: dict[str, int]) -> float:
        return layer.cout - self._removed(layer.out_cuts, kept)

    def _fan_in(self, layer: _Layer, kept: dict[str, int]) -> float:
        if layer.depthwise:
            return 1.0
        return (layer.cin - self._removed(layer.in_cuts, kept)) / layer.groups


def _geometry(model: nn.Module, example: torch.Tensor, dead: frozenset) -> dict[str, _Layer]:
    """Shape facts of every conv/linear layer from one forward pass; the ``dead`` ones (outputs that never
    reach the model's output, e.g. early exits computed and dropped) cost nothing: the ONNX export, where the
    report counts MACs, drops them."""
    layers: dict[str, _Layer] = {}
    names = {m: n for n, m in model.named_modules() if isinstance(m, PARAM_LAYERS) and n not in dead}

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            positions, kernel, cin, cout, groups = output[0].numel() // module.out_features, 1, \
                module.in_features, module.out_features, 1
        else:  # a transposed conv does its multiply-adds per *input* position
            positions = (inputs[0][0, 0] if module.transposed else output[0, 0]).numel()
            kernel = int(torch.tensor(module.kernel_size).prod())
            cin, cout, groups = module.in_channels, module.out_channels, module.groups
        depthwise = not isinstance(module, nn.Linear) and groups > 1 and groups == cin == cout
        earlier = layers.get(names[module])
        if earlier is not None:  # a layer called more than once does its multiply-adds at every call
            earlier.positions += positions
            return
        layers[names[module]] = _Layer(positions, kernel, cin, cout, groups, depthwise,
                                       module.bias is not None, [], [], _shape(module, inputs[0]))

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return layers


def _shape(module: nn.Module, x: torch.Tensor) -> dict:
    """Stride, padding, dilation, kernel and input size of a conv (a linear layer: a 1x1 conv over its rows)."""
    if isinstance(module, nn.Linear):
        rows = x[0].numel() // module.in_features if x.dim() > 1 else 1
        return {"kind": "linear", "kernel": [1, 1], "stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1],
                "in_hw": [rows, 1]}
    dims = len(module.kernel_size)
    kernel, stride, dilation = list(module.kernel_size), list(module.stride), list(module.dilation)
    if isinstance(module.padding, str):  # "same" / "valid"
        total = [d * (k - 1) for d, k in zip(dilation, kernel)] if module.padding == "same" else [0] * dims
        padding = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        padding = list(module.padding) * 2
    return {"kind": "convtranspose" if module.transposed else "conv", "kernel": kernel, "stride": stride,
            "padding": padding, "dilation": dilation, "in_hw": list(x.shape[2:]),
            "output_padding": list(getattr(module, "output_padding", [0] * dims))}
