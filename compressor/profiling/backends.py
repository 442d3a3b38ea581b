"""Latency backends: what is usable here, and one runner per (artifact, backend) for the interleaved timer.

What each backend times, and with which clock:

- ``onnxruntime-cpu`` (ONNX file): ``perf_counter`` around ``session.run``.
- ``openvino-cpu`` (ONNX file, OpenVINO's CPU plugin, compiled per batch in f32): ``perf_counter`` around a
  synchronous ``InferRequest.infer`` (``openvino.py``, which says how it is configured and why).
- ``onnxruntime-cuda`` / ``onnxruntime-tensorrt`` (ONNX file, onnxruntime-gpu): ``perf_counter`` around
  ``run_with_iobinding`` + ``synchronize_outputs``; input and output are bound on the device (cuda:0), so no
  host<->device copy is timed. The TensorRT provider builds an engine per input shape on its first run:
  warm-up must be at least 1.
- ``torch-cpu`` / ``torch-cuda`` / ``torch-cuda-graph`` (``nn.Module``): ``perf_counter`` around the forward
  on CPU; CUDA events around the eager forward, or around ``CUDAGraph.replay`` of a forward captured per batch.
- ``tensorrt`` (``.engine`` / ``.plan``): CUDA events around ``execute_async_v3``
  (``compressor.export.tensorrt_run.time_engine``, which opens the engine anew for every round).

Every runner has ``prepare(batch)`` (inputs, graphs: untimed), ``warm(batch, n)`` and
``time(batch, iterations) -> milliseconds``. Inputs are random data of the artifact's own input shape,
made once per batch. CUDA timings queue the timed runs back to back, like a busy server: launch gaps show
up only where the host cannot keep the device busy. Nothing here imports onnxruntime, OpenVINO, torch or TensorRT at
import time; CUDA is initialised only by a runner for a CUDA backend.
"""

from __future__ import annotations

import copy
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..environment import available_cores, cpu_name
from ..errors import ExportError, MissingDependencyError, ProfilingError, did_you_mean

ORT_PROVIDERS = {"onnxruntime-cpu": "CPUExecutionProvider", "onnxruntime-cuda": "CUDAExecutionProvider",
                 "onnxruntime-tensorrt": "TensorrtExecutionProvider"}
OPENVINO = "openvino-cpu"
ONNX_BACKENDS = (*ORT_PROVIDERS, OPENVINO)  # the backends that time ONNX files
TORCH_BACKENDS = ("torch-cpu", "torch-cuda", "torch-cuda-graph")
BACKENDS = (*ONNX_BACKENDS, *TORCH_BACKENDS, "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan")
ROUND_WARMUP = 3  # untimed runs before each TensorRT round: time_engine opens the engine anew for every call
_GPU_HINT = "needs onnxruntime-gpu: pip install 'compressor[gpu]' (it replaces the onnxruntime package)"
_PROVIDER_CHAINS = {"CPUExecutionProvider": ["CPUExecutionProvider"],
                    "CUDAExecutionProvider": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "TensorrtExecutionProvider": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider"]}
_SHORT_NAMES = {"trt": "tensorrt", "cpu": "onnxruntime-cpu", "ort": "onnxruntime-cpu", "onnxruntime": "onnxruntime-cpu",
                "cuda": "onnxruntime-cuda", "gpu": "onnxruntime-cuda", "onnxruntime-gpu": "onnxruntime-cuda",
                "onnxruntime-trt": "onnxruntime-tensorrt", "openvino": OPENVINO, "ov": OPENVINO}
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


@dataclass(frozen=True)
class Target:
    """One artifact file on one backend."""

    artifact: str      # the label in tables, JSON and plots
    path: Path
    backend: str


# ------------------------------------------------------------------------------------------ availability
def available_backends() -> dict[str, str | None]:
    """Every backend name -> None when it is usable here, else why not and how to install it."""
    return {name: backend_problem(name) for name in BACKENDS}


def backend_problem(name: str) -> str | None:
    """None when backend ``name`` is usable here, else the reason with an install hint."""
    check_backend_name(name)
    if name in ORT_PROVIDERS:
        return _ort_problem(ORT_PROVIDERS[name])
    if name == OPENVINO:
        from .openvino import openvino_problem

        return openvino_problem()
    if name == "torch-cpu":
        return None
    if name in TORCH_BACKENDS:
        return _cuda_problem()
    from ..export.tensorrt import tensorrt_problem

    return tensorrt_problem("it") or _cuda_problem()  # not installed, or missing libraries


def check_backend_name(name: str) -> str:
    if name not in BACKENDS:
        guess = _SHORT_NAMES.get(name.lower(), name)
        raise ProfilingError(f"unknown latency backend '{name}'" + did_you_mean(guess, BACKENDS))
    return name


def require_backend(name: str) -> str:
    """``name`` when usable here; raises ProfilingError (unknown name, or why not usable and how to fix)."""
    problem = backend_problem(name)
    if problem:
        raise ProfilingError(f"latency backend {name} is not available here: {problem}")
    return name


def _ort_problem(provider: str) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "needs onnxruntime: pip install onnxruntime"
    if provider not in ort.get_available_providers():
        listed = ", ".join(ort.get_available_providers())
        return f"{_GPU_HINT}; onnxruntime {ort.__version__} here offers {listed}"
    from .providers import provider_started

    started = provider_started(tuple(_PROVIDER_CHAINS[provider]))
    if started == provider:
        return None
    return (f"onnxruntime {ort.__version__} lists {provider} but could not start it (a session on it fell back to "
            f"{started}): the CUDA/cuDNN libraries{' or TensorRT' if 'Tensorrt' in provider else ''} or a GPU are "
            "missing here; run on a GPU machine (docker/Dockerfile.gpu) or profile on onnxruntime-cpu")


def _cuda_problem() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    build = "a CPU build" if torch.version.cuda is None else "a CUDA build that sees no GPU"
    return f"needs a CUDA GPU and a CUDA build of torch (torch {torch.__version__} is {build})"


# ------------------------------------------------------------------------------------------------ runners
def make_runner(target: Target, threads: int):
    if target.backend in ORT_PROVIDERS:
        return OrtRunner(target.artifact, target.path, target.backend, threads)
    if target.backend == OPENVINO:
        from .openvino import OpenVINORunner

        return OpenVINORunner(target.artifact, target.path, threads)
    if target.backend == "tensorrt":
        return TensorRTRunner(target.artifact, target.path)
    raise ProfilingError(f"backend {target.backend} times nn.Module models; use profile_torch")


class OrtRunner:
    """An ONNX file on one onnxruntime execution provider (I/O binding on the device for the GPU providers)."""

    def __init__(self, artifact: str, path: Path, backend: str, threads: int):
        self.artifact, self.path, self.backend, self.threads = artifact, Path(path), require_backend(backend), threads
        self.on_device = backend != "onnxruntime-cpu"
        self.device = "cuda:0" if self.on_device else "cpu"
        self.session = ort_session(self.path, backend, threads)
        self._calls: dict[int, object] = {}
        self._keep: dict[int, tuple] = {}

    def prepare(self, batch: int) -> None:
        feed = random_feed(self.session, self.path, batch)
        if not self.on_device:
            self._calls[batch] = lambda: self.session.run(None, feed)
            return
        import onnxruntime as ort

        binding = self.session.io_binding()
        on_device = {name: ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0) for name, array in feed.items()}
        for name, value in on_device.items():
            binding.bind_ortvalue_input(name, value)
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)  # allocated on the device by onnxruntime, never copied back
        binding.synchronize_inputs()

        def call() -> None:
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        self._calls[batch] = call
        self._keep[batch] = (binding, on_device)  # device inputs stay alive as long as the binding is used

    def warm(self, batch: int, n: int) -> None:
        if self.backend == "onnxruntime-tensorrt" and n < 1:
            raise ProfilingError("onnxruntime-tensorrt builds an engine per input shape on its first run: "
                                 "use a warm-up of 1 or more")
        for _ in range(n):
            self._calls[batch]()

    def time(self, batch: int, iterations: int) -> list[float]:
        return _perf_counter_ms(self._calls[batch], iterations)

    def versions(self) -> dict:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers": list(self.session.get_providers()), **host_facts()}


def ort_session(path: Path, backend: str, threads: int):
    """An onnxruntime session on the backend's provider (CPU fallback only for nodes the provider lacks)."""
    provider = ORT_PROVIDERS[check_backend_name(backend)]
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(f"latency profiling on {backend}", "onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    from .providers import session_providers

    chain = session_providers(_PROVIDER_CHAINS[provider], Path(path))
    try:
        session = ort.InferenceSession(str(path), options, providers=chain)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"onnxruntime cannot load {path}: {first}") from exc
    if session.get_providers()[0] != provider:
        raise ProfilingError(f"onnxruntime could not start {provider} for {path} (it fell back to "
                             f"{session.get_providers()[0]}); check the CUDA/TensorRT libraries and the GPU")
    return session


def random_feed(session, path: Path, batch: int) -> dict:
    """Random images of the session's first input at ``batch`` (seeded by the batch size)."""
    import numpy as np

    from ..export.onnx import onnx_input_shape

    first = session.get_inputs()[0]
    dtype = _NUMPY_TYPES.get(first.type)
    if dtype is None:
        raise ProfilingError(f"{path}: input '{first.name}' has type {first.type}; latency profiling feeds "
                             f"random images and supports {', '.join(_NUMPY_TYPES)}")
    rng = np.random.default_rng(batch)
    shape = (batch, *onnx_input_shape(path))
    return {first.name: rng.standard_normal(shape, dtype=np.float32).astype(dtype)}


class TorchRunner:
    """A copy of an nn.Module on a device: eager (CPU or CUDA) or captured as one CUDA graph per batch."""

    def __init__(self, artifact: str, model, input_shape: Sequence[int], device, cuda_graphs: bool):
        import torch

        self.artifact, self.input_shape, self.device = artifact, tuple(input_shape), torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.backend = ("torch-cuda-graph" if cuda_graphs else "torch-cuda") if self.cuda else "torch-cpu"
        self.threads = torch.get_num_threads()
        self.model = copy.deepcopy(model).to(self.device).eval()  # the caller's model is left as it was
        self.cuda_graphs = cuda_graphs
        self._inputs: dict[int, object] = {}
        self._graphs: dict[int, object] = {}

    def prepare(self, batch: int) -> None:
        import torch

        images = torch.randn((batch, *self.input_shape), generator=torch.Generator().manual_seed(batch))
        self._inputs[batch] = images.to(self.device)
        if self.cuda_graphs:
            self._graphs[batch] = _capture(self.model, self._inputs[batch])

    def _step(self, batch: int) -> None:
        if self.cuda_graphs:
            self._graphs[batch].replay()
        else:
            self.model(self._inputs[batch])

    def warm(self, batch: int, n: int) -> None:
        import torch

        with torch.inference_mode():
            for _ in range(n):
                self._step(batch)
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, batch: int, iterations: int) -> list[float]:
        import torch

        with torch.inference_mode():
            if not self.cuda:
                return _perf_counter_ms(lambda: self._step(batch), iterations)
            return _cuda_event_ms(lambda: self._step(batch), iterations, torch.cuda.current_stream(self.device))

    def versions(self) -> dict:
        import torch

        facts = {"torch": torch.__version__, **host_facts()}
        if self.cuda:
            facts.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                         gpu=torch.cuda.get_device_name(self.device))
        return facts


def _capture(model, images):
    """A CUDA graph of ``model(images)``, captured after three eager runs on a side stream (cuDNN autotuning)."""
    import torch

    side = torch.cuda.Stream(device=images.device)
    side.wait_stream(torch.cuda.current_stream(images.device))
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(3):
            model(images)
    torch.cuda.current_stream(images.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(images)  # the output lives in the graph's private pool; it is never read
    return graph


class TensorRTRunner:
    """A serialized engine timed on the device by ``time_engine`` (which opens the engine for every call)."""

    backend = "tensorrt"

    def __init__(self, artifact: str, path: Path):
        import torch

        from ..export.tensorrt import require_tensorrt

        require_tensorrt("timing a TensorRT engine")
        self.artifact, self.path = artifact, Path(path)
        self.threads = 1
        self.device = f"cuda:{torch.cuda.current_device()}"

    def prepare(self, batch: int) -> None:
        pass

    def warm(self, batch: int, n: int) -> None:
        from ..export.tensorrt_run import time_engine

        time_engine(self.path, batch, max(n - 1, 0), 1)

    def time(self, batch: int, iterations: int) -> list[float]:
        from ..export.tensorrt_run import time_engine

        return time_engine(self.path, batch, ROUND_WARMUP, iterations)

    def versions(self) -> dict:
        import torch

        from ..export.tensorrt import tensorrt_available

        return {"tensorrt": tensorrt_available(), "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(), **host_facts()}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op pool at ``threads`` while timing (None: as it is), restored afterwards. Timing torch
    runs at the profile's threads; timing another backend, torch's idle workers spin after torch work and take
    a core from it (measured: a ResNet-56 block 40% slower on onnxruntime with torch at 2 threads on 2 cores).
    Imports nothing: without torch loaded there is no pool to set."""
    torch = sys.modules.get("torch")
    if torch is None or threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ clocks
def _perf_counter_ms(call, iterations: int) -> list[float]:
    clock = time.perf_counter
    times = []
    for _ in range(iterations):
        start = clock()
        call()
        times.append((clock() - start) * 1000.0)
    return times


def _cuda_event_ms(call, iterations: int, stream) -> list[float]:
    import torch

    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iterations)]
    for begin, end in events:
        begin.record(stream)
        call()
        end.record(stream)
    events[-1][1].synchronize()
    return [begin.elapsed_time(end) for begin, end in events]


def host_facts() -> dict:
    return {"cpu": cpu_name(), "cores_available": available_cores(), "python": platform.python_version()}
