"""ONNX -> serialized TensorRT engine for TensorRT 10.x and 11.x (running and timing one: ``tensorrt_run.py``).

TensorRT is imported only inside the functions that need it (``import compressor.export.tensorrt`` never
imports it, nor initialises CUDA). :func:`builder_plan` is a pure function holding everything that differs
between major versions, so it is tested without TensorRT:

==========  ==========================================  =========================================
precision   TensorRT 10 (weak typing; JetPack 6: 10.3)  TensorRT 11 (always strongly typed)
==========  ==========================================  =========================================
fp32        fp32 ONNX, TF32 cleared                     fp32 ONNX, STRONGLY_TYPED, TF32 cleared
fp16        fp32 ONNX, BuilderFlag.FP16                 fp16 ONNX (``precision.to_fp16``), STRONGLY_TYPED
int8        QDQ ONNX, BuilderFlag.INT8 (no calibrator)  QDQ ONNX (``precision.to_int8_qdq``), STRONGLY_TYPED
==========  ==========================================  =========================================

Facts from the TensorRT documentation (10.x Python API, 10.x -> 11.x migration guide), the names, signatures
and enum values checked against the real bindings of 10.3 (JetPack 6 ships 10.3, not 10.8), 10.8, 10.16 and
11.4 in ``tests/unit/export/test_tensorrt_bindings.py``:

- TensorRT 11 removed ``BuilderFlag.FP16/INT8/BF16/FP8/INT4/FP4``, ``OBEY/PREFER_PRECISION_CONSTRAINTS``,
  INT8 calibrators (``IBuilderConfig.int8_calibrator``), ``Builder.platform_has_fast_fp16/int8`` and weak
  typing. ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is kept but deprecated and ignored (every network is
  strongly typed); ``EXPLICIT_BATCH`` is gone. On 10.x, STRONGLY_TYPED must be asked for; we keep 10.x weakly
  typed so that the FP16/INT8 flags mean what they say.
- ``BuilderFlag.TF32`` is set by default on both: convolutions and matrix products of an "fp32" engine would
  round their inputs to 10-bit mantissas on Ampere and later GPUs. fp32 plans clear it; fp16 and int8 plans
  keep it for the layers left in float32.
- Common to both: ``Builder.create_network(flags)``, ``OnnxParser.parse_from_file`` with ``num_errors`` /
  ``get_error(i)`` (``desc()``, ``node()``, ``node_name()``, ``node_operator()``), optimization profiles,
  ``config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, ``config.create_timing_cache(bytes)`` /
  ``set_timing_cache(cache, ignore_mismatch)`` (False for a cache of another version or GPU: we start afresh) /
  ``get_timing_cache().serialize()`` (the cache may be None: then no file is written),
  ``build_serialized_network`` (returns ``None`` on failure, the reason goes to the logger), and the name-based
  runtime API: ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3(stream_handle)``.
- A Python ``trt.ILogger`` subclass must call ``trt.ILogger.__init__(self)`` and stay referenced for as long
  as the builder or runtime that received it lives.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import write_atomic, write_text
from ..errors import CompressorError, ExportError, MissingDependencyError, did_you_mean
from .onnx import INPUT_NAME, _first_line

if TYPE_CHECKING:
    pass

PRECISIONS = ("fp32", "fp16", "int8")
SUPPORTED_MAJORS = (10, 11)
INSTALL_HINT = "or use the TensorRT image built from docker/Dockerfile.gpu"
_VERSION = re.compile(r"^\s*(\d+)\.\d+")
_MISSING_LIBRARY = re.compile(r"(lib[\w.+-]+?\.so(?:\.\d+)*): cannot open shared object file")


@dataclass(frozen=True)
class BuildPlan:
    """How to build one engine on one TensorRT major version; names are members of TensorRT's enums."""

    trt_major: int
    precision: str                       # fp32 | fp16 | int8: what the engine computes in
    onnx_variant: str                    # which ONNX file to parse: fp32 (the export) | fp16 | int8 (QDQ)
    builder_flags: tuple[str, ...]       # trt.BuilderFlag members to set
    network_flags: tuple[str, ...]       # trt.NetworkDefinitionCreationFlag members
    workspace_mb: int
    min_shape: tuple[int, int, int, int]
    opt_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]
    timing_cache: Path | None = None
    input_name: str = INPUT_NAME
    cleared_flags: tuple[str, ...] = ()  # trt.BuilderFlag members to clear: TF32 (on by default) for fp32

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags or self.trt_major >= 11


@dataclass(frozen=True)
class EngineInfo:
    path: Path
    tensorrt_version: str
    precision: str
    onnx_variant: str
    build_seconds: float
    size_bytes: int
    log_path: Path
    timing_cache: Path | None  # the cache file written after the build (None: none asked, or TensorRT gave none)
    timing_cache_status: str = ""  # reused | new | replaced (the file was rejected: built with a fresh cache)


def tensorrt_available() -> str | None:
    """The installed TensorRT version, or None when ``import tensorrt`` fails: not installed, or installed
    without its libraries (:func:`tensorrt_problem` says which)."""
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - ImportError, or OSError from a wheel without its CUDA libraries
        return None
    return str(getattr(tensorrt, "__version__", "")) or None


def tensorrt_problem(what: str = "TensorRT") -> str | None:
    """None when a supported TensorRT imports, else why not in one line with the fix: not installed, installed
    but missing its libraries (named), or too old. Says nothing about the GPU (TensorRT initialises CUDA later)."""
    try:
        _import_trt(what)
    except CompressorError as exc:
        return str(exc)
    return None


def require_tensorrt(what: str = "building TensorRT engines") -> str:
    """The installed TensorRT version; raises MissingDependencyError (with the install hint) when it is absent,
    ExportError when it is installed but cannot be loaded (missing libraries) or is older than 10."""
    return str(_import_trt(what).__version__)


def major_version(version: str) -> int:
    """``"10.3.0.26"`` -> 10."""
    match = _VERSION.match(str(version))
    if not match:
        raise ExportError(f"cannot read a TensorRT major version from {version!r} (expected e.g. '10.3.0')")
    return int(match.group(1))


def builder_plan(major: int, precision: str, workspace_mb: int = 1024, min_batch: int = 1, opt_batch: int = 1,
                 max_batch: int = 1, input_shape: tuple[int, int, int] = (3, 32, 32),
                 timing_cache: Path | None = None) -> BuildPlan:
    """The build options for ``precision`` on TensorRT ``major`` (12 and later are treated like 11).

    The optimization profile covers batches ``min_batch..max_batch`` of ``input_shape`` (C, H, W) images and
    is tuned for ``opt_batch``. ``timing_cache`` is read before the build when it exists and written after.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown TensorRT precision '{precision}'" + did_you_mean(precision, PRECISIONS))
    if major < SUPPORTED_MAJORS[0]:
        raise ExportError(f"TensorRT {major}.x is not supported: compressor builds engines with TensorRT 10.x or "
                          "11.x; run: pip install 'compressor[trt]'")
    lo, opt, hi = int(min_batch), int(opt_batch), int(max_batch)
    if not 1 <= lo <= opt <= hi:
        raise ExportError(f"TensorRT batch profile (min, opt, max) = ({lo}, {opt}, {hi}) must satisfy "
                          "1 <= min <= opt <= max")
    if workspace_mb <= 0:
        raise ExportError(f"TensorRT workspace must be positive, got {workspace_mb} MB")
    if major >= 11:  # strong typing only: precision comes from the ONNX file
        variant, flags, network = precision, (), ("STRONGLY_TYPED",)
    else:            # weak typing: precision flags on the fp32 graph; explicit QDQ graph for INT8
        variant = "int8" if precision == "int8" else "fp32"
        flags, network = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision], ()
    c, h, w = (int(d) for d in input_shape)
    return BuildPlan(trt_major=int(major), precision=precision, onnx_variant=variant, builder_flags=flags,
                     network_flags=network, workspace_mb=int(workspace_mb), min_shape=(lo, c, h, w),
                     opt_shape=(opt, c, h, w), max_shape=(hi, c, h, w),
                     timing_cache=Path(timing_cache) if timing_cache else None,
                     cleared_flags=("TF32",) if precision == "fp32" else ())


def build_engine(onnx_path: Path, engine_path: Path, plan: BuildPlan, log_path: Path) -> EngineInfo:
    """Parse ``onnx_path`` (the plan's ONNX variant), build and atomically write the engine; log to ``log_path``."""
    trt = _import_trt("building a TensorRT engine")
    onnx_path, engine_path, log_path = Path(onnx_path), Path(engine_path), Path(log_path)
    installed = major_version(trt.__version__)
    if installed != plan.trt_major and not (installed >= 11 and plan.trt_major >= 11):
        raise ExportError(f"the build plan is for TensorRT {plan.trt_major}.x but TensorRT {trt.__version__} is "
                          f"installed; make the plan with builder_plan({installed}, ...)")
    logger = _recording_logger(trt)
    start = time.perf_counter()
    try:
        builder = _builder(trt, logger)
        network = builder.create_network(_network_flags(trt, plan))
        _parse(trt, network, logger, onnx_path)
        _check_variant(trt, network, plan, onnx_path)
        config, cache_status = _builder_config(trt, builder, network, plan, logger)
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise ExportError(f"TensorRT {trt.__version__} could not build {onnx_path} ({plan.precision}): "
                              f"{logger.last_error() or 'no error message'} (build log: {log_path})")
        write_atomic(engine_path, lambda tmp: tmp.write_bytes(memoryview(serialized)))
        cache = _save_timing_cache(config, plan.timing_cache, logger) if plan.timing_cache else None
    finally:
        write_text(log_path, "\n".join(logger.records) + "\n")
    return EngineInfo(path=engine_path, tensorrt_version=str(trt.__version__), precision=plan.precision,
                      onnx_variant=plan.onnx_variant, build_seconds=seconds, size_bytes=engine_path.stat().st_size,
                      log_path=log_path, timing_cache=cache, timing_cache_status=cache_status)


# ------------------------------------------------------------------------------------------ internals
def _import_trt(what: str):
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        if exc.name == "tensorrt":
            raise MissingDependencyError(what, "tensorrt", extra="trt", hint=INSTALL_HINT) from None
        raise ExportError(_unloadable(what, exc)) from None  # e.g. the metapackage without tensorrt_bindings
    except Exception as exc:  # noqa: BLE001 - ImportError / OSError: the bindings are there, a library is not
        raise ExportError(_unloadable(what, exc)) from None
    if major_version(trt.__version__) < SUPPORTED_MAJORS[0]:
        raise ExportError(f"{what}: TensorRT {trt.__version__} is installed; compressor needs 10.x or 11.x "
                          "(pip install 'compressor[trt]')")
    return trt


def _unloadable(what: str, exc: BaseException) -> str:
    """Why the installed tensorrt package does not import: the library it cannot find, and how to get it."""
    reason, libs = _first_line(exc), _libs_package()
    missing = _MISSING_LIBRARY.search(reason)
    if missing:
        return (f"{what}: the tensorrt Python package is installed but its library {missing.group(1)} is missing "
                f"(run: pip install {libs}; {INSTALL_HINT}; or add the folder holding {missing.group(1)} to "
                "LD_LIBRARY_PATH)")
    return (f"{what}: the tensorrt Python package is installed but cannot be loaded: {reason} (the TensorRT "
            f"libraries must match the bindings: pip install {libs}, check LD_LIBRARY_PATH; {INSTALL_HINT})")


def _libs_package() -> str:
    """The libraries wheel matching the installed bindings wheel (``tensorrt-cu12-libs==10.3.0``), else its name."""
    from importlib import metadata

    for dist in metadata.packages_distributions().get("tensorrt_bindings", []):
        name = re.sub(r"[-_.]+", "-", dist).lower()
        if name.endswith("-bindings"):
            try:
                return f"{name.removesuffix('bindings')}libs=={metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
    return "tensorrt-cu12-libs"


def _builder(trt, logger):
    try:
        return trt.Builder(logger)
    except TypeError as exc:  # pybind11: "factory function returned nullptr"
        raise _no_cuda_error(trt, "trt.Builder", exc, logger) from None


def _no_cuda_error(trt, factory: str, exc: TypeError, logger) -> Exception:
    """The ExportError for ``factory`` returning no object: TensorRT could not initialise CUDA. Other
    TypeErrors are bugs and are returned as they are."""
    if "nullptr" not in str(exc):
        return exc
    said = f"; TensorRT said: {logger.last_error()}" if logger.last_error() else ""
    return ExportError(f"TensorRT {trt.__version__} could not initialise CUDA ({factory} returned no object{said}): "
                       "no usable NVIDIA GPU or driver here; check that nvidia-smi lists a GPU, that the driver is "
                       "recent enough for this TensorRT's CUDA, and that CUDA_VISIBLE_DEVICES (docker: --gpus) "
                       "exposes it")


def _recording_logger(trt) -> Any:
    """A trt.ILogger that keeps every message at INFO or above as ``"[SEVERITY] message"``."""
    keep = {"INTERNAL_ERROR", "ERROR", "WARNING", "INFO"}
    errors = {"INTERNAL_ERROR", "ERROR"}

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.records: list[str] = []
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            level = getattr(severity, "name", str(severity))
            if level in keep:
                self.records.append(f"[{level}] {msg}")
            if level in errors:
                self.errors.append(" ".join(str(msg).split()))

        def last_error(self) -> str:
            return self.errors[-1] if self.errors else ""

        def note(self, msg: str) -> None:
            """A line of ours in the log (not TensorRT's)."""
            self.records.append(f"[compressor] {msg}")

    return RecordingLogger()


def _network_flags(trt, plan: BuildPlan) -> int:
    bits = 0
    for name in plan.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is None and name == "STRONGLY_TYPED" and plan.trt_major >= 11:
            continue  # a later 11.x may drop the deprecated flag: strong typing is implied
        if member is None:
            raise ExportError(f"TensorRT {trt.__version__} has no NetworkDefinitionCreationFlag.{name}")
        bits |= 1 << int(member)
    return bits


def _parse(trt, network, logger, onnx_path: Path) -> None:
    if not onnx_path.is_file():
        raise ExportError(f"ONNX file not found: {onnx_path}")
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)) and parser.num_errors == 0:
        return
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    if not errors:
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {logger.last_error() or 'no parser error reported'}")
    first = errors[0]
    name = _call(first, "node_name") or f"#{_call(first, 'node')}"
    op = _call(first, "node_operator")
    more = f" (+{len(errors) - 1} more parser errors)" if len(errors) > 1 else ""
    where = f"node '{name}'" + (f" ({op})" if op else "")
    raise ExportError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {where}: "
                      f"{' '.join(str(_call(first, 'desc')).split())}{more}")


def _check_variant(trt, network, plan: BuildPlan, onnx_path: Path) -> None:
    """The parsed graph must be the plan's ONNX variant: QDQ for int8, float16 compute for fp16, plain for fp32."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    quantized = any(layer.type == trt.LayerType.QUANTIZE for layer in layers)
    half = any(layer.get_output(j).dtype == trt.DataType.HALF for layer in layers for j in range(layer.num_outputs))
    found = "int8" if quantized else "fp16" if half and plan.strongly_typed else "fp32"
    if found != plan.onnx_variant:
        raise ExportError(f"{onnx_path} looks like the {found} ONNX variant but the {plan.precision} plan for TensorRT "
                          f"{plan.trt_major} parses the {plan.onnx_variant} variant (see compressor.export.precision)")


def _builder_config(trt, builder, network, plan: BuildPlan, logger) -> tuple[Any, str]:
    """The builder config of ``plan`` and what became of its timing cache ("" when the plan has none)."""
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if plan.input_name not in inputs:
        raise ExportError(f"the ONNX graph has no input '{plan.input_name}'" + did_you_mean(plan.input_name, inputs))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    _set_flags(trt, config, plan)
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, plan.min_shape, plan.opt_shape, plan.max_shape)
    config.add_optimization_profile(profile)
    status = _attach_timing_cache(trt, config, plan.timing_cache, logger) if plan.timing_cache else ""
    return config, status


def _set_flags(trt, config, plan: BuildPlan) -> None:
    for name in plan.builder_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is None:
            raise ExportError(f"TensorRT {trt.__version__} has no BuilderFlag.{name} (removed in TensorRT 11: use "
                              "the fp16 / QDQ ONNX variant and a plan made by builder_plan(11, ...))")
        config.set_flag(member)
    for name in plan.cleared_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is not None:  # a TensorRT without the flag cannot have it on
            config.clear_flag(member)


def _attach_timing_cache(trt, config, path: Path, logger) -> str:
    """Use the cache file when TensorRT accepts it ("reused"), else a fresh cache ("new", or "replaced" when the
    file was rejected: made by another TensorRT version or GPU, or damaged; the build log says so)."""
    data = path.read_bytes() if path.is_file() else b""
    if data and _use_timing_cache(config, data):
        return "reused"
    if not _use_timing_cache(config, b""):
        logger.note("TensorRT did not take a fresh timing cache: building without one")
    if data:
        logger.note(f"timing cache {path} was rejected by TensorRT {trt.__version__} (made by another TensorRT "
                    "version or GPU, or damaged): built with a fresh cache, which replaces the file")
        return "replaced"
    return "new"


def _use_timing_cache(config, data: bytes) -> bool:
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # noqa: BLE001 - an unreadable cache file is like a rejected one
        return False
    return cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))


def _save_timing_cache(config, path: Path, logger) -> Path | None:
    cache = config.get_timing_cache()
    if cache is None:
        logger.note(f"TensorRT returned no timing cache after the build: {path} is not written")
        return None
    return write_atomic(path, lambda tmp: tmp.write_bytes(memoryview(cache.serialize())))


def _call(obj, method: str) -> Any:
    fn = getattr(obj, method, None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # noqa: BLE001 - older bindings lack some IParserError accessors
        return None
