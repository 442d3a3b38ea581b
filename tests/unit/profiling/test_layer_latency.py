"""Single-layer and chain graphs: they run with the shapes they claim; their times are cached on disk."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from compressor.profiling import layer_latency
from compressor.profiling.layer_latency import BlockSpec, LayerSpec, LayerTimer, layer_onnx, out_hw, torch_layer

CONV = LayerSpec("conv", 8, 16, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (9, 9), False)
DEPTHWISE = LayerSpec("conv", 8, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (5, 5), True, True)


def run(spec, batch=2):
    session = ort.InferenceSession(layer_onnx(spec).SerializeToString(), providers=["CPUExecutionProvider"])
    first = spec.stem[0] if isinstance(spec, BlockSpec) else spec
    x = np.random.rand(batch, first.fed_from or first.cin, *first.in_hw).astype(np.float32)
    return session.run(None, {"x": x})


def test_single_layers_fed_layers_and_depthwise_convs_run_with_their_shapes():
    assert out_hw(CONV) == (5, 5)
    assert run(CONV)[0].shape == (2, 16, 5, 5)
    assert run(CONV.fed(32))[0].shape == (2, 16, 5, 5)  # behind a 1x1 conv from 32 channels
    assert run(DEPTHWISE.at(6, 6))[0].shape == (2, 6, 5, 5)  # groups follow the width
    assert CONV.fed(32).feeder().key != CONV.key and "fed32" in CONV.fed(32).key


def test_a_chain_runs_producer_depthwise_and_pooled_heads():
    head = LayerSpec("conv", 8, 4, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (2, 2), False)
    producer = LayerSpec("conv", 3, 8, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (4, 4), False)
    block = BlockSpec(stem=(producer, replace(DEPTHWISE, in_hw=(4, 4))), heads=(head,), pools=(2,))
    outputs = run(block)
    assert [o.shape for o in outputs] == [(2, 4, 2, 2)]
    module = torch_layer(block)
    assert module(torch.randn(2, 3, 4, 4)).shape == (2, 4, 2, 2)
    assert "pool2" in block.key


def test_times_are_cached_per_backend_machine_and_batch(tmp_path, monkeypatch):
    specs = [CONV, CONV.at(8, 8)]
    first = LayerTimer("onnxruntime-cpu", 2, 1, tmp_path)
    times = first.ms(specs)
    assert first.measured == 2 and all(t > 0 for t in times.values())
    again = LayerTimer("onnxruntime-cpu", 2, 1, tmp_path)
    assert again.ms(specs) == times and again.measured == 0  # read back, nothing timed
    assert LayerTimer("onnxruntime-cpu", 4, 1, tmp_path).path != first.path  # another batch, another table
    real = layer_latency.machine_facts
    monkeypatch.setattr(layer_latency, "machine_facts", lambda b, t: {**real(b, t), "cpu": "another CPU"})
    elsewhere = LayerTimer("onnxruntime-cpu", 2, 1, tmp_path)
    elsewhere.ms(specs[:1])
    assert elsewhere.measured == 1  # a table from another machine is never used


def test_the_default_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path))
    assert layer_latency.default_cache() == tmp_path / "latency"
    monkeypatch.delenv("COMPRESSOR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert layer_latency.default_cache() == tmp_path / "xdg" / "compressor" / "latency"


def test_an_unknown_backend_is_refused():
    with pytest.raises(Exception, match="unknown latency backend"):
        LayerTimer("onnxruntime-gpu2", 1, 1)
