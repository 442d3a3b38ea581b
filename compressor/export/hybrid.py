"""The hybrid stripe graph: each sparse KxK Conv of a dense-slim ONNX model emitted as stripe or dense,
whichever measured faster on onnxruntime CPU at the target batch and thread count.

Every eligible layer is timed in isolation, dense and stripe forms interleaved (``repeats`` rounds, median
of each), on random input of its real shape. A layer goes stripe only when its stripe median is at most
``1 - min_gain`` of its dense median, so that measurement noise does not flip near-ties towards the
slower form; the whole graph is then one rewrite of the dense-slim file (same inputs, outputs, weights),
kept only when it too is ``min_gain`` faster than dense-slim (:func:`export_stripe`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .stripe import StripeLayout, layout_for, stripe_nodes

IR_VERSION = 9  # onnxruntime 1.2x reads IR <= 10; onnx.helper would stamp its newest


@dataclass(frozen=True)
class LayerChoice:
    name: str            # the Conv's weight initializer, i.e. the torch layer path + ".weight"
    sparsity: float      # fraction of zero stripes
    stripes: int
    dense_ms: float | None
    stripe_ms: float | None
    form: str            # "stripe" or "dense"
    reason: str

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Candidate:
    node: object         # onnx NodeProto
    layout: StripeLayout
    bias: str | None
    weight: np.ndarray


def candidates(model) -> tuple[list[Candidate], dict[str, str]]:
    """Conv nodes the stripe form can express, and why each other KxK Conv cannot."""
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.input, *inferred.graph.value_info)}
    weights = {i.name: i for i in model.graph.initializer}
    found, refused = [], {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in weights:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if weight.ndim != 4 or weight.shape[2] < 2:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        why = _unsupported(attrs, shapes.get(node.input[0]))
        if why:
            refused[node.input[1]] = why
            continue
        height, width = shapes[node.input[0]][2:]
        try:
            layout = layout_for(weight, attrs.get("strides", [1])[0], attrs.get("pads", [0])[0], height, width)
        except ExportError as exc:
            refused[node.input[1]] = str(exc)
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        found.append(Candidate(node, layout, bias, weight))
    return found, refused


def _unsupported(attrs: dict, shape) -> str | None:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if attrs.get("group", 1) != 1:
        return "grouped convolution"
    if any(d != 1 for d in attrs.get("dilations", [1])):
        return "dilated convolution"
    if auto_pad not in (b"NOTSET", "NOTSET") or len(set(attrs.get("pads", [0]))) > 1:
        return "asymmetric or automatic padding"
    if len(set(attrs.get("strides", [1]))) > 1:
        return "unequal strides"
    if shape is None or len(shape) != 4 or None in shape[1:]:
        return "input spatial size unknown (the stripe form fixes it at export)"
    return None


def choose(found: list[Candidate], batch: int, threads: int | None, repeats: int = 7,
           min_gain: float = 0.05, min_sparsity: float = 0.0, form: str = "hybrid") -> list[LayerChoice]:
    """Per-layer decision. ``form``: hybrid (measured), stripe (every candidate), dense (none)."""
    choices = []
    for cand in found:
        lay, name = cand.layout, cand.node.input[1]
        if lay.stripes == 0 or lay.sparsity <= min_sparsity:
            why = "no stripe left" if lay.stripes == 0 else f"sparsity {lay.sparsity:.2f} <= {min_sparsity}"
            choices.append(LayerChoice(name, lay.sparsity, lay.stripes, None, None, "dense", why))
            continue
        if form != "hybrid":
            choices.append(LayerChoice(name, lay.sparsity, lay.stripes, None, None, form, f"export.stripe.form={form}"))
            continue
        dense_ms, stripe_ms = measure_layer(cand, batch, threads, repeats)
        wins = _faster_by(stripe_ms, dense_ms, min_gain)
        choices.append(LayerChoice(name, lay.sparsity, lay.stripes, dense_ms, stripe_ms, "stripe" if wins else "dense",
                                   f"measured at batch {batch}: stripe/dense {stripe_ms / dense_ms:.2f}"))
    return choices


def single_layer_models(cand: Candidate):
    """(dense, stripe) one-node ONNX models of a candidate, for timing and parity."""
    from onnx import TensorProto, helper, numpy_helper

    lay = cand.layout
    bias = None if cand.bias is None else np.zeros(lay.out_channels, np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", lay.in_channels, lay.height, lay.width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", lay.out_channels, *lay.out_size])
    inits = [numpy_helper.from_array(cand.weight.astype(np.float32), "w")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
    conv = helper.make_node("Conv", ["x", "w"] + (["b"] if bias is not None else []), ["y"],
                            kernel_shape=[lay.kernel] * 2, pads=[lay.padding] * 4, strides=[lay.stride] * 2)
    nodes, stripe_inits = stripe_nodes(lay, "x", "y", "b" if bias is not None else None, "s_")
    models = []
    for graph_nodes, graph_inits in (([conv], inits), (nodes, stripe_inits + inits[1:])):
        graph = helper.make_graph(graph_nodes, "layer", [x], [y], graph_inits)
        models.append(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION))
    return models[0], models[1]


def measure_layer(cand: Candidate, batch: int, threads: int | None, repeats: int = 7) -> tuple[float, float]:
    """Median ms of the dense and the stripe form of one layer, interleaved rounds."""
    lay = cand.layout
    return measure_models(list(single_layer_models(cand)), (batch, lay.in_channels, lay.height, lay.width),
                          threads, repeats)


def measure_models(models: list, shape: tuple[int, ...], threads: int | None, repeats: int = 7) -> tuple[float, ...]:
    """Median ms per model (same random input), interleaved rounds on onnxruntime CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                for m in models]
    names = [s.get_inputs()[0].name for s in sessions]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    iterations = max(3, 256 // shape[0])
    times: list[list[float]] = [[] for _ in sessions]
    for session, name in zip(sessions, names):
        session.run(None, {name: x})
    for _ in range(repeats):
        for k, (session, name) in enumerate(zip(sessions, names)):
            start = time.perf_counter()
            for _ in range(iterations):
                session.run(None, {name: x})
            times[k].append((time.perf_counter() - start) / iterations * 1e3)
    return tuple(float(np.median(t)) for t in times)


def rewrite(model, found: list[Candidate], choices: list[LayerChoice]):
    """A copy of ``model`` with the Conv nodes chosen as stripe replaced by their stripe subgraphs."""
    import onnx

    stripe = {c.name for c in choices if c.form == "stripe"}
    by_name = {cand.node.input[1]: cand for cand in found}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    used = {n for node in model.graph.node for n in node.input}
    for k, node in enumerate(model.graph.node):
        name = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        if name not in stripe:
            out.graph.node.append(node)
            continue
        cand = by_name[name]
        nodes, inits = stripe_nodes(cand.layout, node.input[0], node.output[0], cand.bias, f"stripe{k}/")
        out.graph.node.extend(nodes)
        out.graph.initializer.extend(inits)
    still_used = {n for node in out.graph.node for n in node.input}
    keep = [i for i in out.graph.initializer if i.name in still_used or i.name not in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out


@dataclass(frozen=True)
class StripeExport:
    choices: list[LayerChoice]
    graph_check: dict | None  # whole-graph dense vs hybrid timings at the choice batch (hybrid form only)


RETRY_GAINS = (0.25, 0.5)  # stricter per-layer margins tried when the whole hybrid graph is not faster


def export_stripe(dense_path: Path, out_path: Path, batch: int, threads: int | None, form: str = "hybrid",
                  min_gain: float = 0.05, min_sparsity: float = 0.0) -> StripeExport:
    """Write ``out_path`` (the stripe/hybrid graph of ``dense_path``) and say what each layer became.

    Hybrid: per-layer timings in isolation miss what a layer costs its neighbours (onnxruntime keeps
    consecutive dense convs in its blocked NCHWc layout; a stripe layer between them adds layout reorders).
    So the whole graph is timed too, against dense-slim at the same batch; unless it is at least ``min_gain``
    faster (the same noise margin as per layer), only layers with a larger isolated gain stay stripe
    (``RETRY_GAINS``), and failing that every layer stays dense: the hybrid graph is never slower than
    dense-slim at the batch it was chosen for, and a tie within this machine's noise stays dense."""
    import onnx

    model = onnx.load(str(dense_path))
    found, refused = candidates(model)
    choices = choose(found, batch, threads, min_gain=min_gain, min_sparsity=min_sparsity, form=form)
    check = None
    if form == "hybrid":
        choices, check = _check_whole_graph(model, found, choices, batch, threads, min_gain)
    choices += [LayerChoice(name, 0.0, 0, None, None, "dense", why) for name, why in refused.items()]
    rewritten = rewrite(model, found, choices)
    onnx.checker.check_model(rewritten)
    tmp = out_path.with_suffix(".tmp")
    onnx.save(rewritten, str(tmp))
    tmp.replace(out_path)
    return StripeExport(choices, check)


def _check_whole_graph(model, found, choices, batch, threads, min_gain):
    shape = _input_shape(model, batch)
    tried = []
    for gain in (min_gain, *[g for g in RETRY_GAINS if g > min_gain]):
        kept = [_demote(c, f"isolated gain under {gain:.0%} (whole-graph check)")
                if c.form == "stripe" and not _faster_by(c.stripe_ms, c.dense_ms, gain) else c for c in choices]
        stripes = sum(c.form == "stripe" for c in kept)
        if not stripes:
            break
        dense_ms, hybrid_ms = measure_models([model, rewrite(model, found, kept)], shape, threads, repeats=5)
        tried.append({"min_gain": gain, "stripe_layers": stripes, "dense_ms": round(dense_ms, 4),
                      "hybrid_ms": round(hybrid_ms, 4)})
        if _faster_by(hybrid_ms, dense_ms, min_gain):  # the same noise margin as per layer: a tie stays dense
            return kept, {"batch": batch, "accepted": tried[-1], "tried": tried}
    demoted = [_demote(c, f"whole hybrid graph not {min_gain:.0%} faster than dense-slim") if c.form == "stripe" else c
               for c in choices]
    return demoted, {"batch": batch, "accepted": None, "tried": tried}


def _faster_by(ms: float, reference_ms: float, gain: float) -> bool:
    """Whether ``ms`` is at least ``gain`` (a fraction) faster than ``reference_ms``: the noise margin of every
    stripe-or-dense decision, per layer and for the whole graph."""
    return ms <= (1 - gain) * reference_ms


def _demote(choice: LayerChoice, why: str) -> LayerChoice:
    from dataclasses import replace

    return replace(choice, form="dense", reason=f"{choice.reason}; {why}")


def _input_shape(model, batch: int) -> tuple[int, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if None in shape[1:]:
        raise ExportError("stripe export needs the model input's non-batch dimensions fixed")
    return (batch, *shape[1:])
