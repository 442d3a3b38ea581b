"""Precision variants of an exported ONNX file: FP16 (float32 I/O) and symmetric INT8 QDQ, on onnxruntime CPU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from compressor.errors import ExportError
from compressor.export import export_onnx
from compressor.export.precision import make_variant, onnx_parity, run_onnx, to_fp16, to_int8_qdq

from .nets import PlainNet, TinyResNet, randomize_bn

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Both tiny nets exported once, with their FP16 and INT8 variants: name -> {precision: path}."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out = {}
    for cls in (PlainNet, TinyResNet):
        folder = tmp_path_factory.mktemp(cls.__name__)
        src = export_onnx(randomize_bn(cls()), torch.randn(1, *SHAPE), folder / "model.onnx")
        calibration = [rng.standard_normal((16, *SHAPE)).astype(np.float32) for _ in range(4)]
        out[cls.__name__] = {"fp32": src, "fp16": to_fp16(src, folder / "model.fp16.onnx"),
                             "int8": to_int8_qdq(src, folder / "model.int8.onnx", calibration)}
    return out


def images(n: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def elem_type(value) -> int:
    return value.type.tensor_type.elem_type


@pytest.mark.parametrize("name", ["PlainNet", "TinyResNet"])
def test_fp16_has_half_weights_and_float_io(exported, name):
    path = exported[name]["fp16"]
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    floats = [init for init in graph.initializer if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(init.data_type == TensorProto.FLOAT16 for init in floats)
    assert [(v.name, elem_type(v)) for v in graph.input] == [("input", TensorProto.FLOAT)]
    assert [(v.name, elem_type(v)) for v in graph.output] == [("logits", TensorProto.FLOAT)]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch still symbolic
    convs = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    assert convs and all(init.data_type == TensorProto.FLOAT16 for init in graph.initializer if init.name in convs)
    internal = [elem_type(v) for v in graph.value_info if elem_type(v) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert internal.count(TensorProto.FLOAT16) > internal.count(TensorProto.FLOAT)  # compute is half, not just weights


@pytest.mark.parametrize("name", ["PlainNet", "TinyResNet"])
def test_fp16_matches_fp32_within_half_precision(exported, name):
    paths = exported[name]
    x = images()
    reference = run_onnx(paths["fp32"], x)
    got = run_onnx(paths["fp16"], x)
    assert got.dtype == np.float32 and got.shape == reference.shape
    scale = float(np.abs(reference).max())
    diff = onnx_parity(paths["fp32"], paths["fp16"], x)
    assert 0.0 < diff < 5e-3 * max(scale, 1.0)  # not bit-identical (really half), but close
    np.testing.assert_allclose(run_onnx(paths["fp16"], x[:1]), got[:1], atol=1e-3)  # dynamic batch kept


@pytest.mark.parametrize("name", ["PlainNet", "TinyResNet"])
def test_int8_is_symmetric_qdq(exported, name):
    path = exported[name]["int8"]
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    graph = model.graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
    inits = {init.name: init for init in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(zp.data_type == TensorProto.INT8 for zp in zero_points)
    assert all(not numpy_helper.to_array(zp).any() for zp in zero_points)
    dequantized = {inits[n.input[0]].data_type for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert dequantized == {TensorProto.INT8}  # int8 weights; no INT32 bias behind a DequantizeLinear (TensorRT rejects it)
    per_channel = [inits[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert any(len(scale.dims) == 1 and scale.dims[0] > 1 for scale in per_channel)
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
    assert [(v.name, elem_type(v)) for v in graph.input] == [("input", TensorProto.FLOAT)]


@pytest.mark.parametrize("name", ["PlainNet", "TinyResNet"])
def test_int8_runs_on_cpu_close_to_fp32(exported, name):
    paths = exported[name]
    x = images()
    reference, got = run_onnx(paths["fp32"], x), run_onnx(paths["int8"], x)
    assert got.shape == reference.shape and np.isfinite(got).all()
    spread = float(reference.max() - reference.min())
    error = float(np.abs(got - reference).max())
    assert 0.0 < error < 0.1 * spread
    assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.85
    assert len(run_onnx(paths["int8"], x[:3])) == 3  # dynamic batch survives quantization


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(exported, tmp_path, method):
    src = exported["PlainNet"]["fp32"]
    calibration = (torch.randn(8, *SHAPE) for _ in range(3))  # torch tensors, from a generator
    path = to_int8_qdq(src, tmp_path / "m.onnx", calibration, method=method, per_channel=False)
    x = images()
    reference = run_onnx(src, x)
    assert onnx_parity(src, path, x) < 0.2 * float(reference.max() - reference.min())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_empty_calibration_is_a_clear_error(exported, tmp_path):
    with pytest.raises(ExportError, match="calibration .* no images"):
        to_int8_qdq(exported["PlainNet"]["fp32"], tmp_path / "m.onnx", [])
    assert not any(tmp_path.iterdir())


def test_bad_calibration_shape_method_and_source(exported, tmp_path):
    src = exported["PlainNet"]["fp32"]
    with pytest.raises(ExportError, match=r"batch 0 has shape \(4, 3, 8, 8\).*N x 3 x 16 x 16"):
        to_int8_qdq(src, tmp_path / "m.onnx", [np.zeros((4, 3, 8, 8), np.float32)])
    with pytest.raises(ExportError, match="NaN"):
        to_int8_qdq(src, tmp_path / "m.onnx", [np.full((2, *SHAPE), np.nan, np.float32)])
    with pytest.raises(ExportError, match="did you mean 'entropy'"):
        to_int8_qdq(src, tmp_path / "m.onnx", [images(2)], method="entropi")
    with pytest.raises(ExportError, match="not found"):
        to_fp16(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    assert not any(tmp_path.iterdir())


def test_make_variant(exported, tmp_path):
    src = exported["PlainNet"]["fp32"]
    assert make_variant(src, "fp32", tmp_path).path == src
    fp16 = make_variant(src, "fp16", tmp_path)
    assert fp16.precision == "fp16" and fp16.path == tmp_path / "model.fp16.onnx" and fp16.path.is_file()
    int8 = make_variant(src, "int8", tmp_path, calibration=[images(8)])
    assert int8.path == tmp_path / "model.int8.onnx" and int8.path.is_file()
    with pytest.raises(ExportError, match="calibration"):
        make_variant(src, "int8", tmp_path)
    with pytest.raises(ExportError, match="did you mean 'fp16'"):
        make_variant(src, "fp61", tmp_path)


def test_uint8_activations_are_asymmetric_and_int8_symmetric(exported, tmp_path):
    src = exported["PlainNet"]["fp32"]
    batches = [np.random.default_rng(i).standard_normal((4, *SHAPE)).astype(np.float32) + 1.0 for i in range(3)]
    for kind, dtype in (("int8", np.int8), ("uint8", np.uint8)):
        path = to_int8_qdq(src, tmp_path / f"{kind}.onnx", batches, activations=kind)
        assert np.abs(run_onnx(path, images(8)) - run_onnx(src, images(8))).max() < 0.5
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        activation_zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"
                          and n.input[2] in inits]
        assert activation_zps and all(zp.dtype == dtype for zp in activation_zps)
        if kind == "int8":
            assert all((zp == 0).all() for zp in activation_zps)
        else:
            assert any((zp != 0).any() for zp in activation_zps)  # shifted inputs: a real zero point
