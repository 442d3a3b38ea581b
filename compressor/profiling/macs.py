"""MACs and parameter counts, on an exported ONNX graph and on a PyTorch model, with one convention.

MACs are the multiply-accumulates of every Conv, ConvTranspose, Gemm and MatMul executed for ONE image
(batch 1); additions of biases, BatchNorm, activations, pooling and residual adds are not counted.

- Conv: ``prod(output[1:]) * (C_in / group) * prod(kernel)``.
- ConvTranspose: ``prod(input[1:]) * (C_out / group) * prod(kernel)`` (every input element is scattered
  through its kernel; this is what is executed, an output-based count would over-count strided layers).
- Gemm / MatMul: ``output elements * inner dimension`` at batch 1.

``count_onnx`` reads the graph itself: on a copy it fixes a symbolic batch dimension to 1 (a fixed
batch N is kept and the counts are divided by N), runs ONNX shape inference with data propagation and
refuses (ExportError naming the node) to count an op whose shapes cannot be inferred.
``count_torch`` counts the same ops through forward hooks on ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``
and ``nn.Linear``; functional ``torch.matmul``/``F.conv2d`` calls inside ``forward`` are not seen by it
(the exported graph is the reference). For our CNNs both agree exactly on MACs.

Params differ on purpose: ``count_torch`` counts all floating-point parameters of the module,
``count_onnx`` counts the floating-point weights of the exported graph (initializers and float Constant
tensors, plus quantized weights feeding a DequantizeLinear). The exporter folds BatchNorm into the
preceding Conv, so the ONNX count is that of the folded graph: BN's weight/bias vanish and a Conv bias
may appear.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExportError, ModelError

if TYPE_CHECKING:
    from torch import nn

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerCost:
    """One executed op (ONNX node or PyTorch module call)."""

    name: str      # torch module path where known ("layer1.0.conv1"), else the ONNX node name
    op_type: str   # ONNX op type ("Conv", "Gemm", ...) or PyTorch module class ("Conv2d", "Linear")
    macs: int      # per image
    params: int    # weights of this op (ONNX: its float initializers; torch: the module's own parameters)


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int
    layers: tuple[LayerCost, ...]


# ---------------------------------------------------------------------------------------------- ONNX
def count_onnx(path: Path) -> Cost:
    """Per-image MACs of the Conv/ConvTranspose/Gemm/MatMul nodes of an ONNX file, and its weight count."""
    model = _load(Path(path))
    graph = model.graph
    _reject_counted_ops_in_subgraphs(graph)
    batch = _fix_batch(graph)
    shapes = _shape_table(_infer_shapes(model, Path(path)).graph)
    weights = {init.name: init for init in graph.initializer}
    layers = tuple(_node_cost(node, shapes, weights, batch) for node in graph.node
                   if node.op_type in COUNTED_OPS and node.domain in ("", "ai.onnx"))
    return Cost(macs=sum(layer.macs for layer in layers), params=_onnx_params(graph), layers=layers)


def _load(path: Path):
    import onnx

    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path} is not a readable ONNX model: {str(exc).strip().splitlines()[0]}") from None
    if model.functions:
        import onnx.inliner

        model = onnx.inliner.inline_local_functions(model)
    return model


def _fix_batch(graph) -> int:
    """Set symbolic leading dims of the graph inputs to 1; return the batch the counts are taken at."""
    weights = {init.name for init in graph.initializer}
    batch = 1
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in weights or not dims:
            continue
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            batch = max(batch, dims[0].dim_value)
        else:
            dims[0].dim_value = 1
    del graph.value_info[:]
    for value in graph.output:
        value.type.tensor_type.ClearField("shape")
    return batch


def _infer_shapes(model, path: Path):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"ONNX shape inference failed on {path}: {str(exc).strip().splitlines()[0]}") from None


def _shape_table(graph) -> dict[str, tuple[int | None, ...] | None]:
    shapes: dict[str, tuple[int | None, ...] | None] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        shapes[value.name] = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
                              if tensor.HasField("shape") else None)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _node_cost(node, shapes: dict, weights: dict, batch: int) -> LayerCost:
    def known(index: int, output: bool = False) -> tuple[int, ...]:
        name = (node.output if output else node.input)[index]
        return _known_shape(node, name, shapes.get(name))

    op = node.op_type
    if op == "Conv":
        w = known(1)
        macs = math.prod(known(0, output=True)) * w[1] * math.prod(w[2:])
    elif op == "ConvTranspose":
        w = known(1)
        macs = math.prod(known(0)) * w[1] * math.prod(w[2:])
    elif op == "Gemm":
        a = known(0)
        macs = math.prod(known(0, output=True)) * (a[0] if _attr(node, "transA", 0) else a[-1])
    else:  # MatMul
        macs = math.prod(known(0, output=True)) * known(0)[-1]
    params = sum(_numel(weights[name]) for name in node.input if name in weights and _is_float(weights[name]))
    return LayerCost(name=_layer_name(node), op_type=op, macs=round(macs / batch), params=params)


def _known_shape(node, name: str, shape) -> tuple[int, ...]:
    if shape is None or not shape or any(d is None or d <= 0 for d in shape):
        shown = "unknown" if shape is None else list(shape)
        raise ExportError(f"cannot count MACs of {node.op_type} node '{node.name or '?'}': the shape of '{name}' "
                          f"is {shown} after ONNX shape inference (data-dependent shape or custom op upstream?)")
    return shape


def _layer_name(node) -> str:
    """The torch module path when the graph tells it (weight name or name scopes), else the node name."""
    if len(node.input) > 1 and node.input[1].endswith(".weight"):
        return node.input[1][: -len(".weight")]
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            if len(scopes) >= 2 and scopes[-2]:
                return str(scopes[-2])
    return node.name or node.output[0]


def _attr(node, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return attr.i
    return default


def _reject_counted_ops_in_subgraphs(graph) -> None:
    for node in graph.node:
        for sub in _subgraphs(node):
            for inner in _all_nodes(sub):
                if inner.op_type in COUNTED_OPS:
                    raise ExportError(f"cannot count MACs: {inner.op_type} node '{inner.name}' sits inside "
                                      f"control-flow node {node.op_type} '{node.name}' (which branch runs is "
                                      "data-dependent); export without Python control flow on tensor values")


def _subgraphs(node) -> Iterator:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _all_nodes(graph) -> Iterator:
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _all_graphs(graph) -> Iterator:
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _all_graphs(sub)


def _onnx_params(graph) -> int:
    """Floating-point weights: initializers, float Constant tensors, quantized weights of DequantizeLinear."""
    total = 0
    for g in _all_graphs(graph):
        dequantized = {node.input[0] for node in g.node if node.op_type == "DequantizeLinear"}
        total += sum(_numel(init) for init in g.initializer if _is_float(init) or init.name in dequantized)
        for node in g.node:
            if node.op_type == "Constant":
                total += _constant_params(node)
    return total


def _constant_params(node) -> int:
    for attr in node.attribute:
        if attr.name == "value" and _is_float(attr.t):
            return _numel(attr.t)
        if attr.name == "value_float":
            return 1
        if attr.name == "value_floats":
            return len(attr.floats)
    return 0


def _numel(tensor) -> int:
    return math.prod(tensor.dims)


def _is_float(tensor) -> bool:
    from onnx import TensorProto

    names = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
             "FLOAT8E5M2FNUZ")
    return tensor.data_type in {getattr(TensorProto, name) for name in names if hasattr(TensorProto, name)}


# --------------------------------------------------------------------------------------------- torch
def count_torch(model: nn.Module, input_shape: tuple[int, int, int], skip: frozenset = frozenset()) -> Cost:
    """Per-image MACs of the conv / transposed-conv / linear module calls of one batch-1 forward pass;
    layers named in ``skip`` are left out (surgery skips layers whose outputs never reach the model's output,
    which the exported graph drops)."""
    import torch

    from ..export.onnx import eval_mode

    layers: list[LayerCost] = []
    names = {module: name for name, module in model.named_modules()}
    counted = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    hooks = [module.register_forward_hook(_hook(names[module], layers))
             for module in names if isinstance(module, counted) and names[module] not in skip]
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    except Exception as exc:  # noqa: BLE001 - a forward failure here is a model / input_shape mismatch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"counting MACs: {type(model).__name__} fails on an input of shape "
                         f"{tuple(x.shape)}: {first} (check model.input_shape)") from exc
    finally:
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters() if p.is_floating_point())
    return Cost(macs=sum(layer.macs for layer in layers), params=params, layers=tuple(layers))


def _hook(name: str, layers: list[LayerCost]):
    def record(module, inputs, output) -> None:
        layers.append(LayerCost(name=name or type(module).__name__, op_type=type(module).__name__,
                                macs=_module_macs(module, inputs[0], output),
                                params=sum(p.numel() for p in module.parameters(recurse=False))))

    return record


def _module_macs(module, x, output) -> int:
    import torch

    if isinstance(module, torch.nn.Linear):
        return output.numel() * module.in_features
    weight = module.weight
    per_element = weight.shape[1] * math.prod(weight.shape[2:])
    if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
        return x.numel() * per_element
    return output.numel() * per_element
