"""Running and timing a serialized TensorRT engine on a CUDA device, and its parity with onnxruntime.

TensorRT is imported only inside the functions (``tensorrt.py`` says which API members are used and why).
Device buffers and streams come from torch (a CUDA build of torch is needed on the GPU machine); no pycuda.
Engine timings are device-side: CUDA events recorded on the engine's stream around ``execute_async_v3`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from .tensorrt import _import_trt, _no_cuda_error, _recording_logger

if TYPE_CHECKING:
    import numpy as np
    import torch

_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def run_engine(engine_path: Path, batch: np.ndarray | torch.Tensor) -> np.ndarray:
    """The engine's float32 output for an N x C x H x W batch, run in chunks of the profile's max batch."""
    import numpy as np
    import torch

    session = _EngineSession.open(Path(engine_path))
    images = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
    stream = torch.cuda.Stream(device=session.device)
    outputs = []
    for chunk in images.detach().split(session.max_batch):
        x = chunk.to(session.device, session.input_dtype).contiguous()
        out = session.bind(x)
        stream.wait_stream(torch.cuda.current_stream(session.device))  # x was written on the current stream
        with torch.cuda.stream(stream):
            session.execute(stream)
        stream.synchronize()
        outputs.append(out.float().cpu().numpy())
    return np.concatenate(outputs)


def time_engine(engine_path: Path, batch_size: int, warmup: int, iterations: int) -> list[float]:
    """Device milliseconds of ``iterations`` engine runs at ``batch_size`` after ``warmup`` runs.

    Only ``execute_async_v3`` lies between the two CUDA events of each sample; the input is random data made
    on the device once, outputs stay on the device.
    """
    import torch

    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError("time_engine needs batch_size >= 1, iterations >= 1 and warmup >= 0")
    session = _EngineSession.open(Path(engine_path))
    shape = (batch_size, *session.image_shape)
    x = torch.randn(shape, device=session.device).to(session.input_dtype)
    session.bind(x)
    stream = torch.cuda.Stream(device=session.device)
    stream.wait_stream(torch.cuda.current_stream(session.device))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iterations)]
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            session.execute(stream)
        for begin, end in events:
            begin.record(stream)
            session.execute(stream)
            end.record(stream)
    stream.synchronize()
    return [begin.elapsed_time(end) for begin, end in events]


def engine_parity(engine_path: Path, onnx_path: Path, images: np.ndarray | torch.Tensor) -> float:
    """Max |engine - onnxruntime CPU (``onnx_path``)| outputs over ``images``; NaN reads as ``inf``.

    Compare with the fp32 export to see the whole precision loss, or with the variant the engine was built
    from to see TensorRT's own deviation.
    """
    import numpy as np

    from .precision import _as_batch, run_onnx

    array = _as_batch(images)
    expected = run_onnx(Path(onnx_path), array).astype(np.float64)
    got = run_engine(Path(engine_path), array).astype(np.float64)
    if got.shape != expected.shape:
        raise ExportError(f"{engine_path} returned shape {got.shape}, onnxruntime on {onnx_path} {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    return diff if diff == diff else float("inf")


@dataclass
class _EngineSession:
    """A deserialized engine and one execution context, with the objects they need kept alive."""

    logger: Any
    runtime: Any
    engine: Any
    context: Any
    input_name: str
    output_name: str
    device: Any
    input_dtype: Any
    output_dtype: Any
    image_shape: tuple[int, ...]
    min_batch: int
    max_batch: int

    @classmethod
    def open(cls, path: Path) -> _EngineSession:
        trt = _import_trt("running a TensorRT engine")
        device = _cuda_device()
        if not path.is_file():
            raise ExportError(f"TensorRT engine not found: {path}")
        logger = _recording_logger(trt)
        runtime = _runtime(trt, logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ExportError(f"TensorRT {trt.__version__} cannot load {path}: {logger.last_error() or 'unknown error'} "
                              "(engines only load on the TensorRT version and GPU they were built with)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ExportError(f"{path}: expected one input and one output tensor, found inputs {inputs}, outputs {outputs}")
        lo, _, hi = engine.get_tensor_profile_shape(inputs[0], 0)  # (min, opt, max) shapes of profile 0
        context = engine.create_execution_context()
        if context is None:
            raise ExportError(f"TensorRT {trt.__version__} cannot create an execution context for {path}: "
                              f"{logger.last_error() or 'unknown error'} (often too little free GPU memory for the "
                              "engine's activations: free the GPU or rebuild with a smaller max batch)")
        return cls(logger, runtime, engine, context, inputs[0], outputs[0], device,
                   _torch_dtype(engine.get_tensor_dtype(inputs[0])), _torch_dtype(engine.get_tensor_dtype(outputs[0])),
                   tuple(engine.get_tensor_shape(inputs[0]))[1:], int(lo[0]), int(hi[0]))

    def bind(self, x: torch.Tensor) -> torch.Tensor:
        """Set the input shape and both tensor addresses; return the (device) output tensor."""
        import torch

        if not self.min_batch <= x.shape[0] <= self.max_batch:
            raise ExportError(f"batch {x.shape[0]} is outside the engine's profile (batch {self.min_batch}.."
                              f"{self.max_batch}); rebuild the engine with another batch range")
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise ExportError(f"the engine rejects input shape {tuple(x.shape)} (expects N x {self.image_shape})")
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                          device=self.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        self._keep = (x, out)  # the addresses must stay valid while the context may run
        return out

    def execute(self, stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"TensorRT execute_async_v3 failed: {self.logger.last_error() or 'unknown error'}")


def _runtime(trt, logger):
    try:
        return trt.Runtime(logger)
    except TypeError as exc:  # pybind11: "factory function returned nullptr"
        raise _no_cuda_error(trt, "trt.Runtime", exc, logger) from None


def _cuda_device():
    import torch

    if not torch.cuda.is_available():
        raise ExportError("running a TensorRT engine needs a CUDA GPU and a CUDA build of torch "
                          f"(torch {torch.__version__} sees no CUDA device)")
    return torch.device("cuda", torch.cuda.current_device())  # torch initialises CUDA before TensorRT does


def _torch_dtype(trt_dtype):
    import torch

    name = _TORCH_DTYPES.get(getattr(trt_dtype, "name", str(trt_dtype)))
    if name is None:
        raise ExportError(f"unsupported TensorRT I/O data type {trt_dtype}")
    return getattr(torch, name)
