"""The install extras and the GPU image agree with the CUDA-major facts of docker/README.md (bugs B1, B2, B6 of
issue 15): torch 2.13 has CUDA wheels for cu126 and cu130 only; onnxruntime-gpu 1.27 and later are CUDA 13
builds; ``tensorrt>=10`` resolves to TensorRT 11 for CUDA 13."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
GPU_IMAGE = (REPO / "docker" / "Dockerfile.gpu").read_text()


def spec(extra: str) -> Requirement:
    (line,) = EXTRAS[extra]
    return Requirement(line)


def test_onnxruntime_gpu_extras_follow_the_cuda_major():
    cu12, cu13 = spec("gpu-cu12"), spec("gpu-cu13")
    assert cu12.name == cu13.name == "onnxruntime-gpu"
    assert "1.26.0" in cu12.specifier and "1.27.0" not in cu12.specifier and "1.31.1" not in cu12.specifier
    assert "1.27.0" in cu13.specifier and "1.26.0" not in cu13.specifier
    assert spec("gpu") == cu12  # the plain extra is the CUDA 12 one


def test_tensorrt_extras_pin_the_major_version():
    assert spec("trt10").name == "tensorrt-cu12" and "10.3.0" in spec("trt10").specifier
    assert "11.4.0.106" not in spec("trt10").specifier
    assert "11.4.0.106" in spec("trt11").specifier and "10.16.1.11" not in spec("trt11").specifier
    assert spec("trt") == spec("trt10")


def test_gpu_image_uses_a_torch_index_that_has_torch_2_13_and_the_matching_onnxruntime():
    index = re.search(r"ARG TORCH_INDEX=\S+/whl/(cu\d+)", GPU_IMAGE).group(1)
    assert index in ("cu126", "cu130")
    extra = re.search(r"ARG GPU_EXTRA=(\S+)", GPU_IMAGE).group(1)
    assert extra == ("gpu-cu12" if index == "cu126" else "gpu-cu13")
    assert "onnxruntime-gpu>=1.20" not in GPU_IMAGE
