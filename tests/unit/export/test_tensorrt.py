"""TensorRT: version parsing, the per-major-version build plan, lazy import, and the build flow.

Building an engine needs a GPU, so the build flow is exercised against ``FakeTensorRT``, a stand-in with the
few API members ``build_engine`` uses. It proves our logic (flags, profile, timing cache, log, errors), not
TensorRT's; ``test_tensorrt_bindings.py`` checks its names, and every TensorRT name, signature and enum value
our code uses, against the real 10.x and 11.x bindings. The tests marked ``gpu`` and ``tensorrt`` build and
run real engines and skip, with a reason, where TensorRT or a CUDA device is missing.
"""

from __future__ import annotations

import enum
import re
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
import torch

from compressor.errors import ExportError, MissingDependencyError
from compressor.export import export_onnx
from compressor.export import tensorrt as trt_export
from compressor.export import tensorrt_run as trt_run
from compressor.export.precision import make_variant
from compressor.export.tensorrt import BuildPlan, build_engine, builder_plan, major_version

from .nets import PlainNet, randomize_bn

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict:
    """PlainNet exported, with its fp16 and int8 ONNX variants: precision -> path."""
    folder = tmp_path_factory.mktemp("trt")
    src = export_onnx(randomize_bn(PlainNet()), torch.randn(1, *SHAPE), folder / "model.onnx")
    calibration = [np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)]
    return {p: make_variant(src, p, folder, calibration=calibration).path for p in ("fp32", "fp16", "int8")}


# ------------------------------------------------------------------------------------------ plan
def test_major_version():
    assert major_version("10.3.0.26") == 10
    assert major_version("11.0.0") == 11
    assert major_version(" 8.6.1") == 8
    with pytest.raises(ExportError, match="major version"):
        major_version("ten")


@pytest.mark.parametrize(("major", "precision", "variant", "flags", "network"), [
    (10, "fp32", "fp32", (), ()),
    (10, "fp16", "fp32", ("FP16",), ()),
    (10, "int8", "int8", ("INT8",), ()),
    (11, "fp32", "fp32", (), ("STRONGLY_TYPED",)),
    (11, "fp16", "fp16", (), ("STRONGLY_TYPED",)),
    (11, "int8", "int8", (), ("STRONGLY_TYPED",)),
    (12, "fp16", "fp16", (), ("STRONGLY_TYPED",)),
])
def test_builder_plan_per_major_version(major, precision, variant, flags, network):
    plan = builder_plan(major, precision)
    assert (plan.onnx_variant, plan.builder_flags, plan.network_flags) == (variant, flags, network)
    assert plan.strongly_typed == (major >= 11)
    assert plan.precision == precision and plan.trt_major == major
    assert plan.cleared_flags == (("TF32",) if precision == "fp32" else ())  # TensorRT sets TF32 by default


def test_builder_plan_profile_workspace_and_cache(tmp_path):
    plan = builder_plan(10, "fp16", workspace_mb=512, min_batch=1, opt_batch=8, max_batch=32, input_shape=(3, 224, 224),
                        timing_cache=tmp_path / "timing.cache")
    assert (plan.min_shape, plan.opt_shape, plan.max_shape) == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert plan.workspace_mb == 512 and plan.timing_cache == tmp_path / "timing.cache" and plan.input_name == "input"
    with pytest.raises(AttributeError):
        plan.precision = "fp32"  # frozen


def test_builder_plan_rejects_bad_options():
    with pytest.raises(ExportError, match="did you mean 'fp16'"):
        builder_plan(10, "fp61")
    with pytest.raises(ExportError, match="TensorRT 8.x is not supported"):
        builder_plan(8, "fp16")
    with pytest.raises(ExportError, match="1 <= min <= opt <= max"):
        builder_plan(10, "fp32", min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(ExportError, match="workspace"):
        builder_plan(11, "fp32", workspace_mb=0)


# ------------------------------------------------------------------------------------------ import
def test_require_tensorrt_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    assert trt_export.tensorrt_available() is None
    with pytest.raises(MissingDependencyError) as info:
        trt_export.require_tensorrt()
    message = str(info.value)
    assert "pip install 'compressor[trt]'" in message and "docker/Dockerfile.gpu" in message
    assert "\n" not in message
    assert trt_export.tensorrt_problem("building TensorRT engines") == message


def test_require_tensorrt_rejects_old_versions(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    assert trt_export.tensorrt_available() == "8.6.1"
    with pytest.raises(ExportError, match=r"TensorRT 8\.6\.1 is installed; compressor needs 10\.x or 11\.x"):
        trt_export.require_tensorrt()
    assert "TensorRT 8.6.1 is installed" in trt_export.tensorrt_problem()


def test_importing_the_module_does_not_import_tensorrt(tmp_path):
    (tmp_path / "tensorrt.py").write_text("__version__ = '10.0.0'\n")  # importable: an eager import would load it
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import compressor.export.tensorrt, compressor.export.precision; "
            "print(sorted(m for m in ('tensorrt', 'torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ build flow (fake TensorRT)
class FakeTensorRT(types.ModuleType):
    """The members of the tensorrt module that build_engine touches; records what it was asked to do."""

    def __init__(self, version: str, unsupported: tuple[str, ...] = (), build_fails: bool = False,
                 rejected_cache: bytes | None = None, no_cache_after_build: bool = False, no_context: bool = False):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list = []
        self.unsupported, self.build_fails = unsupported, build_fails
        self.rejected_cache, self.no_cache_after_build = rejected_cache, no_cache_after_build
        self.no_context = no_context  # engine.create_execution_context() -> None
        major = int(version.split(".")[0])
        builder_flags = ["TF32", "DEBUG"] + (["FP16", "INT8"] if major < 11 else [])
        self.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags, start=0)
        self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=0)
        self.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
        self.LayerType = enum.Enum("LayerType", ["QUANTIZE", "DEQUANTIZE", "OTHER"])
        self.DataType = enum.Enum("DataType", ["FLOAT", "HALF", "INT8"])
        self.TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
        self.ILogger = type("ILogger", (), {"__init__": lambda self: None})
        fake = self

        class Severity(enum.Enum):
            ERROR, WARNING, INFO = 1, 2, 3

        class Builder:
            def __init__(self, logger):
                fake.logger = logger
                logger.log(Severity.INFO, "builder created")

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return FakeNetwork()

            def create_builder_config(self):
                return FakeConfig(fake)

            def create_optimization_profile(self):
                return types.SimpleNamespace(set_shape=lambda *args: fake.calls.append(("set_shape", *args)))

            def build_serialized_network(self, network, config):
                if fake.build_fails:
                    fake.logger.log(Severity.ERROR, "no implementation obeys reformatting-free rules")
                    return None
                return b"ENGINE:" + bytes(str(sorted(config.flags)), "ascii")

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []
                self.num_errors = 0

            def parse_from_file(self, path):
                graph = onnx.load(path).graph
                dtypes = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
                for node in graph.node:
                    if node.op_type in fake.unsupported:
                        self.errors.append(FakeParserError(node.name, node.op_type))
                    kind = {"QuantizeLinear": fake.LayerType.QUANTIZE}.get(node.op_type, fake.LayerType.OTHER)
                    half = dtypes.get(node.output[0]) == onnx.TensorProto.FLOAT16
                    self.network.layers.append(FakeLayer(kind, fake.DataType.HALF if half else fake.DataType.FLOAT))
                self.network.inputs = [types.SimpleNamespace(name=v.name) for v in graph.input]
                self.num_errors = len(self.errors)
                return not self.errors

            def get_error(self, index):
                return self.errors[index]

        class Runtime:
            def __init__(self, logger):
                fake.logger = logger

            def deserialize_cuda_engine(self, data):
                return FakeEngine(fake) if data.startswith(b"ENGINE:") else None

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime


class FakeConfig:
    def __init__(self, fake):
        self.fake, self.flags, self.cache = fake, {"TF32"}, None  # TensorRT's default: TF32 on

    def set_memory_pool_limit(self, pool, size):
        self.fake.calls.append(("workspace", size))

    def set_flag(self, flag):
        self.flags.add(flag.name)

    def clear_flag(self, flag):
        self.flags.discard(flag.name)

    def add_optimization_profile(self, profile):
        self.fake.calls.append(("profile",))

    def create_timing_cache(self, data):
        self.fake.calls.append(("cache_loaded", bytes(data)))
        return types.SimpleNamespace(data=bytes(data), serialize=lambda: bytes(data) + b"+new")

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache.data == self.fake.rejected_cache:  # TensorRT: made by another version or GPU
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return None if self.fake.no_cache_after_build else self.cache


class FakeLayer:
    def __init__(self, kind, dtype):
        self.type, self.num_outputs, self._dtype = kind, 1, dtype

    def get_output(self, index):
        return types.SimpleNamespace(dtype=self._dtype)


class FakeParserError:
    def __init__(self, node_name, op):
        self._name, self._op = node_name, op

    def desc(self):
        return f"No importer registered for op: {self._op}\n  (while parsing)"

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


class FakeNetwork:
    def __init__(self):
        self.layers, self.inputs = [], []

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))

    def get_layer(self, index):
        return self.layers[index]

    def get_input(self, index):
        return self.inputs[index]


class FakeEngine:
    """An engine with one float32 input (batch 1..8 of SHAPE images) and one output of 10 scores."""

    num_io_tensors = 2

    def __init__(self, fake):
        self.fake = fake

    def get_tensor_name(self, index):
        return ("input", "output")[index]

    def get_tensor_mode(self, name):
        return self.fake.TensorIOMode.INPUT if name == "input" else self.fake.TensorIOMode.OUTPUT

    def get_tensor_profile_shape(self, name, profile_index):
        return [(1, *SHAPE), (4, *SHAPE), (8, *SHAPE)]

    def get_tensor_dtype(self, name):
        return self.fake.DataType.FLOAT

    def get_tensor_shape(self, name):
        return (-1, *SHAPE) if name == "input" else (-1, 10)

    def create_execution_context(self):
        if self.fake.no_context:
            self.fake.logger.log(types.SimpleNamespace(name="ERROR"), "Requested amount of GPU memory could not be allocated")
            return None
        return types.SimpleNamespace()


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version: str, **kwargs) -> FakeTensorRT:
        fake = FakeTensorRT(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        return fake
    return install


@pytest.mark.parametrize(("version", "precision", "flags", "network_bits"), [
    ("10.3.0", "fp32", "[]", 0),  # TF32 cleared: an fp32 engine computes in fp32
    ("10.3.0", "fp16", "['FP16', 'TF32']", 0),
    ("10.3.0", "int8", "['INT8', 'TF32']", 0),
    ("11.0.0", "fp32", "[]", 1),
    ("11.0.0", "fp16", "['TF32']", 1),
    ("11.0.0", "int8", "['TF32']", 1),
])
def test_build_engine_sets_what_the_plan_says(fake_trt, variants, tmp_path, version, precision, flags, network_bits):
    fake = fake_trt(version)
    plan = builder_plan(major_version(version), precision, workspace_mb=64, min_batch=1, opt_batch=4, max_batch=8,
                        input_shape=SHAPE, timing_cache=tmp_path / "timing.cache")
    info = build_engine(variants[plan.onnx_variant], tmp_path / "model.engine", plan, tmp_path / "build.log")
    assert (tmp_path / "model.engine").read_bytes() == b"ENGINE:" + flags.encode()
    assert ("create_network", network_bits) in fake.calls and ("workspace", 64 << 20) in fake.calls
    assert ("set_shape", "input", (1, *SHAPE), (4, *SHAPE), (8, *SHAPE)) in fake.calls
    assert info.precision == precision and info.tensorrt_version == version
    assert info.size_bytes == len(b"ENGINE:" + flags.encode()) and info.onnx_variant == plan.onnx_variant
    assert "[INFO] builder created" in (tmp_path / "build.log").read_text()
    assert (tmp_path / "timing.cache").read_bytes() == b"+new"
    assert info.timing_cache == tmp_path / "timing.cache" and info.timing_cache_status == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.log", "model.engine", "timing.cache"]


def test_build_engine_reuses_the_timing_cache(fake_trt, variants, tmp_path):
    fake = fake_trt("10.3.0")
    (tmp_path / "timing.cache").write_bytes(b"old")
    plan = builder_plan(10, "fp32", input_shape=SHAPE, timing_cache=tmp_path / "timing.cache")
    info = build_engine(variants["fp32"], tmp_path / "e.engine", plan, tmp_path / "log.txt")
    assert ("cache_loaded", b"old") in fake.calls
    assert (tmp_path / "timing.cache").read_bytes() == b"old+new" and info.timing_cache_status == "reused"


def test_a_rejected_timing_cache_is_replaced_by_a_fresh_one(fake_trt, variants, tmp_path):
    fake = fake_trt("10.3.0", rejected_cache=b"foreign")  # set_timing_cache(cache, ignore_mismatch=False) -> False
    (tmp_path / "timing.cache").write_bytes(b"foreign")
    plan = builder_plan(10, "fp32", input_shape=SHAPE, timing_cache=tmp_path / "timing.cache")
    info = build_engine(variants["fp32"], tmp_path / "e.engine", plan, tmp_path / "log.txt")
    assert [c for c in fake.calls if c[0] == "cache_loaded"] == [("cache_loaded", b"foreign"), ("cache_loaded", b"")]
    assert (tmp_path / "timing.cache").read_bytes() == b"+new" and info.timing_cache_status == "replaced"
    assert re.search(r"\[compressor\] timing cache .*timing.cache was rejected by TensorRT 10.3.0",
                     (tmp_path / "log.txt").read_text())


def test_no_timing_cache_after_the_build_is_not_written(fake_trt, variants, tmp_path):
    fake_trt("11.0.0", no_cache_after_build=True)  # config.get_timing_cache() -> None
    plan = builder_plan(11, "fp32", input_shape=SHAPE, timing_cache=tmp_path / "timing.cache")
    info = build_engine(variants["fp32"], tmp_path / "e.engine", plan, tmp_path / "log.txt")
    assert info.path.is_file() and info.timing_cache is None and not (tmp_path / "timing.cache").exists()
    assert "[compressor] TensorRT returned no timing cache" in (tmp_path / "log.txt").read_text()


def test_build_engine_checks_plan_variant_and_version(fake_trt, variants, tmp_path):
    fake_trt("11.0.0")
    with pytest.raises(ExportError, match="looks like the fp32 ONNX variant but the int8 plan"):
        build_engine(variants["fp32"], tmp_path / "e.engine", builder_plan(11, "int8", input_shape=SHAPE), tmp_path / "log")
    with pytest.raises(ExportError, match="looks like the fp32 ONNX variant but the fp16 plan for TensorRT 11"):
        build_engine(variants["fp32"], tmp_path / "e.engine", builder_plan(11, "fp16", input_shape=SHAPE), tmp_path / "log")
    with pytest.raises(ExportError, match=r"plan is for TensorRT 10\.x but TensorRT 11\.0\.0 is installed"):
        build_engine(variants["fp32"], tmp_path / "e.engine", builder_plan(10, "fp16", input_shape=SHAPE), tmp_path / "log")
    plan = BuildPlan(11, "fp16", "fp16", ("FP16",), ("STRONGLY_TYPED",), 64, (1, *SHAPE), (1, *SHAPE), (1, *SHAPE))
    with pytest.raises(ExportError, match="no BuilderFlag.FP16 .removed in TensorRT 11"):
        build_engine(variants["fp16"], tmp_path / "e.engine", plan, tmp_path / "log")
    assert not (tmp_path / "e.engine").exists()


def test_build_engine_reports_parser_and_build_errors_in_one_line(fake_trt, variants, tmp_path):
    fake_trt("10.3.0", unsupported=("Conv",))
    plan = builder_plan(10, "fp32", input_shape=SHAPE)
    with pytest.raises(ExportError) as info:
        build_engine(variants["fp32"], tmp_path / "e.engine", plan, tmp_path / "log")
    message = str(info.value)
    assert "\n" not in message and "cannot parse" in message and "(Conv)" in message and "more parser errors" in message
    assert "node 'node_Conv" in message and "No importer registered for op: Conv (while parsing)" in message
    fake_trt("10.3.0", build_fails=True)
    with pytest.raises(ExportError, match=r"could not build .*no implementation obeys .*build log: .*log\)"):
        build_engine(variants["fp32"], tmp_path / "e.engine", plan, tmp_path / "log")
    assert "[ERROR] no implementation" in (tmp_path / "log").read_text() and not (tmp_path / "e.engine").exists()


def test_build_plan_input_name_must_exist(fake_trt, variants, tmp_path):
    fake_trt("10.3.0")
    plan = BuildPlan(10, "fp32", "fp32", (), (), 64, (1, *SHAPE), (1, *SHAPE), (1, *SHAPE), input_name="images")
    with pytest.raises(ExportError, match="no input 'images'.*input"):
        build_engine(variants["fp32"], tmp_path / "e.engine", plan, tmp_path / "log")


def test_an_engine_without_an_execution_context_is_one_clear_error(fake_trt, tmp_path, monkeypatch):
    fake_trt("10.3.0", no_context=True)
    monkeypatch.setattr(trt_run, "_cuda_device", lambda: torch.device("cpu"))  # torch sees no GPU here
    (tmp_path / "model.engine").write_bytes(b"ENGINE:[]")
    with pytest.raises(ExportError) as info:
        trt_run.run_engine(tmp_path / "model.engine", np.zeros((1, *SHAPE), np.float32))
    message = str(info.value)
    assert "\n" not in message and "cannot create an execution context" in message
    assert "Requested amount of GPU memory could not be allocated" in message


# ------------------------------------------------------------------------------------------ real engines
@pytest.fixture(scope="module")
def real_trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'compressor[trt]')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engine tests need a CUDA device and a CUDA build of torch")
    return major_version(trt.__version__)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("fp16", 2e-2), ("int8", 0.1)])
def test_real_engine_builds_runs_and_matches(real_trt, variants, tmp_path, precision, tolerance):
    plan = builder_plan(real_trt, precision, workspace_mb=256, min_batch=1, opt_batch=4, max_batch=8, input_shape=SHAPE,
                        timing_cache=tmp_path / "timing.cache")
    info = build_engine(variants[plan.onnx_variant], tmp_path / "model.engine", plan, tmp_path / "build.log")
    assert info.size_bytes > 0 and (tmp_path / "timing.cache").stat().st_size > 0
    images = np.random.default_rng(2).standard_normal((5, *SHAPE)).astype(np.float32)
    assert trt_run.engine_parity(info.path, variants[plan.onnx_variant], images) < tolerance
    assert trt_run.run_engine(info.path, images[:1]).shape == (1, 10)
    assert trt_run.run_engine(info.path, np.zeros((9, *SHAPE), np.float32)).shape == (9, 10)  # chunks of max batch 8
    times = trt_run.time_engine(info.path, batch_size=8, warmup=3, iterations=10)
    assert len(times) == 10 and all(t > 0 for t in times)
    with pytest.raises(ExportError, match="outside the engine's profile"):
        trt_run.time_engine(info.path, batch_size=9, warmup=0, iterations=1)
