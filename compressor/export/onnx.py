"""ONNX export of a classifier (the dense-slim artifact) and its parity check against PyTorch.

``export_onnx`` writes ONE self-contained ``.onnx`` file (weights inside, no ``.onnx.data`` side file)
with one NCHW input named ``input``, one output named ``logits`` (a model returning several tensors: one
output per tensor, named and ordered as ``compressor.outputs`` says) and a symbolic batch dimension. It
uses torch's dynamo exporter (opset 18 or later; its optimizer folds BatchNorm into the preceding Conv), or,
with ``exporter="torchscript"``, the legacy TorchScript exporter (``dynamo=False``; deprecated but kept as
the fallback of ``export/artifacts.py`` for networks the dynamo exporter cannot take or gets wrong).

``check_parity`` returns a :class:`Parity` (per output, when there are several): the largest
|PyTorch - onnxruntime| on the logits and the
largest |PyTorch logit|, the scale the parity limit is relative to (:func:`parity_limit`: atol + rtol x
max |logits|, as Polygraphy and the ONNX checkers judge float32 outputs; float32 rounding grows with the
outputs' scale: logits of ~17 differ by ~2e-4 on a correct export).

Facts this module relies on (torch 2.13):

- The export runs on an example batch of 2 with ``Dim("batch", min=1)``: with a batch of 1, code that
  branches on the batch size (``if x.size(0) == 1``) silently specialises the graph to batch 1.
  A graph whose batch dimension still came out fixed (``x.view(2, 144)``) is rejected.
- Export takes ~0.5-1.5 s for a tiny net and ~3-5 s for a CIFAR ResNet-56 (the first export in a
  process pays a few seconds of exporter start-up). On failure the exporter tries non-strict, then
  strict ``torch.export``; its error text is long and coloured, so we quote only the root cause, the
  user-code line it points at, and a hint.
- The TorchScript exporter traces ``forward`` once: a branch on tensor values is baked in with only a
  ``TracerWarning``, so a trace that warns is refused (the file could be wrong for other inputs). It
  folds BatchNorm into Conv too (eval mode) and takes the batch axis from ``dynamic_axes``.
- Chatter is silenced, only for the duration of the export, by ``verbose=False`` (the
  ``[torch.onnx] ...`` lines), raising the ``torch``, ``onnxscript`` and ``onnx_ir`` loggers to ERROR
  (torchvision-missing warnings, guard warnings), ignoring Python warnings (FutureWarning from
  pytree) and redirecting ``sys.stdout``/``sys.stderr`` (``torch.export`` prints the partial FX graph
  of a failed trace to stderr with ``print``). The exception keeps the full exporter error as its cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._io import write_atomic
from ..errors import ExportError

if TYPE_CHECKING:
    import torch
    from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
_CHATTY_LOGGERS = ("torch", "onnxscript", "onnx_ir")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_USER_FRAME = re.compile(r'raised this error:\s*File "([^"]+)", line (\d+), in (\S+)\n\s*(.+)')


@dataclass(frozen=True)
class Parity:
    """PyTorch against onnxruntime on the same images (NaN counts as ``inf``, so that a gate fails)."""

    max_abs_diff: float  # max |PyTorch logits - onnxruntime logits| (several outputs: the largest of them)
    reference_max_abs: float  # max |PyTorch logits|: the scale the relative part of the limit multiplies
    outputs: tuple = ()  # several outputs: (name, max_abs_diff, reference_max_abs) of each, each judged alone

    def limit(self, atol: float, rtol: float) -> float:
        return parity_limit(atol, rtol, self.reference_max_abs)

    def passed(self, atol: float, rtol: float) -> bool:
        if self.outputs:
            return all(parity_passed(diff, parity_limit(atol, rtol, scale)) for _, diff, scale in self.outputs)
        return parity_passed(self.max_abs_diff, self.limit(atol, rtol))


def parity_limit(atol: float, rtol: float, reference_max_abs: float) -> float:
    """The largest allowed max |PyTorch - onnxruntime|: ``atol + rtol x max |PyTorch logits|``."""
    return atol + rtol * reference_max_abs


def parity_passed(max_abs_diff: float, limit: float) -> bool:
    """Inclusive, and never for a non-finite difference (NaN or inf logits pass no limit)."""
    return math.isfinite(max_abs_diff) and max_abs_diff <= limit


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = MIN_OPSET, *,
                exporter: str = "dynamo") -> Path:
    """Export ``model`` (in eval mode) to one self-contained ONNX file at ``path``; return the path.

    ``example`` is an NCHW batch (one image is enough). ``exporter``: ``dynamo`` (torch.export) or
    ``torchscript`` (the legacy tracer). The file appears atomically and only after ``onnx.checker``
    accepted it. Raises :class:`ExportError` with one line on any failure.
    """
    path = Path(path)
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if opset < MIN_OPSET:
        raise ExportError(f"export.opset {opset} is not supported: torch's ONNX exporter writes opset "
                          f"{MIN_OPSET} or later; set export.opset to {MIN_OPSET} or more")
    args = (_example_batch(example),)
    with eval_mode(model):
        names = output_names(model, args[0])
        write_atomic(path, lambda tmp: _export_to(model, args, tmp, opset, exporter, names))
    return path


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The ONNX output names of ``model``'s outputs on ``example`` (``compressor.outputs``: ``logits`` alone)."""
    import torch

    from ..outputs import named

    with torch.no_grad():
        names = [name for name, _ in named(model(example.to(_device(model))))]
    if not names:
        raise ExportError(f"{type(model).__name__}.forward returns no tensor; export needs a tensor, or tuples, lists "
                          "or dicts of tensors")
    return names


def check_parity(model: nn.Module, onnx_path: Path, images: torch.Tensor) -> Parity:
    """Max |PyTorch logits - onnxruntime CPU logits| over ``images``, run at batch len(images) and 1, and
    the largest |PyTorch logit| (the scale a relative limit multiplies).

    Running the same file at two batch sizes proves that the batch dimension really is dynamic.
    NaN differences (and NaN logits) are reported as ``inf`` so that a parity gate fails.
    """
    import numpy as np
    import torch

    from ..outputs import named

    session = _cpu_session(Path(onnx_path))
    name = session.get_inputs()[0].name
    device = _device(model)
    worst: dict[str, list[float]] = {}
    with eval_mode(model), torch.no_grad():
        for batch in (images, images[:1]):
            expected = [(k, t.detach().float().cpu().numpy()) for k, t in named(model(batch.to(device)))]
            got = _run_all(session, name, batch.detach().float().cpu().numpy(), onnx_path)
            if len(got) != len(expected):
                raise ExportError(f"{onnx_path}: onnxruntime returned {len(got)} outputs, PyTorch {len(expected)}")
            for (key, want), have in zip(expected, got):
                if have.shape != want.shape:
                    raise ExportError(f"{onnx_path}: onnxruntime returned {key} of shape {have.shape} at batch "
                                      f"{len(batch)}, PyTorch {want.shape}; the batch dimension is not dynamic")
                diff = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
                largest = float(np.max(np.abs(want))) if want.size else 0.0
                entry = worst.setdefault(key, [0.0, 0.0])
                entry[0] = max(entry[0], diff if diff == diff else float("inf"))
                entry[1] = max(entry[1], largest if largest == largest else float("inf"))
    return _parity(worst)


def _parity(per_output: dict[str, list[float]]) -> Parity:
    """One output: its figures. Several: each one's, and the largest difference with its own scale on top."""
    key = max(per_output, key=lambda k: per_output[k][0])
    diff, scale = per_output[key]
    outputs = tuple((k, d, s) for k, (d, s) in per_output.items()) if len(per_output) > 1 else ()
    return Parity(max_abs_diff=diff, reference_max_abs=scale, outputs=outputs)


def onnx_input_shape(path: Path) -> tuple[int, int, int]:
    """C, H, W of the first (non-initializer) input of an ONNX file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not an ONNX model"
        raise ExportError(f"{path} is not a readable ONNX model: {_first_line(exc)}") from None
    weights = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in weights]
    if not inputs:
        raise ExportError(f"{path}: the ONNX graph has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise ExportError(f"{path}: input '{inputs[0].name}' has shape {shape}; expected N x C x H x W "
                          "with fixed C, H and W (re-export with a fixed image size)")
    return tuple(int(d.dim_value) for d in dims[1:])  # type: ignore[return-value]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each module's own training flag afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence exporter chatter: warnings, log records below ERROR and prints to sys.stdout/sys.stderr.

    Failures still propagate as exceptions, and ERROR log records still reach the torch log handlers.
    """
    touched = []
    for name in _logger_names():
        logger = logging.getLogger(name)
        if logger.level < logging.ERROR:
            touched.append((logger, logger.level))
            logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in touched:
            logger.setLevel(level)


# ------------------------------------------------------------------------------------------ internals
def _export_to(model: nn.Module, args: tuple, tmp: Path, opset: int, exporter: str,
               names: list[str] | None = None) -> None:
    names = names or [OUTPUT_NAME]
    try:
        with quiet_exporter():
            (_dynamo if exporter == "dynamo" else _torchscript)(model, args, tmp, opset, names)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one user-facing line
        raise ExportError(_describe_failure(model, exc, exporter)) from exc
    _check_file(model, tmp, len(names))


def _dynamo(model: nn.Module, args: tuple, tmp: Path, opset: int, names: list[str]) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, args, str(tmp), input_names=[INPUT_NAME], output_names=names,
                      opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=({0: batch},),
                      verbose=False)


def _torchscript(model: nn.Module, args: tuple, tmp: Path, opset: int, names: list[str]) -> None:
    """The legacy exporter; a ``TracerWarning`` (a trace that may not hold for other inputs) is an error."""
    import torch

    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        torch.onnx.export(model, args, str(tmp), input_names=[INPUT_NAME], output_names=names,
                          opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True,
                          verbose=False)


def _check_file(model: nn.Module, tmp: Path, expected_outputs: int = 1) -> None:
    import onnx

    name = type(model).__name__
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the ONNX graph exported from {name} fails onnx.checker: {_first_line(exc)}") from exc
    graph = onnx.load(str(tmp), load_external_data=False).graph
    if len(graph.output) != expected_outputs:
        raise ExportError(f"the ONNX graph of {name} has {len(graph.output)} outputs where forward returns "
                          f"{expected_outputs} tensors (an output that is an input or a constant is not exported); "
                          "return only computed tensors")
    first = graph.input[0].type.tensor_type.shape.dim[0]
    if not first.dim_param:
        raise ExportError(f"ONNX export of {name}: the batch dimension came out fixed at {first.dim_value}; "
                          "forward hard-codes the batch size (e.g. x.view(2, -1)); use x.flatten(1) or "
                          "x.view(x.size(0), -1)")


def _example_batch(example: torch.Tensor) -> torch.Tensor:
    import torch

    if example.dim() != 4:
        raise ExportError(f"the export example must be an N x C x H x W batch, got shape {tuple(example.shape)}")
    x = example[:2].detach()
    return x if len(x) == 2 else torch.cat([x, x])


def _describe_failure(model: nn.Module, exc: BaseException, exporter: str = "dynamo") -> str:
    full = _ANSI.sub("", str(exc))
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    reason = f"{type(cause).__name__}: {_first_line(cause)}"
    frame = _USER_FRAME.search(full)
    where = ""
    if frame:
        where = f" at {Path(frame.group(1)).name}:{frame.group(2)} in {frame.group(3)} (`{frame.group(4).strip()}`)"
    how = "" if exporter == "dynamo" else " (TorchScript exporter)"
    return f"ONNX export of {type(model).__name__}{how} failed: {reason}{where} (hint: {_hint(full + str(cause))})"


def _hint(text: str) -> str:
    low = text.lower()
    if "data-dependent" in low or "data dependent" in low or "trace to be incorrect" in low:
        return ("forward branches on tensor values (data-dependent control flow); compute both branches and "
                "pick with torch.where, or move the decision out of forward")
    if "constraints violated" in low or "specializ" in low:
        return "forward hard-codes the batch size; use x.flatten(1) or x.view(x.size(0), -1)"
    if "convert" in low or "unsupported" in low or "not supported" in low:
        return "an operator has no ONNX translation in torch's exporter; replace it with standard torch ops"
    return ("forward must be traceable by torch.export: no Python control flow on tensor values, no hard-coded "
            "batch size, standard torch ops only (https://pytorch.org/docs/stable/export.html)")


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    line = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
    return line if len(line) <= 240 else line[:237] + "..."


def _logger_names() -> list[str]:
    existing = [name for name in logging.root.manager.loggerDict
                if any(name == root or name.startswith(root + ".") for root in _CHATTY_LOGGERS)]
    return sorted(set(existing) | set(_CHATTY_LOGGERS))


def _device(model: nn.Module) -> torch.device:
    import torch

    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _cpu_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("the ONNX parity check", "onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from exc


def _run(session, name: str, array, path: Path):
    return _run_all(session, name, array, path)[0]


def _run_all(session, name: str, array, path: Path) -> list:
    try:
        return session.run(None, {name: array})
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime failed to run {path} at batch {array.shape[0]}: {_first_line(exc)}") from exc
