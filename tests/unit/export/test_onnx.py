"""ONNX export: single self-contained file, dynamic batch, parity, atomicity, errors, quiet exporter."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

from compressor.errors import ExportError
from compressor.export import check_parity, export_onnx, onnx_input_shape

from .nets import DataDependent, FixedBatch, PlainNet, TinyResNet, randomize_bn

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Both tiny nets exported once for the module: name -> (model, path)."""
    torch.manual_seed(0)
    out = {}
    for cls in (PlainNet, TinyResNet):
        model = randomize_bn(cls())
        path = tmp_path_factory.mktemp(cls.__name__) / "model.onnx"
        export_onnx(model, torch.randn(1, *SHAPE), path)
        out[cls.__name__] = (model, path)
    return out


@pytest.mark.parametrize("name", ["PlainNet", "TinyResNet"])
def test_export_writes_one_checked_file_with_dynamic_batch(exported, name):
    _, path = exported[name]
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .data side file, no temp file
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == list(SHAPE)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 18
    assert onnx_input_shape(path) == SHAPE


@pytest.mark.parametrize("name", ["PlainNet", "TinyResNet"])
def test_parity_at_batch_5_and_1(exported, name):
    model, path = exported[name]
    images = torch.randn(5, *SHAPE)
    parity = check_parity(model, path, images)
    assert 0.0 <= parity.max_abs_diff < 1e-4
    with torch.no_grad():
        assert parity.reference_max_abs == pytest.approx(float(model.eval()(images).abs().max()))
    assert parity == check_parity(model, path, images)  # deterministic


def test_batchnorm_is_folded_into_conv(exported):
    proto = onnx.load(str(exported["TinyResNet"][1]))
    ops = {node.op_type for node in proto.graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops


def test_parity_detects_a_different_model(exported, tmp_path):
    model, path = exported["PlainNet"]
    other = randomize_bn(PlainNet())
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        other.fc.bias.add_(1.0)
    assert check_parity(other, path, torch.randn(3, *SHAPE)).max_abs_diff == pytest.approx(1.0, abs=1e-4)


def test_export_restores_training_flags(tmp_path):
    model = randomize_bn(PlainNet()).train()
    model.bn1.eval()
    export_onnx(model, torch.randn(2, *SHAPE), tmp_path / "m.onnx")
    assert model.training and model.conv1.training and not model.bn1.training
    check_parity(model, tmp_path / "m.onnx", torch.randn(2, *SHAPE))
    assert model.training and not model.bn1.training


def test_export_prints_nothing(tmp_path, capfd, recwarn):
    export_onnx(PlainNet(), torch.randn(1, *SHAPE), tmp_path / "quiet.onnx")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert len(recwarn) == 0


def test_data_dependent_control_flow_raises_one_line_and_leaves_no_file(tmp_path, capfd):
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(DataDependent(), torch.randn(1, 3, 8, 8), path)
    message = str(info.value)
    assert "\n" not in message
    assert "DataDependent" in message and "data-dependent" in message and "hint:" in message
    assert "if y.sum() > 0" in message  # points at the offending line of forward
    assert list(tmp_path.iterdir()) == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no progress lines, no partial FX graph dump


def test_failed_export_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(DataDependent(), torch.randn(1, 3, 8, 8), path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_hard_coded_batch_size_is_rejected(tmp_path):
    path = tmp_path / "fixed.onnx"
    with pytest.raises(ExportError, match="batch dimension came out fixed at 2"):
        export_onnx(FixedBatch(), torch.randn(1, 3, 8, 8), path)
    assert not path.exists()


def test_bad_arguments_raise_export_error(tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(PlainNet(), torch.randn(1, *SHAPE), tmp_path / "a.onnx", opset=17)
    with pytest.raises(ExportError, match="N x C x H x W"):
        export_onnx(PlainNet(), torch.randn(*SHAPE), tmp_path / "b.onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_input_shape_errors(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        onnx_input_shape(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all")
    with pytest.raises(ExportError):
        onnx_input_shape(junk)


def test_importing_export_and_profiling_stays_light():
    code = ("import sys, compressor.export, compressor.profiling; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
