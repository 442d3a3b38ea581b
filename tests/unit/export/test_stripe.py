"""Stripe-decomposed convolution: equal to the masked dense conv in PyTorch and onnxruntime; hybrid choice."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from compressor.errors import ExportError
from compressor.export import export_onnx
from compressor.export.hybrid import Candidate, LayerChoice, candidates, choose, export_stripe, rewrite, single_layer_models
from compressor.export.stripe import StripeConv2d, layout_for, stripe_mask

from .nets import PlainNet, randomize_bn

CASES = [  # (N, C, K, stride, padding, H, W, sparsity)
    (8, 5, 3, 1, 1, 7, 9, 0.5), (16, 16, 3, 2, 1, 8, 8, 0.9), (6, 4, 3, 2, 1, 9, 7, 0.75),
    (5, 3, 5, 1, 2, 6, 6, 0.6), (4, 3, 2, 1, 0, 5, 6, 0.3), (7, 3, 3, 1, 0, 6, 5, 0.8), (4, 4, 3, 2, 0, 10, 9, 0.5),
]


def masked_conv(case, seed=0) -> nn.Conv2d:
    n, c, k, stride, padding, _, _, sparsity = case
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(c, n, k, stride=stride, padding=padding, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.weight.mul_((torch.rand(n, 1, k, k, generator=gen) >= sparsity).float())
        conv.bias.copy_(torch.randn(n, generator=gen))
    return conv


def run_ort(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}k{}s{}p{}_{}x{}_{}".format(*c))
def test_stripe_module_equals_the_masked_dense_conv(case):
    conv = masked_conv(case)
    x = torch.randn(3, case[1], case[5], case[6])
    stripe = StripeConv2d.from_conv(conv, case[5], case[6])
    with torch.no_grad():
        expected, got = conv(x), stripe(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4
    assert stripe.layout.stripes == int(stripe_mask(conv.weight).sum())


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}k{}s{}p{}_{}x{}_{}".format(*c))
@pytest.mark.parametrize("batch", [1, 4])
def test_stripe_onnx_equals_the_dense_onnx_with_dynamic_batch(case, batch):
    conv = masked_conv(case, seed=1)
    layout = layout_for(conv.weight, case[3], case[4], case[5], case[6])
    cand = Candidate(node=None, layout=layout, bias="b", weight=conv.weight.detach().numpy())
    dense, stripe = single_layer_models(cand)
    onnx.checker.check_model(stripe)
    assert not {n.op_type for n in stripe.graph.node} & {"NonZero", "Where", "ScatterND", "ScatterElements", "Conv"}
    pads = [p for n in stripe.graph.node if n.op_type == "Pad"
            for p in onnx.numpy_helper.to_array(next(i for i in stripe.graph.initializer if i.name == n.input[1]))]
    assert min(pads) >= 0  # no negative Pad
    x = np.random.default_rng(batch).standard_normal((batch, case[1], case[5], case[6])).astype(np.float32)
    assert np.abs(run_ort(dense, x) - run_ort(stripe, x)).max() < 1e-4


def test_layout_orders_stripes_by_position_then_filter():
    weight = torch.zeros(3, 2, 3, 3)
    weight[2, :, 0, 0] = 1
    weight[0, :, 0, 0] = 2
    weight[1, :, 2, 1] = 3
    layout = layout_for(weight, 1, 1, 4, 4)
    assert layout.filters.tolist() == [0, 2, 1]
    assert [p[:2] for p in layout.positions] == [(0, 0), (2, 1)]
    assert layout.sparsity == pytest.approx(1 - 3 / 27)
    assert layout.accumulate().sum(axis=1).tolist() == [1, 1, 1]


def test_unsupported_geometry_is_refused_with_the_reason():
    with pytest.raises(ExportError, match="larger than 1x1"):
        layout_for(torch.ones(2, 2, 1, 1), 1, 0, 4, 4)
    with pytest.raises(ExportError, match="input grid"):
        layout_for(torch.ones(2, 2, 3, 3), 1, 2, 4, 4)  # outputs beyond the input grid


class ConvNet(nn.Module):
    """Three KxK convs (stride 1 and 2, BN folded at export, with and without bias) and the grouped/depthwise
    convs of PlainNet, which the stripe form must leave alone."""

    def __init__(self):
        super().__init__()
        self.plain = PlainNet()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 12, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.plain
        x = torch.relu(p.grouped(p.dw(torch.relu(p.bn1(p.conv1(x))))))
        x = torch.relu(self.conv3(torch.relu(self.bn2(self.conv2(x)))))
        return x.mean((2, 3))


def sparse_plain_net(sparsity: float) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_bn(ConvNet()).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                m.weight.mul_((torch.rand(m.out_channels, 1, *m.kernel_size) >= sparsity).float())
    return model


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_rewrite_of_an_exported_network_keeps_its_outputs(tmp_path):
    model = sparse_plain_net(0.7)
    path = tmp_path / "model.onnx"
    export_onnx(model, torch.randn(1, 3, 16, 16), path)
    result = export_stripe(path, tmp_path / "model.stripe.onnx", batch=2, threads=1, form="stripe")
    choices = result.choices
    assert result.graph_check is None  # forced form: nothing measured
    assert any(c.form == "stripe" for c in choices)
    stripe = onnx.load(str(tmp_path / "model.stripe.onnx"))
    onnx.checker.check_model(stripe)
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    assert np.abs(run_ort(onnx.load(str(path)), x) - run_ort(stripe, x)).max() < 1e-4
    with torch.no_grad():
        assert np.abs(model(torch.from_numpy(x)).numpy() - run_ort(stripe, x)).max() < 1e-4
    remaining = {n.input[1] for n in stripe.graph.node if n.op_type == "Conv"}
    assert not remaining & {c.name for c in choices if c.form == "stripe"}


def test_hybrid_follows_the_measurements_and_mixes_forms(monkeypatch, tmp_path):
    model = sparse_plain_net(0.8)
    path = tmp_path / "model.onnx"
    export_onnx(model, torch.randn(1, 3, 16, 16), path)
    dense = onnx.load(str(path))
    found, refused = candidates(dense)
    assert len(found) == 3 and set(refused) == {"plain.dw.weight", "plain.grouped.weight"}
    fake = {c.node.input[1]: (1.0, 0.5 if k % 2 == 0 else 0.97) for k, c in enumerate(found)}
    monkeypatch.setattr("compressor.export.hybrid.measure_layer", lambda cand, *a, **k: fake[cand.node.input[1]])
    choices = choose(found, batch=32, threads=1, min_gain=0.05)
    for choice in choices:  # 0.97 is faster, but not by the 5% margin: dense
        assert choice.form == ("stripe" if fake[choice.name][1] <= 0.95 else "dense")
        assert (choice.dense_ms, choice.stripe_ms) == fake[choice.name]
    mixed = rewrite(dense, found, choices)
    assert {n.input[1] for n in mixed.graph.node if n.op_type == "Conv"} >= {c.name for c in choices if c.form == "dense"}
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    assert np.abs(run_ort(dense, x) - run_ort(mixed, x)).max() < 1e-4


def test_layers_without_measurable_gain_or_stripes_stay_dense():
    conv = masked_conv((8, 4, 3, 1, 1, 6, 6, 0.0))
    cand = Candidate(node=type("N", (), {"input": ["x", "w"]})(), layout=layout_for(conv.weight, 1, 1, 6, 6),
                     bias=None, weight=conv.weight.detach().numpy())
    [choice] = choose([cand], batch=1, threads=1, min_sparsity=0.0)
    assert choice.form == "dense" and "sparsity" in choice.reason
    assert isinstance(choice, LayerChoice)


def test_macs_of_a_stripe_layer_are_counted_on_the_graph(tmp_path):
    from compressor.profiling.macs import count_onnx

    conv = masked_conv((16, 8, 3, 1, 1, 8, 8, 0.8))
    layout = layout_for(conv.weight, 1, 1, 8, 8)
    dense, stripe = single_layer_models(Candidate(None, layout, None, conv.weight.detach().numpy()))
    for name, model in (("dense", dense), ("stripe", stripe)):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
    s, hw = layout.stripes, 8 * 8
    assert count_onnx(tmp_path / "dense.onnx").macs == 16 * 8 * 9 * hw
    assert count_onnx(tmp_path / "stripe.onnx").macs == s * 8 * hw + 16 * s * hw  # stripe GEMM + 0/1 accumulation


def test_whole_graph_check_demotes_stripes_unless_the_graph_is_min_gain_faster(monkeypatch, tmp_path):
    model = sparse_plain_net(0.8)
    path = tmp_path / "model.onnx"
    export_onnx(model, torch.randn(1, 3, 16, 16), path)
    monkeypatch.setattr("compressor.export.hybrid.measure_layer", lambda cand, *a, **k: (1.0, 0.6))  # 40% each
    graph_times = iter([(1.0, 1.2), (1.0, 1.1), (1.0, 1.05)])  # the whole hybrid graph is never faster
    monkeypatch.setattr("compressor.export.hybrid.measure_models", lambda *a, **k: next(graph_times))
    result = export_stripe(path, tmp_path / "model.stripe.onnx", batch=4, threads=1)
    assert all(c.form == "dense" for c in result.choices)
    assert result.graph_check["accepted"] is None and len(result.graph_check["tried"]) == 2  # 5%, then 25%
    assert any("whole hybrid graph not 5% faster than dense-slim" in c.reason for c in result.choices)

    graph_times = iter([(1.0, 0.97), (1.0, 0.99)])  # faster, but within the 5% noise margin: a tie stays dense
    monkeypatch.setattr("compressor.export.hybrid.measure_models", lambda *a, **k: next(graph_times))
    result = export_stripe(path, tmp_path / "model.stripe.onnx", batch=4, threads=1)
    assert all(c.form == "dense" for c in result.choices) and result.graph_check["accepted"] is None

    graph_times = iter([(1.0, 0.8)])
    monkeypatch.setattr("compressor.export.hybrid.measure_models", lambda *a, **k: next(graph_times))
    result = export_stripe(path, tmp_path / "model.stripe.onnx", batch=4, threads=1)
    assert sum(c.form == "stripe" for c in result.choices) == 3 and result.graph_check["accepted"]["hybrid_ms"] == 0.8
