"""The ``openvino-cpu`` backend: an ONNX file read by OpenVINO (the common runtime of Intel edge CPUs), compiled
for the CPU once per batch and timed like ``onnxruntime-cpu``: ``perf_counter`` around a synchronous
``InferRequest.infer()``, its input tensor set once per batch (untimed), the logits copied out as
onnxruntime's ``session.run`` returns them.

``compile_model(model, "CPU", config)`` is configured deliberately, not left to defaults that change with the
machine and the release (:func:`compile_config`):

- ``INFERENCE_NUM_THREADS``: the profile's threads, as onnxruntime's ``intra_op_num_threads``.
- ``PERFORMANCE_HINT: LATENCY`` and ``NUM_STREAMS: 1``: one request at a time on all of those threads, what a
  synchronous caller gets (THROUGHPUT splits the threads into streams that only a queue of async requests fills).
- ``INFERENCE_PRECISION_HINT: f32``: on a CPU with AVX-512 BF16 or AMX OpenVINO's default is bf16 (seen
  here, OpenVINO 2026.4 on an AMD EPYC with avx512_bf16), which would time an FP32 artifact at half precision,
  with other logits, and say nothing. The hint governs the floating-point ops only: an FP16 ONNX file's weights
  are decompressed and run in f32 (its row times the storage format, not f16 arithmetic; onnxruntime CPU, with
  few f16 kernels, does no better), and an INT8 QDQ file (``export/precision.py``) runs its quantized
  convolutions and Gemm in INT8: OpenVINO's low-precision transformations take the Q/DQ pairs.
- ``DYNAMIC_QUANTIZATION_GROUP_SIZE: 0`` where the plugin has the property: no activation quantization added by
  OpenVINO on its own.

Left at OpenVINO's default and recorded in ``versions()`` with the rest: thread pinning (``ENABLE_CPU_PINNING``).

One ``ov.Core`` serves the whole process (:func:`core`). Each Core's CPU plugin swaps in an alternate signal
stack of its own on the calling thread (for AMX state) and, when destroyed, restores the one it found and
unmaps its own. Cores destroyed out of creation order (garbage collection) leave the thread on an unmapped
alternate stack, and the next signal handled there (Python installs its handlers with ``SA_ONSTACK``; here a
SIGCHLD after ``subprocess.run``) kills the process with SIGSEGV (seen: OpenVINO 2026.4, the unit tests).
The exported ONNX file has a symbolic batch dimension (``export/onnx.py``); each batch gets its own compiled
model of the static shape [batch, C, H, W] (``Model.reshape``), which is what the CPU plugin optimises best.
Importing this module does not import openvino.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import ExportError, ProfilingError
from .backends import OPENVINO, _perf_counter_ms, host_facts

INSTALL_HINT = "needs openvino: pip install 'compressor[openvino]'"
DEVICE = "CPU"
_FLOAT_TYPES = ("f32", "f16", "f64")


def openvino_problem() -> str | None:
    """None when OpenVINO can run on the CPU here, else why not and how to install it."""
    try:
        import openvino as ov
    except ImportError:
        return INSTALL_HINT
    devices = core().available_devices
    if DEVICE not in devices:
        return f"OpenVINO {_version(ov)} offers no {DEVICE} device here (it has {', '.join(devices) or 'none'})"
    return None


@functools.cache
def core():
    """The process's one ``openvino.Core``, never destroyed before exit (module docstring: why only one)."""
    import openvino as ov

    return ov.Core()


def compile_config(threads: int) -> dict[str, str]:
    """The ``compile_model`` properties of every openvino-cpu figure (module docstring: why each one), as strings:
    OpenVINO 2024.3 refuses a Python int 0 for an unsigned property, every release takes the string."""
    config = {"INFERENCE_NUM_THREADS": str(int(threads)), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
              "INFERENCE_PRECISION_HINT": "f32"}
    if "DYNAMIC_QUANTIZATION_GROUP_SIZE" in core().get_property(DEVICE, "SUPPORTED_PROPERTIES"):
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = "0"
    return config


class OpenVINORunner:
    """An ONNX file on OpenVINO's CPU plugin, compiled per batch; the runner protocol of ``backends``."""

    backend = OPENVINO
    device = "cpu"

    def __init__(self, artifact: str, path: Path, threads: int):
        from .backends import require_backend

        require_backend(OPENVINO)
        self.artifact, self.path, self.threads = artifact, Path(path), threads
        self.config = compile_config(threads)
        self.model = read_model(self.path)
        self._requests: dict[int, object] = {}
        self._compiled: dict[int, object] = {}

    def prepare(self, batch: int) -> None:
        self._compiled[batch] = compile_batch(self.model, self.path, batch, self.config)
        request = self._compiled[batch].create_infer_request()
        request.set_input_tensor(_tensor(random_images(self.model, self.path, batch)))
        self._requests[batch] = request

    def warm(self, batch: int, n: int) -> None:
        for _ in range(n):
            self._requests[batch].infer()

    def time(self, batch: int, iterations: int) -> list[float]:
        return _perf_counter_ms(self._requests[batch].infer, iterations)

    def versions(self) -> dict:
        import openvino as ov

        compiled = next(iter(self._compiled.values()), None)
        return {"openvino": _version(ov), "openvino_config": effective_config(compiled) if compiled else {},
                **host_facts()}


def read_model(path: Path):
    """``Core.read_model`` of an ONNX file; an unreadable file is an ExportError naming it."""
    try:
        return core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"OpenVINO cannot read {path}: {_first_line(exc)}") from exc


def compile_batch(model, path: Path, batch: int, config: dict):
    """A compiled copy of ``model`` with its first input reshaped to [batch, C, H, W]."""
    from ..export.onnx import onnx_input_shape

    shaped = model.clone()
    try:
        shaped.reshape({shaped.input(0).get_any_name(): [batch, *onnx_input_shape(path)]})
        return core().compile_model(shaped, DEVICE, config)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"OpenVINO cannot compile {path} at batch {batch}: {_first_line(exc)}") from exc


def effective_config(compiled) -> dict:
    """The properties a compiled model really runs with (what was asked for, and pinning, which was not), and the
    precisions its convolutions and fully connected layers run at (``u8``/``i8`` for an INT8 QDQ file)."""
    names = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT",
             "ENABLE_CPU_PINNING")
    found = {name: _plain(compiled.get_property(name)) for name in names}
    return {**found, "compute_precisions": sorted(set(layer_precisions(compiled).values()))}


def layer_precisions(compiled) -> dict[str, str]:
    """Convolution and FullyConnected layers of the compiled (runtime) graph -> the precision each runs at."""
    found = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("Convolution", "FullyConnected"):
            found[op.get_friendly_name()] = info["runtimePrecision"].astype(str)
    return found


def random_images(model, path: Path, batch: int):
    """The images ``backends.random_feed`` gives onnxruntime for this file and batch (seeded by the batch size)."""
    import numpy as np

    from ..export.onnx import onnx_input_shape

    kind = model.input(0).get_element_type()
    if kind.get_type_name() not in _FLOAT_TYPES:
        raise ProfilingError(f"{path}: input '{model.input(0).get_any_name()}' has type {kind.get_type_name()}; "
                             f"latency profiling feeds random images and supports {', '.join(_FLOAT_TYPES)}")
    rng = np.random.default_rng(batch)
    return rng.standard_normal((batch, *onnx_input_shape(path)), dtype=np.float32).astype(kind.to_dtype())


def openvino_outputs(path: Path, images, threads: int = 1):
    """The first output of the ONNX file at ``path`` on openvino-cpu (the profile's config) for an N x C x H x W
    numpy batch: for parity checks against onnxruntime."""
    import numpy as np

    model = read_model(Path(path))
    compiled = compile_batch(model, Path(path), int(images.shape[0]), compile_config(threads))
    request = compiled.create_infer_request()
    request.infer({0: np.ascontiguousarray(images)})
    return np.array(request.get_output_tensor(0).data, copy=True)


def _tensor(array):
    import openvino as ov

    return ov.Tensor(array)


def _plain(value) -> str:
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)  # ov.Type -> "f32"


def _version(ov) -> str:
    return ov.__version__.split("-")[0]


def _first_line(exc: BaseException) -> str:
    """What went wrong, without OpenVINO's ``Exception from <source>:<line>`` / ``Check ... failed at`` frames:
    the ONNX node it was validating, if any, and the last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("Exception from ") and " failed at " not in line]
    if not said:
        return lines[-1] if lines else type(exc).__name__
    node = next((line.rstrip(":") for line in said if line.startswith("While validating ONNX node")), None)
    return f"{node}: {said[-1]}" if node and node != said[-1] else said[-1]


__all__ = ["INSTALL_HINT", "OpenVINORunner", "compile_config", "layer_precisions", "openvino_outputs", "openvino_problem"]
