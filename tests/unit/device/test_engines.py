"""Which ONNX file each TensorRT build on the device parses (the builds themselves need a GPU: tests/gpu)."""

from __future__ import annotations

import pytest
import torch

from compressor.artifacts import RunLayout
from compressor.config import load_recipe
from compressor.device.engines import engine_source
from compressor.device.folder import FinishedRun
from compressor.errors import ExportError
from compressor.export.onnx import export_onnx

from ..export.nets import PlainNet

QUICKSTART = "recipes/quickstart.yaml"


@pytest.fixture
def run(tmp_path):
    layout = RunLayout(tmp_path)
    onnx = export_onnx(PlainNet().eval(), torch.randn(1, 3, 16, 16), layout.pruned_onnx)
    return lambda **files: FinishedRun(layout=layout, recipe=load_recipe(QUICKSTART), report={},
                                       files={"pruned_onnx": onnx, **files})


def test_fp32_builds_parse_the_export_and_fp16_builds_get_a_converted_file(run, tmp_path):
    finished = run()
    assert engine_source(finished, "pruned", "fp32", tmp_path / "engines") == finished.files["pruned_onnx"]
    fp16 = engine_source(finished, "pruned", "fp16", tmp_path / "engines")
    assert fp16.is_file() and fp16.parent == tmp_path / "engines" / "pruned"  # written on the device, not in export/


def test_an_existing_fp16_variant_is_reused(run, tmp_path):
    variant = tmp_path / "model.fp16.onnx"
    variant.write_bytes(b"x")
    assert engine_source(run(pruned_fp16=variant), "pruned", "fp16", tmp_path / "engines") == variant


def test_int8_needs_a_symmetric_qdq_file_from_the_run(run, tmp_path):
    asymmetric = tmp_path / "model.int8.onnx"
    asymmetric.write_bytes(b"x")  # the recipe's default int8 activations are uint8: not a TensorRT graph
    with pytest.raises(ExportError, match="symmetric INT8 QDQ graph"):
        engine_source(run(pruned_int8=asymmetric), "pruned", "int8", tmp_path / "engines")
    finished = run()
    symmetric = finished.files["pruned_onnx"].with_suffix(".int8.tensorrt.onnx")  # what a TensorRT run wrote
    symmetric.write_bytes(b"x")
    assert engine_source(finished, "pruned", "int8", tmp_path / "engines") == symmetric
