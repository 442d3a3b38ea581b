"""Backend availability, backend names, and checking files and backends before anything is timed."""

from __future__ import annotations

import sys

import onnx
import onnxruntime
import pytest
import torch

from compressor.errors import ProfilingError
from compressor.export import export_onnx
from compressor.profiling import backends, providers
from compressor.profiling.backends import (
    BACKENDS,
    available_backends,
    backend_problem,
    ort_session,
    require_backend,
)
from compressor.profiling.latency import onnx_fixed_batch, plan_targets, profile_onnxruntime

from ..export.nets import PlainNet

ORT_GPU = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def model_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    return export_onnx(PlainNet(), torch.randn(1, 3, 8, 8), folder / "plain.onnx")


@pytest.fixture(scope="module")
def fixed_onnx(model_onnx):
    proto = onnx.load(str(model_onnx))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    path = model_onnx.with_name("fixed.onnx")
    onnx.save(proto, str(path))
    return path


def test_every_backend_is_reported_and_cpu_ones_are_usable():
    found = available_backends()
    assert list(found) == list(BACKENDS)
    assert found["onnxruntime-cpu"] is None and found["torch-cpu"] is None
    for name, problem in found.items():
        assert problem is None or ("pip install" in problem or "CUDA" in problem), (name, problem)


@pytest.mark.skipif(ORT_GPU, reason="onnxruntime-gpu is installed: the CUDA provider is available")
def test_missing_onnxruntime_gpu_names_the_extra():
    problem = backend_problem("onnxruntime-cuda")
    assert "onnxruntime-gpu" in problem and "pip install 'compressor[gpu]'" in problem
    with pytest.raises(ProfilingError, match="onnxruntime-cuda is not available here: needs onnxruntime-gpu"):
        require_backend("onnxruntime-cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_torch_cuda_without_gpu_says_why():
    assert "needs a CUDA GPU" in backend_problem("torch-cuda-graph")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the provider may really start")
def test_provider_listed_but_unable_to_start_is_not_available(monkeypatch):
    """Bug B3: onnxruntime-gpu on a machine without a GPU (or without the CUDA/cuDNN libraries) lists the CUDA and
    TensorRT providers, and a session on them silently falls back to CPU. Listing them is not being able to start
    them: the fail-fast check must say so before a run, not the profile stage after hours of fine-tuning. Simulated
    here by listing the providers on CPU onnxruntime, whose session on them falls back to CPU just the same."""
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    for backend, provider in (("onnxruntime-cuda", "CUDAExecutionProvider"),
                              ("onnxruntime-tensorrt", "TensorrtExecutionProvider")):
        problem = backend_problem(backend)
        assert problem is not None and f"lists {provider} but could not start it" in problem, problem
        assert "fell back to CPUExecutionProvider" in problem and "GPU" in problem
        with pytest.raises(ProfilingError, match=f"{backend} is not available here: onnxruntime"):
            require_backend(backend)
    assert backend_problem("onnxruntime-cpu") is None


def test_provider_listed_and_started_is_available(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(providers, "provider_started", lambda chain: chain[0])
    assert backend_problem("onnxruntime-cuda") is None


def test_provider_probe_starts_one_session_per_chain(monkeypatch):
    sessions = []
    real = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: sessions.append(a) or real(*a, **k))
    providers.provider_started.cache_clear()
    try:
        for _ in range(3):
            assert providers.provider_started(("CPUExecutionProvider",)) == "CPUExecutionProvider"
    finally:
        providers.provider_started.cache_clear()
    assert len(sessions) == 1 and isinstance(sessions[0][0], bytes)  # an in-memory model, no file written


@pytest.mark.skipif(ORT_GPU, reason="onnxruntime-gpu is installed: the CUDA provider would really start")
def test_provider_that_falls_back_to_cpu_is_an_error(monkeypatch, model_onnx):
    """onnxruntime silently runs on CPU when a listed provider cannot start: that must not pass as CUDA figures."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.warns(UserWarning), pytest.raises(ProfilingError, match="could not start CUDAExecutionProvider"):
        ort_session(model_onnx, "onnxruntime-cuda", threads=1)


@pytest.mark.parametrize(("name", "guess"), [("onnxruntime-gpu", "onnxruntime-cuda"), ("trt", "tensorrt"),
                                           ("torch-cuda-graphs", "torch-cuda-graph"), ("CPU", "onnxruntime-cpu")])
def test_unknown_backend_lists_choices(name, guess):
    with pytest.raises(ProfilingError, match=rf"unknown latency backend '{name}' \(did you mean '{guess}'\? choices: "):
        backend_problem(name)


def test_profile_onnxruntime_refuses_an_unknown_backend(model_onnx):
    with pytest.raises(ProfilingError, match="did you mean 'onnxruntime-cpu'"):
        profile_onnxruntime({"m": model_onnx}, [1], 1, 0, 1, 1, backend="onnxruntime-cp")


def test_plan_defaults_and_all(model_onnx):
    assert [t.backend for t in plan_targets([model_onnx], [], [1, 8])] == ["onnxruntime-cpu"]
    usable = [b for b in backends.ONNX_BACKENDS if backend_problem(b) is None]
    targets = plan_targets([model_onnx], ["all"], [1])
    assert [t.backend for t in targets] == usable and {t.artifact for t in targets} == {"plain"}


def test_plan_labels_colliding_stems_by_path(model_onnx, tmp_path):
    other = tmp_path / "plain.onnx"
    other.write_bytes(model_onnx.read_bytes())
    labels = [t.artifact for t in plan_targets([model_onnx, other], [], [1])]
    assert labels == [str(model_onnx), str(other)]


def test_fixed_batch(fixed_onnx, model_onnx):
    assert onnx_fixed_batch(fixed_onnx) == 2 and onnx_fixed_batch(model_onnx) is None
    assert len(plan_targets([fixed_onnx], [], [2])) == 1
    with pytest.raises(ProfilingError, match=r"fixed.onnx has a fixed batch of 2: profile it with --batch 2"):
        plan_targets([fixed_onnx], [], [1, 2])


@pytest.mark.parametrize(("make", "backend_names", "message"), [
    (lambda m, t: t / "nope.onnx", [], "artifact not found"),
    (lambda m, t: t, [], "is a folder"),
    (lambda m, t: _write(t / "junk.onnx", b"\x00not onnx at all"), [], "is not a readable ONNX model"),
    (lambda m, t: m, ["torch-cuda"], "times a PyTorch nn.Module"),
    (lambda m, t: m, ["tensorrt"], "times TensorRT engines"),
    (lambda m, t: m, ["onnxruntime-cpu", "onnxruntim-cuda"], "did you mean 'onnxruntime-cuda'"),
])
def test_plan_rejects(model_onnx, tmp_path, make, backend_names, message):
    with pytest.raises(Exception, match=message) as info:
        plan_targets([make(model_onnx, tmp_path)], backend_names, [1])
    assert getattr(info.value, "exit_code", None) == 2 and "\n" not in str(info.value)


@pytest.mark.skipif(backend_problem("tensorrt") is None, reason="TensorRT and a GPU are present")
def test_engine_without_tensorrt_gives_the_install_hint(tmp_path):
    engine = _write(tmp_path / "model.engine", b"not really an engine")
    with pytest.raises(ProfilingError, match=r"tensorrt is not available here: it needs the Python package 'tensorrt'.*"
                                             r"pip install 'compressor\[trt\]'"):
        plan_targets([engine], [], [1])


def test_tensorrt_bindings_without_their_libraries_are_named_not_called_missing(monkeypatch):
    """B5 on the profiling side: the backend check says what the export check says (the real bindings' case is in
    tests/unit/export/test_tensorrt_bindings.py)."""
    import builtins

    real_import = builtins.__import__

    def no_parser_library(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("libnvonnxparser.so.10: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_parser_library)
    problem = backend_problem("tensorrt")
    assert "libnvonnxparser.so.10" in problem and "not installed" not in problem


def test_the_tensorrt_provider_gets_precision_and_engine_cache_options(tmp_path, monkeypatch):
    from compressor.profiling.providers import session_providers

    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path))
    chain = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    for name, fp16, int8 in (("model.onnx", "False", "False"), ("model.fp16.onnx", "True", "False"),
                             ("model.int8.onnx", "False", "True"), ("model.int8.tensorrt.onnx", "False", "True")):
        (trt, options), *rest = session_providers(chain, tmp_path / name)
        assert trt == "TensorrtExecutionProvider" and rest == chain[1:]
        assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)
        assert options["trt_engine_cache_path"] == str(tmp_path / "ort-tensorrt") and options["trt_engine_cache_enable"] == "True"
    assert session_providers(["CPUExecutionProvider"], tmp_path / "model.onnx") == ["CPUExecutionProvider"]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
