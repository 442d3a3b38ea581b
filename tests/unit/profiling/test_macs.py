"""MAC counting: ONNX graph and PyTorch hooks agree, hand-computed values, refusal on unknown shapes."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compressor.errors import ExportError, ModelError
from compressor.export import export_onnx
from compressor.profiling import count_onnx, count_torch

from ..export.nets import PlainNet, SingleConv, TinyResNet, TokenNet, randomize_bn


def _export(model: torch.nn.Module, shape: tuple[int, int, int], path):
    export_onnx(model, torch.randn(1, *shape), path)
    return path


def _by_name(layers) -> Counter:
    totals: Counter = Counter()
    for layer in layers:
        totals[layer.name] += layer.macs
    return totals


def test_single_conv_hand_computed(tmp_path):
    model = SingleConv()
    expected = 8 * 8 * 8 * 3 * 9
    torch_cost = count_torch(model, (3, 8, 8))
    onnx_cost = count_onnx(_export(model, (3, 8, 8), tmp_path / "conv.onnx"))
    assert torch_cost.macs == onnx_cost.macs == expected
    assert torch_cost.params == onnx_cost.params == 8 * 3 * 9 + 8
    assert [(layer.name, layer.op_type) for layer in onnx_cost.layers] == [("conv", "Conv")]
    assert [(layer.name, layer.op_type, layer.params) for layer in torch_cost.layers] == [("conv", "Conv2d", 224)]


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
@pytest.mark.parametrize("cls, shape", [(PlainNet, (3, 16, 16)), (TinyResNet, (3, 16, 16)), (TokenNet, (3, 8, 8))])
def test_onnx_and_torch_macs_agree_layer_by_layer(tmp_path, cls, shape):
    model = randomize_bn(cls())
    torch_cost = count_torch(model, shape)
    onnx_cost = count_onnx(_export(model, shape, tmp_path / "m.onnx"))
    assert onnx_cost.macs == torch_cost.macs > 0
    assert _by_name(onnx_cost.layers) == _by_name(torch_cost.layers)


def test_plain_net_hand_computed():
    # conv1 3->8 on 16x16, depthwise 8 k3 s2 -> 8x8, grouped 8->16 g2 on 8x8, fc 16->10
    expected = {"conv1": 16 * 16 * 8 * 3 * 9, "dw": 8 * 8 * 8 * 1 * 9, "grouped": 8 * 8 * 16 * 4 * 9, "fc": 16 * 10}
    cost = count_torch(PlainNet(), (3, 16, 16))
    assert dict(_by_name(cost.layers)) == expected
    assert cost.macs == sum(expected.values())


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_token_net_uses_matmul_and_conv_transpose(tmp_path):
    model = TokenNet()
    cost = count_onnx(_export(model, (3, 8, 8), tmp_path / "tok.onnx"))
    ops = {layer.name: layer.op_type for layer in cost.layers}
    assert ops == {"up": "ConvTranspose", "patch": "Conv", "mix": "MatMul", "head": "Gemm"}
    macs = dict(_by_name(cost.layers))
    assert macs["up"] == 3 * 8 * 8 * 4 * 2 * 2          # every input element through a 4 x 2x2 kernel
    assert macs["mix"] == 16 * 12 * 6                    # 16 tokens x 12 outputs x 6 inputs


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_onnx_params_count_the_bn_folded_graph(tmp_path):
    model = randomize_bn(TinyResNet())
    torch_cost = count_torch(model, (3, 16, 16))
    onnx_cost = count_onnx(_export(model, (3, 16, 16), tmp_path / "r.onnx"))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # every BN disappears into its bias-less conv, which gains a bias of C values
    assert onnx_cost.params == torch_cost.params - sum(2 * bn.num_features for bn in bns) \
        + sum(bn.num_features for bn in bns)


def _save(graph, path, opsets=(("", 18),)):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    onnx.save(model, str(path))
    return path


def _weight(name, *shape):
    return numpy_helper.from_array(torch.randn(*shape).numpy(), name)


def test_fixed_batch_graph_is_counted_per_image(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="head", transB=1)], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])], [_weight("w", 10, 16)])
    cost = count_onnx(_save(graph, tmp_path / "gemm.onnx"))
    assert cost.macs == 10 * 16 and cost.params == 160


def test_unknown_shape_from_custom_op_raises(tmp_path):
    nodes = [helper.make_node("Mystery", ["x"], ["h"], name="mystery", domain="custom.ops"),
             helper.make_node("Conv", ["h", "w"], ["y"], name="conv_after_mystery", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_weight("w", 8, 3, 3, 3)])
    path = _save(graph, tmp_path / "custom.onnx", opsets=(("", 18), ("custom.ops", 1)))
    with pytest.raises(ExportError, match="Conv node 'conv_after_mystery'"):
        count_onnx(path)


def test_data_dependent_reshape_raises(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["h"], name="reshape"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="matmul_after_reshape")]
    graph = helper.make_graph(
        nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12]),
                       helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_weight("w", 12, 4)])
    with pytest.raises(ExportError, match="matmul_after_reshape"):
        count_onnx(_save(graph, tmp_path / "dyn.onnx"))


def test_count_onnx_missing_file(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        count_onnx(tmp_path / "nothing.onnx")


def test_count_torch_wrong_input_shape_is_a_model_error():
    with pytest.raises(ModelError, match=r"\(1, 4, 16, 16\)"):
        count_torch(PlainNet(), (4, 16, 16))


def test_count_torch_restores_mode_and_removes_hooks():
    model = PlainNet().train()
    count_torch(model, (3, 16, 16))
    assert model.training and model.bn1.training
    assert all(not m._forward_hooks for m in model.modules())
