"""compressor's TensorRT code against NVIDIA's real Python bindings, 10.x and 11.x, without a GPU.

``trt_standin`` downloads the ``tensorrt-cu12-bindings`` wheels (once, into a cache) and makes them importable
with stand-in TensorRT libraries whose factories return NULL, as on a machine where TensorRT cannot initialise
CUDA. What can be checked without a GPU is checked on the real module: every member our code touches (found
in our source by its AST, so a new call is checked without editing this file), how it is called against the
pybind11 signatures, the enum members and values the build plans name, the ``ILogger`` subclass, and what a
user sees when CUDA or the TensorRT libraries are missing. Building and running engines needs a GPU
(``test_tensorrt.py``: the flow against ``FakeTensorRT``, whose names are checked here, and the GPU tests).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

from compressor.export import tensorrt_run
from compressor.export.tensorrt import PRECISIONS, builder_plan

from . import trt_standin as standin
from .test_tensorrt import FakeConfig, FakeEngine, FakeLayer, FakeNetwork, FakeParserError, FakeTensorRT

pytestmark = pytest.mark.trt_bindings

SOURCES = [standin.REPO / "compressor" / "export" / name for name in ("tensorrt.py", "tensorrt_run.py")]
RECEIVERS = {  # the variables of SOURCES holding TensorRT objects -> their class (None: the tensorrt module)
    "trt": None, "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
    "config": "IBuilderConfig", "profile": "IOptimizationProfile", "cache": "ITimingCache", "serialized": "IHostMemory",
    "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext", "self.context": "IExecutionContext",
    "layer": "ILayer", "first": "ParserError", "severity": "ILogger.Severity", "trt_dtype": "DataType",
}
RETURNS = {  # methods whose result our code tests for success -> the real return type
    ("OnnxParser", "parse_from_file"): "bool", ("IBuilderConfig", "set_timing_cache"): "bool",
    ("IExecutionContext", "set_input_shape"): "bool", ("IExecutionContext", "set_tensor_address"): "bool",
    ("IExecutionContext", "execute_async_v3"): "bool",
}
ENUM_VALUES = {  # the members our code and plans use, per major version (changes between minors show here)
    10: {"BuilderFlag": {"FP16": 0, "INT8": 1, "TF32": 6}, "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 1},
         "MemoryPoolType": {"WORKSPACE": 0}, "TensorIOMode": {"INPUT": 1}, "DataType": {"FLOAT": 0, "HALF": 1},
         "LayerType": {"QUANTIZE": 32}},
    11: {"BuilderFlag": {"TF32": 6}, "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0},
         "MemoryPoolType": {"WORKSPACE": 0}, "TensorIOMode": {"INPUT": 1}, "DataType": {"FLOAT": 0, "HALF": 1},
         "LayerType": {"QUANTIZE": 32}},
}


@dataclass
class Real:
    """One version of the real bindings: where they are, and what the probes report."""

    version: str
    path: Path
    libraries: Path
    work: Path

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @cached_property
    def surface(self) -> dict:
        return standin.probe("surface", self.path, self.libraries, self.work / "surface")["names"]

    @cached_property
    def flow(self) -> dict:
        return standin.probe("flow", self.path, self.libraries, self.work / "flow")

    @cached_property
    def bare(self) -> dict:
        """The flow with the bindings but without any TensorRT library."""
        return standin.probe("flow", self.path, None, self.work / "bare")

    def node(self, dotted: str) -> dict:
        parts = dotted.split(".")
        node = self.surface[parts[0]]
        for part in parts[1:]:
            node = node["attrs"][part]
        return node

    def members(self, enum: str) -> dict[str, int]:
        return self.node(enum)["members"]


@pytest.fixture(scope="module", params=standin.VERSIONS)
def real(request, tmp_path_factory) -> Real:
    version = request.param
    path = standin.bindings(version)
    work = tmp_path_factory.mktemp(f"trt-{version}")
    return Real(version, path, standin.standin_libraries(int(version.split(".")[0]), work / "lib"), work)


# ------------------------------------------------------------------------------------------ our uses, from the source
@dataclass(frozen=True)
class Use:
    where: str            # file:line and the expression
    owner: str | None     # TensorRT class (dotted) or None for the module
    instance: bool        # an object of the class (self is bound) or the class itself
    attr: str
    call: tuple[int, tuple[str, ...]] | None  # (positional count, keyword names) when called


def uses(real: Real, sources: dict[str, str] | None = None) -> list[Use]:
    """Every attribute ``sources`` (file name -> text; SOURCES by default) read or call on a TensorRT module,
    class or object."""
    found = []
    for name, text in (sources or {p.name: p.read_text() for p in SOURCES}).items():
        tree = ast.parse(text)
        calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            for owner, instance, attr, call in _accesses(node, calls, real):
                found.append(Use(f"{name}:{node.lineno} {ast.unparse(node)[:80]}", owner, instance, attr, call))
    return found


def member_problems(real: Real, found: list[Use]) -> list[str]:
    problems = []
    for use in found:
        owner = real.surface if use.owner is None else real.node(use.owner).get("attrs", {})
        node = owner.get(use.attr) if use.attr != "__version__" else {"kind": "value"}
        if node is None:
            problems.append(f"{use.where}: TensorRT {real.version} has no {use.owner or 'tensorrt'}.{use.attr}")
        elif node["kind"] in ("property", "value") and use.call is not None:
            problems.append(f"{use.where}: {use.owner}.{use.attr} is a {node['kind']}, not a method")
        elif node["kind"] == "method" and use.call is None:
            problems.append(f"{use.where}: {use.owner}.{use.attr} is a method: call it")
    return problems


def call_problems(real: Real, found: list[Use]) -> list[str]:
    problems = []
    for use in found:
        node = (real.surface if use.owner is None else real.node(use.owner)["attrs"]).get(use.attr)
        if use.call is None or node is None or node["kind"] not in ("class", "method"):
            continue  # not a call, or reported by member_problems
        method, bound = (node["attrs"]["__init__"], True) if node["kind"] == "class" else (node, use.instance)
        signatures = method.get("signatures", [])
        if not signatures:
            problems.append(f"{use.where}: no pybind11 signature for {use.owner}.{use.attr}")
        elif not any(_accepts(s, use.call, bound) for s in signatures):
            problems.append(f"{use.where}: called with {use.call}, TensorRT {real.version} has {signatures}")
    return problems


def _accesses(node, calls: dict, real: Real):
    if isinstance(node, ast.Attribute):
        resolved = _resolve(node.value, real)
        if resolved is not None:
            yield (*resolved, node.attr, _signature_of(calls.get(id(node))))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_call", "getattr"):
        target, name = (node.args + [None, None])[:2]
        resolved = _resolve(target, real) if target is not None else None
        if resolved is not None and isinstance(name, ast.Constant):  # _call(obj, "m") calls obj.m()
            yield (*resolved, name.value, (0, ()) if node.func.id == "_call" else None)


def _signature_of(call: ast.Call | None) -> tuple[int, tuple[str, ...]] | None:
    return None if call is None else (len(call.args), tuple(k.arg for k in call.keywords))


def _resolve(expr, real: Real) -> tuple[str | None, bool] | None:
    """(TensorRT class or None for the module, whether it is an instance) of ``expr``, or None when not TensorRT's."""
    text = ast.unparse(expr)
    if text in RECEIVERS:
        return RECEIVERS[text], RECEIVERS[text] is not None
    if isinstance(expr, ast.Attribute):
        parent = _resolve(expr.value, real)
        if parent is not None and not parent[1]:  # trt.X or trt.X.Y: a class (or enum) of the module
            dotted = f"{parent[0]}.{expr.attr}" if parent[0] else expr.attr
            if _find(real, dotted, "class") is not None:
                return dotted, False
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):  # obj.method(...).attr: its return type
        parent = _resolve(expr.func.value, real)
        if parent is not None and parent[1]:
            returned = _returns(real, parent[0], expr.func.attr)
            if returned and _find(real, returned, "class") is not None:
                return returned, True
    return None


def _find(real: Real, dotted: str, kind: str) -> dict | None:
    try:
        node = real.node(dotted)
    except KeyError:
        return None
    return node if node["kind"] == kind else None


def _returns(real: Real, owner: str, method: str) -> str | None:
    signatures = real.node(owner)["attrs"].get(method, {}).get("signatures", [])
    names = {s.rsplit("->", 1)[1].strip().split(".")[-1] for s in signatures if "->" in s}
    return names.pop() if len(names) == 1 else None


def _parameters(signature: str) -> list[tuple[str, bool]]:
    """[(name, has a default)] of a pybind11 signature line ``name(self: T, a: T, b: T = 0) -> R``."""
    inner, depth, start, parts = signature[signature.index("(") + 1:], 0, 0, []
    for i, char in enumerate(inner):
        depth += char in "([{<"
        depth -= char in ")]}>" and not (char == ">" and inner[i - 1] == "-")
        if depth < 0 or (char == "," and depth == 0):
            parts.append(inner[start:i].strip())
            start = i + 1
        if depth < 0:
            break
    return [(p.split(":")[0].strip(), "=" in p) for p in parts if p]


def _accepts(signature: str, call: tuple[int, tuple[str, ...]], bound: bool) -> bool:
    params = _parameters(signature)[1 if bound else 0:]
    positional, keywords = call
    rest = params[positional:]
    return (len(params) >= positional and set(keywords) <= {n for n, _ in rest}
            and all(default or name in keywords for name, default in rest))


# ------------------------------------------------------------------------------------------ names and signatures
def test_the_bindings_need_exactly_the_nine_standin_symbols(real):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--undefined-only", str(real.path / "tensorrt_bindings" / "tensorrt.so")],
                         capture_output=True, text=True, check=True, timeout=60)
    strong = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[:1] == ["U"]}
    tensorrt = {s for s in strong if "@" not in s and not s.startswith(("Py", "_Py", "dl"))}
    assert tensorrt == {s for symbols in standin.SYMBOLS.values() for s in symbols}
    assert len(tensorrt) == 9


def test_the_receiver_table_matches_the_source():
    text = "\n".join(path.read_text() for path in SOURCES)
    dead = [name for name in RECEIVERS if not re.search(rf"(?<![\w.]){re.escape(name)}\b", text)]
    assert not dead, f"RECEIVERS names variables that compressor/export/tensorrt*.py no longer has: {dead}"


def test_every_tensorrt_member_we_use_exists_and_is_used_as_what_it_is(real):
    found = uses(real)
    assert len(found) > 40  # the collector sees our code (a broken one would check nothing)
    problems = member_problems(real, found)
    assert not problems, "\n".join(problems)


def test_every_call_matches_a_real_signature(real):
    found = uses(real)
    assert sum(use.call is not None for use in found) > 25
    problems = call_problems(real, found)
    assert not problems, "\n".join(problems)


WRONG = """
def build(trt, config, engine, context, cache):
    config.set_timing_cache(cache, ignore=False)
    config.set_flag(trt.BuilderFlag.FP16_FAST)
    engine.num_io_tensors()
    context.execute_async_v3
    trt.Builder()
    context.set_tensor_address("input")
"""


def test_the_checks_catch_wrong_uses(real):
    found = uses(real, {"wrong.py": WRONG})
    problems = member_problems(real, found) + call_problems(real, found)
    assert sorted(int(p.split(":")[1].split()[0]) for p in problems) == [3, 4, 5, 6, 7, 8], problems


def test_results_we_test_for_success_are_bools(real):
    for (owner, method), expected in RETURNS.items():
        assert _returns(real, owner, method) == expected, (owner, method, real.node(owner)["attrs"][method])


def test_names_we_use_as_strings_exist(real):
    assert {"desc", "node", "node_name", "node_operator"} <= set(real.node("ParserError")["attrs"])  # via _call
    assert {"INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"} == set(real.members("ILogger.Severity"))
    assert set(tensorrt_run._TORCH_DTYPES) <= set(real.members("DataType"))
    (log,) = real.node("ILogger")["attrs"]["log"]["signatures"]  # RecordingLogger.log(self, severity, msg)
    assert [name for name, _ in _parameters(log)] == ["self", "severity", "msg"]


def test_build_plans_name_real_flags(real):
    flags, network = real.members("BuilderFlag"), real.members("NetworkDefinitionCreationFlag")
    for precision in PRECISIONS:
        plan = builder_plan(real.major, precision)
        assert set(plan.builder_flags) | set(plan.cleared_flags) <= set(flags), (precision, sorted(flags))
        assert set(plan.network_flags) <= set(network), (precision, sorted(network))
    assert ("FP16" in flags, "INT8" in flags) == (real.major == 10, real.major == 10)  # gone in TensorRT 11
    assert builder_plan(real.major, "fp32").cleared_flags == ("TF32",)  # TF32 is on by default on both majors


def test_enum_values_we_depend_on(real):
    for enum, expected in ENUM_VALUES[real.major].items():
        assert {name: real.members(enum)[name] for name in expected} == expected, enum
    strongly_typed = 1 << real.members("NetworkDefinitionCreationFlag")["STRONGLY_TYPED"]
    bits = {p: real.flow["network_flags"][p] for p in PRECISIONS}  # _network_flags on the real enum
    assert bits == {p: {"value": strongly_typed if real.major >= 11 else 0} for p in PRECISIONS}


def test_the_fake_tensorrt_of_the_flow_tests_uses_real_names(real):
    fake = FakeTensorRT(real.version)
    for enum in ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "LayerType", "DataType",
                 "TensorIOMode"):
        names = set(getattr(fake, enum).__members__) - {"OTHER"}  # OTHER: any layer that is not a QUANTIZE
        assert names <= set(real.members(enum)), (enum, names - set(real.members(enum)))
    classes = {"Builder": fake.Builder, "OnnxParser": fake.OnnxParser, "IBuilderConfig": FakeConfig,
               "INetworkDefinition": FakeNetwork, "ILayer": FakeLayer, "ParserError": FakeParserError,
               "Runtime": fake.Runtime, "ICudaEngine": FakeEngine}
    for name, cls in classes.items():
        ours = {a for a in vars(cls) if not a.startswith("_")}
        assert ours <= set(real.node(name)["attrs"]), (name, ours - set(real.node(name)["attrs"]))


# ------------------------------------------------------------------------------------------ behaviour on the real module
def test_the_recording_logger_subclasses_the_real_ilogger(real):
    records = real.flow["logger"]["value"]
    assert records == ["[INTERNAL_ERROR] internal_error  message\n", "[ERROR] error  message\n",
                       "[WARNING] warning  message\n", "[INFO] info  message\n",  # VERBOSE is dropped
                       "last_error=error message", "is_ilogger=True"]


def test_the_bindings_with_their_libraries_are_found(real):
    assert real.flow["import"] == {"value": real.version}
    assert real.flow["available"] == {"value": real.version} and real.flow["require"] == {"value": real.version}
    assert real.flow["problem"] == {"value": None}


@pytest.mark.parametrize("step", ["build", "run"])
def test_tensorrt_that_cannot_initialise_cuda_is_one_clear_error(real, step):
    outcome = real.flow[step]  # trt.Builder / trt.Runtime -> TypeError: factory function returned nullptr
    assert outcome.get("error") == "ExportError", outcome
    message = outcome["message"]
    assert "\n" not in message and f"TensorRT {real.version} could not initialise CUDA" in message
    assert "nvidia-smi" in message and "driver" in message, message
    if step == "build":
        assert real.flow["build_log"] is not None  # the log is written, as for any failed build


def test_bindings_without_their_libraries_name_the_missing_library(real):
    reason = real.bare["import"].get("message", "")
    if "error" not in real.bare["import"]:
        pytest.skip("TensorRT libraries are installed on this machine: the bindings load without the stand-in")
    library = reason.split(":")[0]
    assert re.fullmatch(rf"lib\w+\.so\.{real.major}", library), reason
    assert real.bare["available"] == {"value": None}
    problem = real.bare["problem"]["value"]
    assert "installed" in problem and "not installed" not in problem and library in problem, problem
    for step in ("require", "build", "run"):
        outcome = real.bare[step]
        assert outcome["error"] == "ExportError" and "MissingDependencyError" not in outcome["classes"], outcome
        message = outcome["message"]
        assert "\n" not in message and "not installed" not in message and library in message, message
        assert f"tensorrt-cu12-libs=={real.version}" in message and "LD_LIBRARY_PATH" in message, message
