"""Which onnxruntime execution provider a session really runs on, probed once per provider chain.

onnxruntime-gpu lists the CUDA and TensorRT providers in ``get_available_providers()`` whether or not this
machine has a GPU and the CUDA / cuDNN (and TensorRT) libraries; a session asked for them then warns and runs
on CPU. Only starting a session tells: :func:`provider_started` starts one on a one-node in-memory model (an
Identity on a float[1], built with ``onnx.helper``) and returns ``session.get_providers()[0]``. The answer is
cached per chain for the process (a CUDA provider that could not start does not start later either).

:func:`session_providers` is the provider list a session of one file gets. onnxruntime's TensorRT provider
builds its own engine per input shape on the first run; it gets options (names from onnxruntime's TensorRT
provider documentation): ``trt_fp16_enable`` for an FP16 file, ``trt_int8_enable`` for an INT8 QDQ file (explicit
quantization, no calibration table), and ``trt_engine_cache_enable`` / ``trt_timing_cache_enable`` with their
paths in compressor's cache (``ort-tensorrt/``), so a second run reuses the engines. It has no switch for TF32,
which TensorRT enables by default: its FP32 rows may use TF32 (the ``tensorrt`` backend's FP32 engines do not).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

PROBE_OPSET, PROBE_IR_VERSION = 13, 8  # read by every onnxruntime >= 1.14


@functools.cache
def provider_started(chain: tuple[str, ...]) -> str:
    """The provider a session asked for ``chain`` (first choice first) starts on; ``no provider (<error>)``
    when no session starts at all."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", values[:1], values[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", PROBE_OPSET)], ir_version=PROBE_IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failed start is for the caller to report, not for the log
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Specified provider ... is not in available provider names"
        try:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=list(chain))
        except Exception as exc:  # noqa: BLE001
            return f"no provider ({type(exc).__name__})"
    return session.get_providers()[0]


def session_providers(chain: list[str], path: Path) -> list:
    """``chain`` with the TensorRT provider's options filled in for the file at ``path``."""
    return [(name, tensorrt_provider_options(path)) if name == "TensorrtExecutionProvider" else name for name in chain]


def tensorrt_provider_options(path: Path) -> dict[str, str]:
    from ..environment import cache_dir

    name = Path(path).name
    cache = cache_dir("ort-tensorrt")
    cache.mkdir(parents=True, exist_ok=True)
    return {"trt_fp16_enable": str(name.endswith(".fp16.onnx")),
            "trt_int8_enable": str(".int8." in name),
            "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}
