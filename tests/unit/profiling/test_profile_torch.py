"""profile_torch: the same statistics and interleaving as onnxruntime, on CPU here; CUDA paths are marked gpu."""

from __future__ import annotations

import json

import onnxruntime
import pytest
import torch
from torch import nn

from compressor.errors import ProfilingError
from compressor.export import export_onnx
from compressor.profiling import LatencyStats
from compressor.profiling.latency import profile_onnxruntime, profile_torch

from ..export.nets import PlainNet, SingleConv

CALLS: list[str] = []
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and a CUDA build of torch")


class Recording(nn.Module):
    """Appends its name and batch to CALLS on every forward (a module-level list survives the deep copy)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(f"{self.name}{x.shape[0]}")
        return self.conv(x).mean((2, 3))


def test_cpu_stats_are_sane():
    models = {"plain": PlainNet(), "conv": SingleConv()}
    stats = profile_torch(models, (3, 8, 8), [1, 4], "cpu", warmup=1, iterations=3, repeats=2)
    assert [(s.artifact, s.batch) for s in stats] == [("plain", 1), ("plain", 4), ("conv", 1), ("conv", 4)]
    for s in stats:
        assert (s.backend, s.device, s.threads) == ("torch-cpu", "cpu", torch.get_num_threads())
        assert (s.warmup, s.iterations, s.repeats) == (1, 3, 2)
        assert 0 < s.p50_ms <= s.p90_ms <= s.p99_ms and s.mean_ms > 0
        assert len(s.round_p50_ms) == 2 and s.round_spread >= 0
        assert s.throughput == pytest.approx(s.batch / (s.p50_ms / 1000.0))
        assert s.versions["torch"] == torch.__version__ and s.versions["cores_available"] >= 1
        assert {"device", "round_spread", "p50_ms", "versions"} <= set(s.to_json())
        back = LatencyStats.from_json(json.loads(json.dumps(s.to_json())))
        assert (back.artifact, back.backend, back.device, back.batch) == (s.artifact, s.backend, s.device, s.batch)
        assert back.p50_ms == pytest.approx(s.p50_ms, abs=1e-6) and len(back.round_p50_ms) == 2


def test_timed_runs_are_interleaved_and_rotate():
    CALLS.clear()
    profile_torch({"a": Recording("a"), "b": Recording("b")}, (3, 5, 5), [1, 2], "cpu", warmup=1, iterations=2,
                  repeats=2)
    warmup, timed = CALLS[:4], CALLS[4:]
    assert warmup == ["a1", "a2", "b1", "b2"]
    blocks = [timed[i] for i in range(0, len(timed), 2)]  # one entry per block of `iterations` runs
    assert timed[::2] == timed[1::2]                       # each block runs one model `iterations` times
    assert blocks == ["a1", "b1", "a2", "b2", "b1", "a1", "b2", "a2"]


def test_callers_model_is_left_alone():
    model = PlainNet().train()
    profile_torch({"m": model}, (3, 8, 8), [2], "cpu", warmup=0, iterations=1, repeats=1)
    assert model.training and next(model.parameters()).device.type == "cpu"


def test_cuda_graphs_need_cuda():
    with pytest.raises(ProfilingError, match="CUDA graphs need a CUDA device"):
        profile_torch({"m": SingleConv()}, (3, 8, 8), [1], "cpu", 0, 1, 1, cuda_graphs=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ProfilingError, match="torch-cuda is not available here: needs a CUDA GPU"):
        profile_torch({"m": SingleConv()}, (3, 8, 8), [1], "cuda", 0, 1, 1)


def test_rejects_bad_counts():
    with pytest.raises(ValueError):
        profile_torch({"m": SingleConv()}, (3, 8, 8), [0], "cpu", 0, 1, 1)


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_eager_and_graphs(graphs):
    torch.backends.cudnn.benchmark = False
    stats = profile_torch({"plain": PlainNet()}, (3, 16, 16), [1, 8], "cuda", warmup=3, iterations=5, repeats=2,
                          cuda_graphs=graphs)
    assert [s.backend for s in stats] == ["torch-cuda-graph" if graphs else "torch-cuda"] * 2
    assert all(s.device.startswith("cuda") and 0 < s.p50_ms <= s.p99_ms and s.versions["gpu"] for s in stats)
    assert torch.backends.cudnn.benchmark is False  # restored after timing


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
                    reason="needs onnxruntime-gpu (CUDAExecutionProvider)")
@CUDA
def test_onnxruntime_cuda_with_io_binding(tmp_path):
    path = export_onnx(PlainNet(), torch.randn(1, 3, 16, 16), tmp_path / "plain.onnx")
    stats = profile_onnxruntime({"plain": path}, [1, 8], 1, 2, 5, 2, backend="onnxruntime-cuda")
    assert all(s.backend == "onnxruntime-cuda" and s.device == "cuda:0" for s in stats)
    assert stats[0].versions["providers"][0] == "CUDAExecutionProvider"
