"""Precision variants of an exported classifier ONNX file: FP16 and explicit INT8 (QuantizeLinear/DequantizeLinear).

What each variant is for:

- ``fp32``: the file ``export_onnx`` wrote. TensorRT 10 builds FP32, and FP16 (builder flag ``FP16``, weak
  typing: TensorRT picks FP16 kernels where it likes), from this file.
- ``fp16`` (:func:`to_fp16`): weights and internal compute in float16, graph input and output still float32
  (a ``Cast`` after the input and before the output), so callers feed the same arrays. TensorRT 11 removed the
  precision builder flags and weak typing: networks are strongly typed and run in exactly the types of the
  graph, so an FP16 engine on TensorRT 11 needs this file.
- ``int8`` (:func:`to_int8_qdq`): explicit quantization, calibrated on our data with onnxruntime's
  ``quantize_static`` (QDQ format). TensorRT 10 builds it with the ``INT8`` flag (no calibrator), TensorRT 11
  as it is. Both need symmetric INT8: every zero point is 0, activations and weights are ``QInt8``, weights
  per output channel.

Facts this module relies on (onnxruntime 1.31.1, onnx 1.23):

- ``onnxruntime.transformers.float16.convert_float_to_float16(model, keep_io_types=True)`` converts our
  graphs (initializers, value_info and graph-internal types become float16) but appends its boundary
  ``Cast`` nodes at the END of the node list, so ``onnx.checker`` rejects the result ("Nodes in a graph must be
  topologically sorted"); onnxruntime itself still runs it. We sort the nodes topologically afterwards.
  Ops on its block list (``Min``, ``Max``, ``Range``, ``TopK``, ``Upsample``, ...) stay float32 between
  ``Cast`` nodes, which TensorRT's strong typing follows as written.
- ``quantize_static`` quantizes biases to INT32 behind a ``DequantizeLinear`` by default; TensorRT's ONNX
  parser rejects a ``DequantizeLinear`` on INT32, so we pass ``QuantizeBias=False`` (TensorRT fuses the
  float bias into the INT8 conv). ``ActivationSymmetric`` defaults to False: it must be set for TensorRT.
- ``quant_pre_process`` with its default ORT optimization step writes a model that imports eight extra opset
  domains (``com.microsoft``, ``ai.onnx.training``, ...); we skip that step (``skip_optimization=True``, our
  exports are already optimized, BatchNorm folded) and drop opset imports no node uses.
- The entropy and percentile calibrators ``print`` progress to stdout and the quantizer warns through the
  root logger (``logging.warning`` installs a stderr handler on an unconfigured root logger); both are
  silenced for the duration of the call.
- On a tiny random conv net (16x16 inputs), the FP16 file stays within ~2e-4 of FP32 logits of magnitude
  ~0.5; the INT8 file within 1-3% of the logit range, with 97-100% top-1 agreement.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import artifacts
from .._io import write_atomic
from ..errors import ExportError, MissingDependencyError, did_you_mean
from .onnx import _cpu_session, _first_line, _run, onnx_input_shape

if TYPE_CHECKING:
    import numpy as np
    import torch

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class PrecisionVariant:
    """One ONNX file of the exported model at one precision (``fp32`` is the export itself)."""

    precision: str
    path: Path


def make_variant(src: Path, precision: str, out_dir: Path, calibration: Iterable | None = None,
                 method: str = "minmax") -> PrecisionVariant:
    """The ``precision`` variant of ``src``, written as ``out_dir/<src stem>.<precision>.onnx`` (fp32: ``src``)."""
    src = Path(src)
    if precision == "fp32":
        return PrecisionVariant("fp32", src)
    dst = artifacts.variant_file(Path(out_dir) / src.name, precision)
    if precision == "fp16":
        return PrecisionVariant("fp16", to_fp16(src, dst))
    if precision == "int8":
        if calibration is None:
            raise ExportError("the int8 variant needs calibration images (a calibration split of the data)")
        return PrecisionVariant("int8", to_int8_qdq(src, dst, calibration, method=method))
    raise ExportError(f"unknown precision '{precision}'" + did_you_mean(precision, PRECISIONS))


def to_fp16(src: Path, dst: Path) -> Path:
    """Write an FP16 copy of ``src`` to ``dst``: float16 weights and compute, float32 input and output.

    The file appears atomically and only after ``onnx.checker`` accepted it and onnxruntime CPU ran it.
    """
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise MissingDependencyError("the FP16 ONNX conversion", "onnxruntime") from None
    model = _load(src)
    try:
        with _quiet():
            converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # noqa: BLE001 - any converter failure becomes one line
        raise ExportError(f"FP16 conversion of {src} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    _sort_topologically(converted.graph, src)
    _drop_unused_opsets(converted)
    write_atomic(Path(dst), lambda tmp: _save_checked(onnx, converted, tmp, Path(dst), "FP16"))
    return Path(dst)


def to_int8_qdq(src: Path, dst: Path, calibration: Iterable[np.ndarray | torch.Tensor], per_channel: bool = True,
                method: str = "minmax", activations: str = "int8") -> Path:
    """Write an explicitly quantized (QDQ) copy of ``src`` to ``dst``, calibrated on ``calibration``.

    ``calibration`` yields N x C x H x W float batches (numpy arrays or torch tensors, already normalised like
    the model's inputs); it is read once, batch by batch. ``method`` is ``minmax``, ``entropy`` or ``percentile``.
    ``activations``: ``int8`` (symmetric, zero point 0: what TensorRT accepts) or ``uint8`` (asymmetric: the
    U8S8 kernels onnxruntime CPU runs fastest on x86; ResNet-56, 1 thread, ``benchmarks/int8_resnet56.py``:
    uint8 0.40-0.42x of the FP32 latency, int8 1.32-1.45x). Weights are always symmetric INT8.
    """
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingDependencyError("the INT8 ONNX quantization", "onnxruntime") from None
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"unknown INT8 calibration method '{method}'" + did_you_mean(method, methods))
    src = Path(src)
    reader = _calibration_reader(src, calibration)
    if activations not in ("int8", "uint8"):
        raise ExportError(f"INT8 activations must be int8 or uint8, not '{activations}'")
    options = {"ActivationSymmetric": activations == "int8", "WeightSymmetric": True, "QuantizeBias": False}
    with tempfile.TemporaryDirectory(prefix="compressor-int8-") as tmp_dir:
        prepared, quantized = Path(tmp_dir) / "prepared.onnx", Path(tmp_dir) / "quantized.onnx"
        try:
            with _quiet():
                quant_pre_process(str(src), str(prepared), skip_optimization=True)
                quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                                weight_type=QuantType.QInt8,
                                per_channel=per_channel, calibrate_method=methods[method], extra_options=options)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"INT8 quantization of {src} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        model = onnx.load(str(quantized))
    if not any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        raise ExportError(f"INT8 quantization of {src} inserted no QuantizeLinear node (no Conv/Gemm/MatMul to quantize?)")
    _drop_unused_opsets(model)
    write_atomic(Path(dst), lambda tmp: _save_checked(onnx, model, tmp, Path(dst), "INT8"))
    return Path(dst)


def run_onnx(path: Path, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Outputs of the ONNX file at ``path`` on onnxruntime CPU for an N x C x H x W float batch."""
    session = _cpu_session(Path(path))
    return _run(session, session.get_inputs()[0].name, _as_batch(images), Path(path))


def onnx_parity(reference: Path, candidate: Path, images: np.ndarray | torch.Tensor) -> float:
    """Max |reference - candidate| outputs on onnxruntime CPU over ``images`` (NaN reads as ``inf``)."""
    import numpy as np

    expected = run_onnx(reference, images).astype(np.float64)
    got = run_onnx(candidate, images).astype(np.float64)
    if got.shape != expected.shape:
        raise ExportError(f"{candidate} returns shape {got.shape}, {reference} {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    return diff if diff == diff else float("inf")


# ------------------------------------------------------------------------------------------ internals
def _load(src: Path):
    import onnx

    src = Path(src)
    onnx_input_shape(src)  # file exists, parses, one N x C x H x W input
    return onnx.load(str(src))


def _save_checked(onnx, model, tmp: Path, dst: Path, what: str) -> None:
    """Save to ``tmp``; raise unless onnx.checker accepts it and onnxruntime CPU runs it on one image."""
    onnx.save(model, str(tmp))
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the {what} ONNX graph for {dst} fails onnx.checker: {_first_line(exc)}") from exc
    try:
        session = _cpu_session(tmp)
        first = session.get_inputs()[0]
        _run(session, first.name, _zeros(first.shape), tmp)
    except ExportError as exc:  # name the destination, not the temporary file
        raise ExportError(str(exc).replace(str(tmp), f"the {what} graph for {dst}")) from exc


def _sort_topologically(graph, src: Path) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs."""
    ready = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise ExportError(f"FP16 conversion of {src}: node '{left[0].name}' ({left[0].op_type}) has an input "
                              "that no node produces")
        pending = left
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_unused_opsets(model) -> None:
    used = {node.domain or "" for node in model.graph.node} | {""}
    keep = [op for op in model.opset_import if (op.domain or "") in used or op.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _calibration_reader(src: Path, calibration: Iterable) -> Any:
    """A CalibrationDataReader feeding ``calibration`` batch by batch; raises now if it is empty or misshapen."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    shape = onnx_input_shape(src)
    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    name = next(value.name for value in graph.input if value.name not in weights)
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ExportError(f"INT8 calibration of {src} got no images: give a non-empty calibration set "
                          "(a few hundred training images)")

    def feeds() -> Iterator[dict]:
        for index, batch in enumerate(_chain(first, batches)):
            array = _as_batch(batch)
            if tuple(array.shape[1:]) != shape:
                raise ExportError(f"INT8 calibration batch {index} has shape {tuple(array.shape)}; {src} takes "
                                  f"N x {shape[0]} x {shape[1]} x {shape[2]}")
            if not _finite(array):
                raise ExportError(f"INT8 calibration batch {index} contains NaN or infinite values")
            yield {name: array}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = feeds()

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    return Reader()


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _as_batch(images) -> np.ndarray:
    import numpy as np

    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    array = np.ascontiguousarray(images, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ExportError(f"expected an N x C x H x W image batch, got shape {tuple(array.shape)}")
    return array


def _finite(array: np.ndarray) -> bool:
    import numpy as np

    return bool(np.isfinite(array).all())


def _zeros(shape: list) -> np.ndarray:
    import numpy as np

    return np.zeros([dim if isinstance(dim, int) and dim > 0 else 1 for dim in shape], dtype=np.float32)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime's quantization tools: their prints, warnings and root-logger records below ERROR.

    A NullHandler on an unconfigured root logger keeps ``logging.warning`` from installing a stderr handler.
    """
    root = logging.getLogger()
    level, guard = root.level, None
    if not root.handlers:
        guard = logging.NullHandler()
        root.addHandler(guard)
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        if guard is not None:
            root.removeHandler(guard)
