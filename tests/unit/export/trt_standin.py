"""The real TensorRT Python bindings from PyPI, importable on a machine without a GPU, CUDA or TensorRT libraries.

``tensorrt-cu12-bindings`` is a small wheel (``tensorrt_bindings/tensorrt.so``, the pybind11 module) that links
against ``libnvinfer.so.N``, ``libnvonnxparser.so.N`` and ``libnvinfer_plugin.so.N`` and uses nine C symbols of
theirs (:data:`SYMBOLS`; ``nm -D --undefined-only tensorrt.so``). ``trt_standin.c``, compiled here with gcc into
libraries with those sonames, provides them, every factory returning NULL as a TensorRT that cannot initialise
CUDA does. ``import tensorrt`` then gives the real module: every class, method signature and enum value is
NVIDIA's, while ``trt.Builder(logger)`` and ``trt.Runtime(logger)`` fail as they do on a machine without a GPU.

The bindings load in a subprocess (``python -S``: nothing from site-packages, so a real TensorRT installed in
the test environment cannot interfere), one per version and environment; run as a script this module is that
subprocess (``surface``: the module's names, signatures and enum members; ``flow``: what compressor's TensorRT
functions do with these bindings), printing JSON. Wheels are downloaded once into
``~/.cache/compressor-test/tensorrt-bindings`` (``COMPRESSOR_TEST_CACHE`` moves it); without the package index
or gcc the tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "tensorrt-cu12-bindings"
VERSIONS = ("10.3.0", "10.8.0.43", "10.16.1.11", "11.4.0.106")  # 10.3: JetPack 6; 10.16 and 11.4: the newest
SYMBOLS = {  # library -> the symbols the bindings import from it (identical in all VERSIONS)
    "nvinfer": ("createInferBuilder_INTERNAL", "createInferRuntime_INTERNAL", "createInferRefitter_INTERNAL",
                "getPluginRegistry", "getBuilderPluginRegistry"),
    "nvonnxparser": ("createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"),
    "nvinfer_plugin": ("initLibNvInferPlugins",),
}
SOURCE = Path(__file__).with_name("trt_standin.c")
REPO = Path(__file__).resolve().parents[3]
# tensorrt/__init__.py of the tensorrt-cu12 metapackage (an sdist, the same two lines in 10.x and 11.x): what
# makes the bindings' tensorrt_bindings package importable as ``tensorrt``
METAPACKAGE_INIT = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n"


# ------------------------------------------------------------------------------------------ test side
def cache_dir() -> Path:
    root = os.environ.get("COMPRESSOR_TEST_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compressor-test"
    return base / "tensorrt-bindings"


def bindings(version: str) -> Path:
    """A folder for ``sys.path`` holding the unpacked wheel and the ``tensorrt`` package; skips without the wheel."""
    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip(f"the TensorRT bindings wheels are Linux-only (this is {sys.platform})")
    folder = cache_dir() / f"{version}-py{sys.version_info[0]}{sys.version_info[1]}"
    if (folder / "tensorrt" / "__init__.py").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        wheel = _download(version, Path(tmp) / "wheel")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        (unpacked / "tensorrt").mkdir()
        (unpacked / "tensorrt" / "__init__.py").write_text(METAPACKAGE_INIT)
        try:
            os.replace(unpacked, folder)
        except OSError:  # another run unpacked it meanwhile
            if not (folder / "tensorrt" / "__init__.py").is_file():
                raise
    return folder


def _download(version: str, dest: Path) -> Path:
    import pytest

    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--retries", "2", "--quiet", "--dest", str(dest), f"{PACKAGE}=={version}"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"could not download {PACKAGE}=={version} with pip: {exc}")
    wheels = sorted(dest.glob("*.whl"))
    if out.returncode != 0 or not wheels:
        lines = [line for line in (out.stderr or out.stdout).splitlines() if line.strip()]
        pytest.skip(f"could not download {PACKAGE}=={version} from the package index (no network?): "
                    f"{lines[-1] if lines else f'pip exited with {out.returncode}'}")
    return wheels[0]


def standin_libraries(major: int, folder: Path) -> Path:
    """``folder`` with libnvinfer.so.N, libnvonnxparser.so.N and libnvinfer_plugin.so.N built from the C stand-in."""
    import pytest

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("the TensorRT stand-in libraries need a C compiler (gcc) on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    for library in SYMBOLS:
        soname = f"lib{library}.so.{major}"
        command = [gcc, "-shared", "-fPIC", "-O1", f"-DSTANDIN_{library.upper()}", f"-DSTANDIN_VERSION={major}0000",
                   f"-Wl,-soname,{soname}", "-o", str(folder / soname), str(SOURCE)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"gcc could not build the stand-in {soname}: {out.stderr.strip()}")
    return folder


def probe(command: str, path: Path, libraries: Path | None, work: Path) -> dict:
    """Run this module as ``python -S trt_standin.py command work`` with the bindings at ``path`` importable
    and the stand-in ``libraries`` (None: none) on LD_LIBRARY_PATH; the JSON it prints."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(path)])
    if libraries is not None:
        env["LD_LIBRARY_PATH"] = str(libraries)
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-S", __file__, command, str(work)], capture_output=True, text=True,
                         env=env, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"the TensorRT probe '{command}' failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ subprocess side
def surface() -> dict:
    """Every public name of the tensorrt module: kind, pybind signatures, enum members, class attributes."""
    import tensorrt as trt

    names = {name: _describe(name, getattr(trt, name), 2) for name in dir(trt) if not name.startswith("_")}
    return {"version": trt.__version__, "names": names}


def _describe(name: str, obj, depth: int) -> dict:
    if isinstance(obj, type):
        node: dict = {"kind": "class"}
        if hasattr(obj, "__members__"):
            node["members"] = {k: int(v) for k, v in obj.__members__.items()}
        if depth > 0:
            attrs = [a for a in dir(obj) if a == "__init__" or not a.startswith("_")]
            node["attrs"] = {a: _describe(a, getattr(obj, a), depth - 1) for a in attrs}
        return node
    if isinstance(obj, property):
        return {"kind": "property"}
    if callable(obj):
        return {"kind": "method", "signatures": _signatures(name, obj.__doc__ or "")}
    return {"kind": "value"}


def _signatures(name: str, doc: str) -> list[str]:
    """The pybind11 signature lines of ``name`` (one per overload) from its docstring."""
    found = []
    for line in doc.splitlines():
        text = line.strip()
        if text[:1].isdigit() and ". " in text:
            text = text.split(". ", 1)[1]
        if text.startswith(f"{name}(") and not text.startswith(f"{name}(*args, **kwargs)"):
            found.append(text)
    return found


def flow(work: Path) -> dict:
    """What compressor's TensorRT functions do with the importable bindings: each outcome a value or an error."""
    from compressor.export import tensorrt as build
    from compressor.export import tensorrt_run as run

    result = {"import": _outcome(_import_version), "available": _outcome(build.tensorrt_available),
              "problem": _outcome(lambda: build.tensorrt_problem()),
              "require": _outcome(build.require_tensorrt)}
    onnx, engine = work / "model.onnx", work / "model.engine"
    onnx.write_bytes(b"not parsed: the builder is made first")
    engine.write_bytes(b"not deserialized: the runtime is made first")
    major = int(str(result["import"].get("value", "10")).split(".")[0])
    plan = build.builder_plan(major, "fp32")
    result["build"] = _outcome(lambda: build.build_engine(onnx, work / "out.engine", plan, work / "build.log"))
    result["build_log"] = (work / "build.log").read_text() if (work / "build.log").is_file() else None
    run._cuda_device = lambda: "cuda:0"  # torch's CUDA check passes: TensorRT's own is what is probed
    result["run"] = _outcome(lambda: run._EngineSession.open(engine))
    if "value" in result["import"]:
        result.update(_with_module(build, major))
    return result


def _with_module(build, major: int) -> dict:
    import tensorrt as trt

    def log_each_severity() -> list[str]:
        logger = build._recording_logger(trt)
        for severity in trt.ILogger.Severity.__members__.values():
            logger.log(severity, f"{severity.name.lower()}  message\n")
        return [*logger.records, f"last_error={logger.last_error()}", f"is_ilogger={isinstance(logger, trt.ILogger)}"]

    flags = {p: _outcome(lambda p=p: build._network_flags(trt, build.builder_plan(major, p))) for p in build.PRECISIONS}
    return {"logger": _outcome(log_each_severity), "network_flags": flags}


def _import_version() -> str:
    import tensorrt

    return str(tensorrt.__version__)


def _outcome(fn) -> dict:
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - the probe reports every failure to the test
        return {"error": type(exc).__name__, "classes": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
    return {"value": value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)}


if __name__ == "__main__":
    what, folder = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(surface() if what == "surface" else flow(folder)))
