"""Latency of single layers, each timed alone on the target backend, cached on disk: the measured part of the
latency model behind ``pruning.latency_target`` (``surgery/latency_model.py``).

A :class:`LayerSpec` is one conv (or a linear layer, timed as a 1x1 conv over its rows: the same GEMM) at
given channel counts. :func:`layer_onnx` writes it as a one-node ONNX graph with random weights and a dynamic
batch; :class:`LayerTimer` times every spec it has not seen on the backend (onnxruntime on its execution
provider, or PyTorch for the torch backends), interleaved over a few rounds, and keeps the median per spec in
a JSON table per backend, machine (CPU, cores, threads, library versions) and batch under the cache folder,
so that a second run measures nothing it already knows. Isolated layer times do not add up to whole-graph
time (onnxruntime keeps blocked NCHWc layouts across neighbours, fuses activations): the table ranks widths
and groups; the whole graph is what the search checks.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .._io import write_json
from ..environment import available_cores, cpu_name
from ..progress import track
from .backends import torch_threads

ROUNDS = 5  # rounds per spec (the median is kept)
MIN_ROUND_MS = 15.0  # each round times this long at least (more iterations for small layers)
MAX_ITERATIONS = 200
WARMUP = 2
CACHE_VERSION = 3
CHUNK = 64  # graphs held open and interleaved at once


@dataclass(frozen=True)
class LayerSpec:
    """One layer at given channel counts; ``in_hw`` is its input's spatial size (a linear layer: rows, 1)."""

    kind: str  # conv | convtranspose | linear
    cin: int
    cout: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]  # begins then ends, as ONNX pads
    dilation: tuple[int, ...]
    in_hw: tuple[int, ...]
    bias: bool = True
    depthwise: bool = False
    fed_from: int = 0  # >0: timed behind a 1x1 conv from this many channels (the layer's input made in-graph)

    @classmethod
    def of(cls, layer) -> LayerSpec:
        """The spec of a ``surgery.cost`` layer record at its full width."""
        shape = layer.shape
        return cls(kind=shape["kind"], cin=layer.cin, cout=layer.cout, groups=layer.groups,
                   kernel=tuple(shape["kernel"]), stride=tuple(shape["stride"]), padding=tuple(shape["padding"]),
                   dilation=tuple(shape["dilation"]), in_hw=tuple(shape["in_hw"]), bias=layer.bias,
                   depthwise=layer.depthwise)

    def at(self, cin: int, cout: int) -> LayerSpec:
        """The same layer with ``cin`` inputs and ``cout`` outputs (a depthwise conv keeps groups = channels)."""
        groups = max(1, min(cin, cout)) if self.depthwise else self.groups
        return replace(self, cin=max(1, cin), cout=max(1, cout), groups=groups, fed_from=0)

    def fed(self, channels: int) -> LayerSpec:
        """This layer behind a 1x1 conv from ``channels`` inputs: how it runs on an input another layer made
        (a backend may keep that tensor in its own blocked layout, padded to a channel multiple)."""
        return replace(self, fed_from=channels)

    def feeder(self) -> LayerSpec:
        """The 1x1 conv in front of a :meth:`fed` spec, alone (its time is subtracted)."""
        return _pointwise(self.fed_from, self.cin, self.in_hw)

    @property
    def key(self) -> str:
        dims = lambda values: "x".join(map(str, values))  # noqa: E731
        return (f"{self.kind} k{dims(self.kernel)} s{dims(self.stride)} p{dims(self.padding)} d{dims(self.dilation)} "
                f"g{self.groups} {self.cin}->{self.cout} @{dims(self.in_hw)}{'' if self.bias else ' nobias'}"
                f"{f' fed{self.fed_from}' if self.fed_from else ''}")


def out_hw(spec: LayerSpec) -> tuple[int, ...]:
    """Spatial size of the layer's output."""
    dims = len(spec.kernel)
    if spec.kind == "convtranspose":
        return tuple((i - 1) * s - spec.padding[j] - spec.padding[j + dims] + d * (k - 1) + 1
                     for j, (i, s, d, k) in enumerate(zip(spec.in_hw, spec.stride, spec.dilation, spec.kernel)))
    return tuple((i + spec.padding[j] + spec.padding[j + dims] - d * (k - 1) - 1) // s + 1
                 for j, (i, s, d, k) in enumerate(zip(spec.in_hw, spec.stride, spec.dilation, spec.kernel)))


@dataclass(frozen=True)
class BlockSpec:
    """Layers timed together as one graph, the way a group's channels flow: ``stem`` in sequence (a producer,
    then depthwise convs), a ReLU after each, then every ``heads`` layer reading the stem's output (after a
    max-pool by ``pools[i]`` where the graph pools in between): the group's width lives inside the graph, in
    whatever layout the backend keeps between layers."""

    stem: tuple[LayerSpec, ...]
    heads: tuple[LayerSpec, ...] = ()
    pools: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        heads = ", ".join(f"{h.key}{f' pool{p}' if p > 1 else ''}" for h, p in zip(self.heads, self.pools))
        return f"block[fed > {' > '.join(s.key for s in self.stem)} | {heads} > drained]"


def layer_onnx(spec: LayerSpec | BlockSpec, opset: int = 18):
    """A one-node (or, for a :class:`BlockSpec`, one-block) ONNX model with random weights and input ``x``."""
    if isinstance(spec, BlockSpec):
        return _block_onnx(spec, opset)
    return _layer_onnx(spec, opset)


def _block_onnx(block: BlockSpec, opset: int):
    """feeder 1x1 conv -> stem (ReLU after each) -> heads (each after its max-pool) -> a 1x1 drain conv each:
    the feeder and drains (fixed widths, so the same time at every width of the group) keep the block's input
    and outputs inside the graph, as its neighbours do in the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    first, inits = block.stem[0], []
    nodes = [_conv_node(_pointwise(first.cin, first.cin, first.in_hw), "x", "fed", "f", inits, rng)]
    source = "fed"
    for i, spec in enumerate(block.stem):
        nodes.append(_conv_node(spec, source, f"s{i}", f"s{i}", inits, rng))
        nodes.append(helper.make_node("Relu", [f"s{i}"], [f"r{i}"]))
        source = f"r{i}"
    outputs = []
    for i, (head, pool) in enumerate(zip(block.heads, block.pools)):
        feed = source
        if pool > 1:
            feed = f"p{i}"
            nodes.append(helper.make_node("MaxPool", [source], [feed], kernel_shape=[pool] * len(head.kernel),
                                          strides=[pool] * len(head.kernel)))
        nodes.append(_conv_node(head, feed, f"h{i}", f"h{i}", inits, rng))
        drain = _pointwise(head.cout, head.cout, out_hw(head))
        nodes.append(_conv_node(drain, f"h{i}", f"d{i}", f"d{i}", inits, rng))
        outputs.append(helper.make_tensor_value_info(f"d{i}", TensorProto.FLOAT, _dynamic(drain)))
    if not outputs:
        outputs.append(helper.make_tensor_value_info(source, TensorProto.FLOAT, _dynamic(block.stem[-1])))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", first.cin, *first.in_hw])
    graph = helper.make_graph(nodes, "block", [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="compressor")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def _pointwise(cin: int, cout: int, hw: tuple[int, ...]) -> LayerSpec:
    ones = (1,) * len(hw)
    return LayerSpec("conv", cin, cout, 1, ones, ones, (0,) * 2 * len(hw), ones, tuple(hw), False)


def _dynamic(spec: LayerSpec) -> list:
    return ["N", spec.cout, *["?"] * len(spec.in_hw)]


def _layer_onnx(spec: LayerSpec, opset: int):
    """A one-node ONNX model of ``spec`` (random weights; input ``x`` of shape [N, cin, *in_hw])."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes, inits, source = [], [], "x"
    if spec.fed_from:
        feeder = spec.feeder()
        nodes.append(_conv_node(feeder, source, "fed", "f", inits, rng))
        source = "fed"
    nodes.append(_conv_node(spec, source, "y", "l", inits, rng))
    cin = spec.fed_from or spec.cin
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, *spec.in_hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, _dynamic(spec))
    graph = helper.make_graph(nodes, "layer", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="compressor")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def _conv_node(spec: LayerSpec, source: str, output: str, prefix: str, inits: list, rng):
    import numpy as np
    from onnx import helper, numpy_helper

    transposed = spec.kind == "convtranspose"
    wshape = [spec.cin, spec.cout // spec.groups, *spec.kernel] if transposed else \
        [spec.cout, spec.cin // spec.groups, *spec.kernel]
    inits.append(numpy_helper.from_array((rng.standard_normal(wshape) * 0.1).astype(np.float32), f"{prefix}w"))
    inputs = [source, f"{prefix}w"]
    if spec.bias:
        inits.append(numpy_helper.from_array(np.zeros(spec.cout, np.float32), f"{prefix}b"))
        inputs.append(f"{prefix}b")
    attrs = dict(kernel_shape=list(spec.kernel), strides=list(spec.stride), pads=list(spec.padding),
                 dilations=list(spec.dilation), group=spec.groups)
    return helper.make_node("ConvTranspose" if transposed else "Conv", inputs, [output], **attrs)


def default_cache() -> Path:
    """$COMPRESSOR_CACHE/latency, else $XDG_CACHE_HOME/compressor/latency, else ~/.cache/compressor/latency."""
    from ..environment import cache_dir

    return cache_dir("latency")


class LayerTimer:
    """Median milliseconds of layer specs on ``backend`` at ``batch``, measured once and cached in ``cache``."""

    def __init__(self, backend: str, batch: int, threads: int | None, cache: Path | None = None):
        from .backends import require_backend

        self.backend, self.batch = require_backend(backend), batch
        self.threads = threads or available_cores()
        self.machine = machine_facts(self.backend, self.threads)
        digest = hashlib.sha256(json.dumps(self.machine, sort_keys=True).encode()).hexdigest()[:12]
        self.path = Path(cache or default_cache()) / f"{backend}-b{batch}-{digest}.json"
        self.table = self._read()
        self.measured = 0  # specs timed by this timer (the rest came from the cache)

    def ms(self, specs: Iterable[LayerSpec]) -> dict[str, float]:
        """spec.key -> median ms for every spec; the ones not in the table are timed now and saved."""
        specs = list({s.key: s for s in specs}.values())
        missing = [s for s in specs if s.key not in self.table]
        if missing:
            with torch_threads(self.threads):
                self.table.update(self._time(missing))
            self.measured += len(missing)
            self._write()
        return {s.key: self.table[s.key] for s in specs}

    def _time(self, specs: list) -> dict[str, float]:
        """Per spec, the median over ``ROUNDS`` rounds; within a chunk of specs the rounds are interleaved
        (every spec once per round), so that a slow moment of the machine hits all of them alike."""
        out: dict[str, float] = {}
        chunks = [specs[i:i + CHUNK] for i in range(0, len(specs), CHUNK)]
        with tempfile.TemporaryDirectory(prefix="compressor-layers-") as tmp:
            for chunk in track(chunks, f"layer latency ({self.backend}, batch {self.batch}, {len(specs)} graphs)"):
                runners, counts = [], []
                for spec in chunk:
                    runner = self._runner(spec, Path(tmp))
                    runner.prepare(self.batch)
                    runner.warm(self.batch, WARMUP)
                    first = statistics.median(runner.time(self.batch, 3))
                    runners.append(runner)
                    counts.append(max(3, min(MAX_ITERATIONS, int(MIN_ROUND_MS / max(first, 1e-3)) + 1)))
                rounds: list[list[float]] = [[] for _ in chunk]
                for _ in range(ROUNDS):
                    for i, runner in enumerate(runners):
                        rounds[i].append(statistics.median(runner.time(self.batch, counts[i])))
                out.update({spec.key: statistics.median(r) for spec, r in zip(chunk, rounds)})
        return out

    def _runner(self, spec: LayerSpec, folder: Path):
        from .backends import ONNX_BACKENDS, Target, TorchRunner, make_runner

        if self.backend in ONNX_BACKENDS:
            import onnx

            path = folder / f"{hashlib.sha1(spec.key.encode()).hexdigest()[:16]}.onnx"
            onnx.save(layer_onnx(spec), str(path))
            return make_runner(Target(spec.key, path, self.backend), self.threads)
        import torch

        device = torch.device("cpu" if self.backend == "torch-cpu" else "cuda")
        first = spec.stem[0] if isinstance(spec, BlockSpec) else spec
        return TorchRunner(spec.key, torch_layer(spec), (first.fed_from or first.cin, *first.in_hw), device,
                           self.backend == "torch-cuda-graph")

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("version") != CACHE_VERSION or data.get("machine") != self.machine:
            return {}
        return {k: float(v) for k, v in data.get("ms", {}).items()}

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"version": CACHE_VERSION, "machine": self.machine, "batch": self.batch,
                               "backend": self.backend, "ms": dict(sorted(self.table.items()))})


def torch_layer(spec: LayerSpec | BlockSpec):
    """An ``nn.Conv*d`` of ``spec``, or a module running a block (the torch backends time it as PyTorch runs it)."""
    import torch.nn as nn

    if isinstance(spec, BlockSpec):
        return _TorchBlock(spec)

    dims = len(spec.kernel)
    kind = {1: "1d", 2: "2d", 3: "3d"}[dims]
    cls = getattr(nn, f"ConvTranspose{kind}" if spec.kind == "convtranspose" else f"Conv{kind}")
    layer = cls(spec.cin, spec.cout, spec.kernel, stride=spec.stride, padding=spec.padding[:dims],
                dilation=spec.dilation, groups=spec.groups, bias=spec.bias)
    if spec.fed_from:
        layer = nn.Sequential(getattr(nn, f"Conv{kind}")(spec.fed_from, spec.cin, 1, bias=False), layer)
    return layer.eval()


def _torch_block():
    import torch.nn as nn

    class TorchBlock(nn.Module):
        def __init__(self, block: BlockSpec):
            super().__init__()
            self.stem = nn.ModuleList(torch_layer(s) for s in block.stem)
            self.heads = nn.ModuleList(torch_layer(h) for h in block.heads)
            self.pools = list(block.pools)

        def forward(self, x):
            import torch.nn.functional as F

            for layer in self.stem:
                x = F.relu(layer(x))
            outs = [head(F.max_pool2d(x, p) if p > 1 else x) for head, p in zip(self.heads, self.pools)]
            return outs[0] if len(outs) == 1 else tuple(outs) if outs else x

    return TorchBlock


def _TorchBlock(block: BlockSpec):  # noqa: N802 - built lazily so that importing this module never imports torch
    return _torch_block()(block).eval()


def machine_facts(backend: str, threads: int) -> dict:
    """What a cached layer time depends on besides the layer: backend, CPU, cores, threads, library versions."""
    import platform

    facts = {"backend": backend, "cpu": cpu_name(), "cores": available_cores(), "threads": threads,
             "machine": platform.machine(), "python": platform.python_version()}
    if backend.startswith("onnxruntime"):
        import onnxruntime as ort

        facts["onnxruntime"] = ort.__version__
    elif backend.startswith("openvino"):
        import openvino as ov

        facts["openvino"] = ov.__version__
    else:
        import torch

        facts["torch"] = torch.__version__
        if backend != "torch-cpu" and torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def describe(timer: LayerTimer) -> dict:
    """What the report says about the table: where it lives, its size, how much this run measured."""
    return {"path": str(timer.path), "entries": len(timer.table), "measured_now": timer.measured,
            "machine": dict(timer.machine)}


__all__ = ["BlockSpec", "LayerSpec", "LayerTimer", "out_hw", "default_cache", "describe", "layer_onnx", "torch_layer"]
