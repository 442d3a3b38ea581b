"""Parity relative to the logits' scale, the TorchScript exporter, and export_artifact's fallback to it."""

from __future__ import annotations

from types import SimpleNamespace as NS

import onnx
import pytest
import torch

import compressor.export.onnx as onnx_export
from compressor.config import ExportConfig, GatesConfig
from compressor.errors import ExportError
from compressor.export import check_parity, export_onnx, onnx_input_shape
from compressor.export.artifacts import Images, export_artifact
from compressor.report import evaluate_gates

from .nets import DataDependent, FixedBatch, PlainNet, TinyResNet, randomize_bn

SHAPE = (3, 16, 16)


def images_for(cfg: ExportConfig, count: int = 6, shape=SHAPE) -> Images:
    torch.manual_seed(0)
    loaders = NS(calibration=[(torch.randn(count, *shape), torch.zeros(count))], calibration_loader=lambda n: [])
    return Images.of(loaders, cfg)


def plain(seed: int = 0) -> PlainNet:
    torch.manual_seed(seed)
    return randomize_bn(PlainNet())


def only_model_file(folder) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["model.onnx"]  # no spare, no temporary file


def test_large_logits_pass_the_relative_limit_but_not_the_absolute_one(tmp_path):
    """Logits of ~1e4 (the head scaled by 1e4): float32 rounding alone differs by more than 1e-4."""
    model = plain()
    with torch.no_grad():
        model.fc.weight.mul_(1e4)
        model.fc.bias.mul_(1e4)
    cfg = ExportConfig(parity_tolerance=1e-4, parity_rtol=1e-3)
    art = export_artifact(model, tmp_path / "model.onnx", images_for(cfg, count=16), cfg.opset)
    assert art.reference_max_abs > 1e3 and art.max_abs_diff > 1e-4
    assert art.exporter == "dynamo"  # it passed at once: no fallback
    run = NS(baseline=NS(onnx=art), tuned=None, exported=None, profiled=None)
    row = {g.name: g for g in evaluate_gates(GatesConfig(max_accuracy_drop=None), cfg, run)}["parity:baseline"]
    assert row.passed and row.limit == pytest.approx(1e-4 + 1e-3 * art.reference_max_abs)
    absolute = {g.name: g for g in evaluate_gates(GatesConfig(max_accuracy_drop=None), ExportConfig(parity_rtol=0), run)}
    assert not absolute["parity:baseline"].passed


@pytest.mark.parametrize("cls", [PlainNet, TinyResNet])
def test_torchscript_export_alone_is_a_valid_dynamic_batch_file(tmp_path, cls):
    torch.manual_seed(0)
    model = randomize_bn(cls())
    path = export_onnx(model, torch.randn(1, *SHAPE), tmp_path / "model.onnx", exporter="torchscript")
    assert only_model_file(tmp_path)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert "BatchNormalization" not in {node.op_type for node in proto.graph.node}  # folded in eval mode
    assert onnx_input_shape(path) == SHAPE
    parity = check_parity(model, path, torch.randn(7, *SHAPE))  # at batch 7 and 1
    assert parity.max_abs_diff < 1e-4 and parity.passed(1e-4, 1e-3)


def test_torchscript_refuses_a_trace_that_bakes_in_a_branch(tmp_path):
    with pytest.raises(ExportError, match=r"TorchScript exporter.*data-dependent") as info:
        export_onnx(DataDependent(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", exporter="torchscript")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_exporter_is_refused(tmp_path):
    with pytest.raises(ExportError, match="unknown ONNX exporter 'jit'; choose one of dynamo, torchscript"):
        export_onnx(PlainNet(), torch.randn(1, *SHAPE), tmp_path / "m.onnx", exporter="jit")


def test_a_failed_dynamo_export_falls_back_to_torchscript(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("dynamo cannot take this network")

    monkeypatch.setattr(onnx_export, "_dynamo", broken)
    model, cfg = plain(), ExportConfig()
    art = export_artifact(model, tmp_path / "model.onnx", images_for(cfg), cfg.opset)
    assert art.exporter == "torchscript" and art.max_abs_diff < 1e-4 and art.macs > 0
    assert only_model_file(tmp_path)
    onnx.checker.check_model(str(art.path), full_check=True)


def test_a_dynamo_file_that_fails_parity_is_replaced_by_the_torchscript_one(tmp_path, monkeypatch):
    real = onnx_export._dynamo

    def wrong(model, args, tmp, opset, names):  # exports a different network: parity fails by ~1
        other = plain()
        with torch.no_grad():
            other.fc.bias.add_(1.0)
        real(other, args, tmp, opset)

    monkeypatch.setattr(onnx_export, "_dynamo", wrong)
    model, cfg = plain(), ExportConfig()
    art = export_artifact(model, tmp_path / "model.onnx", images_for(cfg), cfg.opset)
    assert art.exporter == "torchscript" and art.max_abs_diff < 1e-4
    assert check_parity(model, art.path, torch.randn(3, *SHAPE)).max_abs_diff < 1e-4  # the file on disk is the good one
    assert only_model_file(tmp_path)


def test_a_dynamo_file_that_fails_parity_stays_when_torchscript_fails(tmp_path, monkeypatch):
    real = onnx_export._dynamo

    def wrong(model, args, tmp, opset, names):
        other = plain()
        with torch.no_grad():
            other.fc.bias.add_(1.0)
        real(other, args, tmp, opset, names)

    def broken(*args):
        raise RuntimeError("no TorchScript today")

    monkeypatch.setattr(onnx_export, "_dynamo", wrong)
    monkeypatch.setattr(onnx_export, "_torchscript", broken)
    cfg = ExportConfig()
    art = export_artifact(plain(), tmp_path / "model.onnx", images_for(cfg), cfg.opset)
    assert art.exporter == "dynamo" and art.max_abs_diff == pytest.approx(1.0, abs=1e-4)  # the gate will fail it
    assert only_model_file(tmp_path)


def test_both_exporters_failing_raise_one_line_with_both_reasons(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no TorchScript today\nsecond line")

    monkeypatch.setattr(onnx_export, "_torchscript", broken)
    cfg = ExportConfig()
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError) as info:  # FixedBatch: dynamo's graph comes out with a fixed batch
        export_artifact(FixedBatch(), path, images_for(cfg, count=2, shape=(3, 8, 8)), cfg.opset)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("ONNX export of FixedBatch failed with both exporters: dynamo: ")
    assert "batch dimension came out fixed at 2" in message
    assert "; torchscript: RuntimeError: no TorchScript today (hint:" in message
    assert list(tmp_path.iterdir()) == []


def test_data_dependent_network_fails_both_exporters(tmp_path):
    cfg = ExportConfig()
    with pytest.raises(ExportError, match=r"both exporters: dynamo: .*data-dependent.*; torchscript: .*Tracer"):
        export_artifact(DataDependent(), tmp_path / "model.onnx", images_for(cfg, shape=(3, 8, 8)), cfg.opset)
    assert list(tmp_path.iterdir()) == []
