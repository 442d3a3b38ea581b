"""The openvino-cpu backend: availability, the compile config (f32, not the bf16 OpenVINO picks on a BF16 CPU),
parity with onnxruntime on an exported model, INT8 QDQ files run in INT8, and timing side by side with onnxruntime."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from compressor.errors import ProfilingError
from compressor.export import export_onnx
from compressor.profiling.backends import OPENVINO, Target, backend_problem, require_backend
from compressor.profiling.latency import plan_targets, profile_targets

from ..export.nets import PlainNet, randomize_bn


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    assert backend_problem(OPENVINO) == "needs openvino: pip install 'compressor[openvino]'"
    with pytest.raises(ProfilingError, match=r"openvino-cpu is not available here: needs openvino: pip install "
                                             r"'compressor\[openvino\]'"):
        require_backend(OPENVINO)


ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'compressor[openvino]')")

from compressor.profiling.openvino import (  # noqa: E402 - after the skip: these need openvino
    OpenVINORunner,
    compile_batch,
    compile_config,
    layer_precisions,
    openvino_outputs,
    read_model,
)


@pytest.fixture(scope="module")
def model_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(PlainNet()).eval()
    return export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path_factory.mktemp("openvino") / "plain.onnx")


@pytest.fixture(scope="module")
def int8_onnx(model_onnx):
    from compressor.export.precision import to_int8_qdq

    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((4, 3, 8, 8), dtype=np.float32) for _ in range(4)]
    return to_int8_qdq(model_onnx, model_onnx.with_suffix(".int8.onnx"), calibration)


def _onnxruntime(path, images):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_openvino_is_usable_here():
    assert backend_problem(OPENVINO) is None


def test_outputs_match_onnxruntime_at_two_batches(model_onnx):
    """f32 on OpenVINO agrees with onnxruntime to float32 rounding; bf16 (OpenVINO's default on a CPU with
    AVX-512 BF16, such as the AMD EPYC this was written on) is off by ~1e-3 of the largest logit and fails it."""
    for batch in (1, 5):
        images = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8), dtype=np.float32)
        expected = _onnxruntime(model_onnx, images)
        got = openvino_outputs(model_onnx, images)
        assert got.shape == expected.shape == (batch, 10)
        assert np.abs(got - expected).max() <= 1e-5 + 1e-4 * np.abs(expected).max()


def test_fp32_file_runs_in_f32_and_the_config_is_deliberate(model_onnx):
    config = compile_config(threads=1)
    assert config["INFERENCE_PRECISION_HINT"] == "f32" and config["NUM_STREAMS"] == "1"
    assert config["PERFORMANCE_HINT"] == "LATENCY" and config["INFERENCE_NUM_THREADS"] == "1"
    compiled = compile_batch(read_model(model_onnx), model_onnx, 2, config)
    precisions = layer_precisions(compiled)
    assert len(precisions) == 4 and set(precisions.values()) == {"f32"}, precisions  # 3 convs + the classifier


def test_int8_qdq_file_runs_its_convolutions_in_int8(int8_onnx):
    compiled = compile_batch(read_model(int8_onnx), int8_onnx, 2, compile_config(threads=1))
    precisions = layer_precisions(compiled)
    assert precisions and set(precisions.values()) <= {"u8", "i8"}, precisions
    images = np.random.default_rng(3).standard_normal((4, 3, 8, 8), dtype=np.float32)
    expected = _onnxruntime(int8_onnx, images)  # both run the same quantized graph; rounding may differ
    assert np.abs(openvino_outputs(int8_onnx, images) - expected).max() <= 0.05 * np.abs(expected).max()


def test_runner_protocol_and_versions(model_onnx):
    runner = OpenVINORunner("plain", model_onnx, threads=1)
    for batch in (1, 3):  # one compiled model per batch of the dynamic-batch file
        runner.prepare(batch)
        runner.warm(batch, 2)
        times = runner.time(batch, 4)
        assert len(times) == 4 and all(t > 0 for t in times)
    assert list(runner._requests[3].get_input_tensor().shape) == [3, 3, 8, 8]
    facts = runner.versions()
    assert facts["openvino"] == ov.__version__.split("-")[0]
    config = facts["openvino_config"]
    assert config["INFERENCE_PRECISION_HINT"] == "f32" and config["INFERENCE_NUM_THREADS"] == "1"
    assert config["compute_precisions"] == ["f32"]


def test_timed_side_by_side_with_onnxruntime(model_onnx, int8_onnx):
    targets = plan_targets([model_onnx, int8_onnx], ["onnxruntime-cpu", OPENVINO], [1, 2])
    assert [(t.artifact, t.backend) for t in targets] == [
        ("plain", "onnxruntime-cpu"), ("plain", OPENVINO), ("plain.int8", "onnxruntime-cpu"), ("plain.int8", OPENVINO)]
    stats = profile_targets(targets, [1, 2], threads=1, warmup=1, iterations=3, repeats=2)
    assert {(s.artifact, s.backend, s.batch) for s in stats} == {
        (t.artifact, t.backend, b) for t in targets for b in (1, 2)}
    openvino = [s for s in stats if s.backend == OPENVINO]
    assert all(s.threads == 1 and s.repeats == 2 and s.p50_ms > 0 and "openvino" in s.versions for s in openvino)
    int8 = next(s for s in openvino if s.artifact == "plain.int8")
    assert set(int8.versions["openvino_config"]["compute_precisions"]) <= {"u8", "i8"}


def test_all_includes_openvino_for_onnx_files(model_onnx):
    assert OPENVINO in [t.backend for t in plan_targets([model_onnx], ["all"], [1])]
    with pytest.raises(ProfilingError, match="unknown latency backend 'openvino' \\(did you mean 'openvino-cpu'"):
        plan_targets([model_onnx], ["openvino"], [1])


def test_make_runner_dispatches_openvino(model_onnx):
    from compressor.profiling.backends import make_runner

    assert isinstance(make_runner(Target("plain", model_onnx, OPENVINO), 1), OpenVINORunner)


def test_layer_timer_times_layers_on_openvino(tmp_path):
    """pruning.latency_target on openvino-cpu: its per-layer table is timed on OpenVINO, cached apart from
    onnxruntime's."""
    from compressor.profiling.layer_latency import LayerSpec, LayerTimer

    conv = LayerSpec("conv", 8, 16, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (9, 9), False)
    timer = LayerTimer(OPENVINO, 2, 1, tmp_path)
    times = timer.ms([conv, conv.at(8, 8)])
    assert timer.measured == 2 and all(t > 0 for t in times.values())
    assert timer.machine["openvino"] == ov.__version__ and "onnxruntime" not in timer.machine
    assert timer.path != LayerTimer("onnxruntime-cpu", 2, 1, tmp_path).path


def test_openvino_errors_say_what_failed_in_one_line(tmp_path):
    from compressor.errors import ExportError

    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00 not a model")
    with pytest.raises(ExportError, match=r"OpenVINO cannot read .*junk.onnx: ") as info:
        read_model(bad)
    assert "\n" not in str(info.value) and "Exception from src" not in str(info.value)


def test_runners_dropped_in_any_order_leave_signals_working(model_onnx):
    """Each ov.Core's CPU plugin swaps the thread's alternate signal stack and, when destroyed, may restore one
    that another Core has unmapped since: with a Core per runner, the sequence below (two runners, the first
    dropped, a parity check, the second dropped) left the thread on an unmapped stack, and the next Python signal
    handler (SA_ONSTACK; in the unit tests a SIGCHLD after subprocess.run) died with SIGSEGV (rc -11 here, before
    openvino.core). Run in a child process, which is what would crash."""
    import subprocess

    code = (
        "import gc, os, signal, sys\n"
        "import numpy as np\n"
        "from compressor.profiling.openvino import OpenVINORunner, openvino_outputs\n"
        "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
        "first, second = OpenVINORunner('a', sys.argv[1], 1), OpenVINORunner('b', sys.argv[1], 1)\n"
        "first.prepare(1); second.prepare(1)\n"
        "del first; gc.collect()\n"
        "openvino_outputs(sys.argv[1], np.zeros((2, 3, 8, 8), np.float32))\n"
        "del second; gc.collect()\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "print('survived')\n")
    out = subprocess.run([sys.executable, "-c", code, str(model_onnx)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert out.returncode == 0 and "survived" in out.stdout, (out.returncode, out.stderr[-2000:])
