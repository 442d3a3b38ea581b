"""plot_latency writes a real, readable PNG atomically, and says which extra to install without matplotlib."""

from __future__ import annotations

import sys

import pytest

from compressor.errors import MissingDependencyError, ProfilingError
from compressor.profiling import LatencyStats
from compressor.profiling.plot import plot_latency

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(artifact: str, backend: str, batch: int, p50: float) -> LatencyStats:
    return LatencyStats(artifact=artifact, backend=backend, batch=batch, threads=2, p50_ms=p50, p90_ms=p50 * 1.2,
                        p99_ms=p50 * 1.5, mean_ms=p50 * 1.1, throughput=batch / (p50 / 1000), warmup=2,
                        iterations=10, repeats=3, round_p50_ms=(p50, p50, p50), versions={"cpu": "test cpu"})


def _figures() -> list[LatencyStats]:
    return [_stats(name, backend, b, scale * slower * (0.5 + b * 0.1))
            for name, scale in (("baseline", 1.0), ("pruned", 0.6))
            for backend, slower in (("onnxruntime-cpu", 1.0), ("torch-cpu", 1.4)) for b in (1, 8, 32)]


def test_writes_a_readable_png(tmp_path):
    from matplotlib import image

    path = plot_latency(_figures(), tmp_path / "sub" / "latency.png", title="baseline vs pruned")
    assert path == tmp_path / "sub" / "latency.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert height > 300 and width > 800
    assert pixels[..., :3].std() > 0.05                      # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == ["latency.png"]  # no temporary file left behind


def test_single_batch_and_single_series(tmp_path):
    path = plot_latency([_stats("m", "onnxruntime-cpu", 4, 2.0)], tmp_path / "one.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_does_not_touch_pyplot_state(tmp_path):
    before = sys.modules.get("matplotlib.pyplot")
    plot_latency(_figures()[:3], tmp_path / "p.png")
    assert sys.modules.get("matplotlib.pyplot") is before


def test_empty_is_an_error(tmp_path):
    with pytest.raises(ProfilingError, match="no latency figures"):
        plot_latency([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_names_the_plot_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes `import matplotlib.figure` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'compressor\[plot\]'"):
        plot_latency(_figures(), tmp_path / "x.png")
