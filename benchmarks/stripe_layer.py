"""One 3x3 conv, dense vs stripe-decomposed vs hybrid, on onnxruntime CPU.

Cases: 64->64 at 8x8 and 16->16 at 32x32 (stride 1, padding 1), batch 1 and 32, stripe sparsity 50/75/90%
(random stripe masks, seed 0). For each case the three single-layer ONNX graphs run in one process,
interleaved rounds (dense, stripe, hybrid, dense, ...), median per form; ratios are medians over rounds of
(form / dense). The hybrid is what ``export.stripe.form: hybrid`` emits for that layer: the per-layer choice is
measured separately first (as the export does, ``compressor.export.hybrid.choose``), then timed here with
the others. Writes a JSON file and prints a Markdown table.

    .venv/bin/python benchmarks/stripe_layer.py [--threads 1] [--rounds 15] [--json benchmarks/runs/stripe_layer.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _shared import print_markdown_table

from compressor.export.hybrid import Candidate, choose, single_layer_models
from compressor.export.stripe import layout_for

SHAPES = [(64, 8), (16, 32)]
BATCHES = [1, 32]
SPARSITIES = [0.5, 0.75, 0.9]


def session(model, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def case(channels: int, size: int, batch: int, sparsity: float, threads: int, rounds: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(channels, channels, 3, 3, generator=gen)
    weight *= (torch.rand(channels, 1, 3, 3, generator=gen) >= sparsity).float()
    cand = Candidate(node=type("Node", (), {"input": ["x", "w"]})(), layout=layout_for(weight, 1, 1, size, size),
                     bias=None, weight=weight.numpy())
    [choice] = choose([cand], batch, threads)
    dense, stripe = (session(m, threads) for m in single_layer_models(cand))
    forms = {"dense": dense, "stripe": stripe, "hybrid": stripe if choice.form == "stripe" else dense}
    if choice.form == "dense":  # the hybrid is the dense graph itself; time a separate session of it
        forms["hybrid"] = session(single_layer_models(cand)[0], threads)
    x = np.random.default_rng(1).standard_normal((batch, channels, size, size)).astype(np.float32)
    iterations = max(5, 512 // batch)
    times = {name: [] for name in forms}
    for s in forms.values():
        for _ in range(3):
            s.run(None, {"x": x})
    for _ in range(rounds):
        for name, s in forms.items():
            start = time.perf_counter()
            for _ in range(iterations):
                s.run(None, {"x": x})
            times[name].append((time.perf_counter() - start) / iterations * 1e3)
    ratio = lambda name: float(np.median(np.array(times[name]) / np.array(times["dense"])))  # noqa: E731
    return {"channels": channels, "size": size, "batch": batch, "sparsity": sparsity,
            "stripes": cand.layout.stripes, "dense_ms": float(np.median(times["dense"])),
            "stripe_ms": float(np.median(times["stripe"])), "hybrid_ms": float(np.median(times["hybrid"])),
            "stripe_ratio": ratio("stripe"), "hybrid_ratio": ratio("hybrid"), "hybrid_form": choice.form}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/runs/stripe_layer.json"))
    args = parser.parse_args()
    rows = []
    for channels, size in SHAPES:
        for batch in BATCHES:
            for sparsity in SPARSITIES:
                row = case(channels, size, batch, sparsity, args.threads, args.rounds)
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "onnxruntime": ort.__version__,
                                     "rows": rows}, indent=1))
    print_markdown_table(
        ["conv", "batch", "stripe sparsity", "dense ms", "stripe ms", "stripe/dense", "hybrid form", "hybrid/dense"],
        [[f"{r['channels']}->{r['channels']} @ {r['size']}x{r['size']}", str(r["batch"]), f"{r['sparsity']:.0%}",
          f"{r['dense_ms']:.3f}", f"{r['stripe_ms']:.3f}", f"{r['stripe_ratio']:.2f}", r["hybrid_form"],
          f"{r['hybrid_ratio']:.2f}"] for r in rows])


if __name__ == "__main__":
    main()
