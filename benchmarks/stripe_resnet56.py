"""The hybrid stripe graph on a whole ResNet-56: dense-slim vs hybrid latency at a given stripe sparsity.

Latency evidence for the stripe export, independent of how the stripes were chosen: the akamaster
ResNet-56's 3x3 convs get the given fraction of their stripes (lowest L2 norm first, per layer) set to
zero, with no training, so the accuracy column only says the graph is the same network (parity), not what
SWP would reach. For each sparsity: dense-slim ONNX (`compressor.export.export_onnx`), the hybrid graph
measured and chosen per layer at batch 32 (`compressor.export.hybrid.export_stripe`), MACs counted on both
graphs, and the baseline, dense-slim and hybrid graphs profiled side by side (onnxruntime CPU, 1 thread,
interleaved rounds, batch 1 and 32).

    .venv/bin/python benchmarks/stripe_resnet56.py [--data ../shared/data] [--sparsity 0.5 0.75 0.9]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from _shared import add_data_argument, exact_test_images, print_markdown_table, resnet56_checkpoint

from compressor.export import check_parity, export_onnx
from compressor.export.hybrid import export_stripe
from compressor.models.checkpoint import load_checkpoint
from compressor.models.cifar_resnet import resnet56
from compressor.profiling.latency import latency_ratios, profile_onnxruntime
from compressor.profiling.macs import count_onnx

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def zero_stripes(model: nn.Module, sparsity: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                norms = m.weight.pow(2).sum(1).flatten()  # (N * 9,)
                drop = torch.argsort(norms)[: int(round(sparsity * norms.numel()))]
                mask = torch.ones_like(norms)
                mask[drop] = 0
                m.weight.mul_(mask.view(m.out_channels, 1, 3, 3))


def top1(model: nn.Module, npz: Path) -> float:
    data = np.load(npz)
    images = (torch.from_numpy(data["data"]).float() / 255 - MEAN) / STD
    labels = torch.from_numpy(data["labels_all10000"][: len(images)]).long()
    with torch.no_grad():
        return float((model.eval()(images).argmax(1) == labels).float().mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/runs/stripe_resnet56.json"))
    args = parser.parse_args()
    checkpoint, npz = resnet56_checkpoint(args.data), exact_test_images(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = resnet56(shortcut="A")
        load_checkpoint(base, checkpoint)
        example = torch.randn(2, 3, 32, 32)
        export_onnx(base.eval(), example, Path(tmp) / "baseline.onnx")
        for sparsity in args.sparsity:
            model = resnet56(shortcut="A")
            load_checkpoint(model, checkpoint)
            zero_stripes(model, sparsity)
            dense, hybrid = Path(tmp) / f"dense{sparsity}.onnx", Path(tmp) / f"hybrid{sparsity}.onnx"
            export_onnx(model.eval(), example, dense)
            result = export_stripe(dense, hybrid, batch=32, threads=1)
            choices = result.choices
            parity = check_parity(model, hybrid, example).max_abs_diff
            stats = profile_onnxruntime({"baseline": Path(tmp) / "baseline.onnx", "dense_slim": dense,
                                         "hybrid": hybrid}, [1, 32], 1, warmup=5, iterations=30, repeats=7)
            ratios = latency_ratios(stats, "dense_slim")
            row = {"sparsity": sparsity, "top1_no_training": top1(model, npz),
                   "macs_dense": count_onnx(dense).macs, "macs_hybrid": count_onnx(hybrid).macs,
                   "stripe_layers": sum(c.form == "stripe" for c in choices), "layers": len(choices),
                   "parity": parity, "hybrid_vs_dense": {r.batch: r.ratio for r in ratios if r.artifact == "hybrid"},
                   "dense_vs_baseline": {r.batch: r.ratio for r in latency_ratios(stats, "baseline")
                                         if r.artifact == "dense_slim"},
                   "p50_ms": {f"{s.artifact}@{s.batch}": s.p50_ms for s in stats},
                   "whole_graph_check": result.graph_check, "choices": [c.to_json() for c in choices]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "choices"}), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    print_markdown_table(
        ["stripe sparsity", "stripe layers", "MACs dense-slim (M)", "MACs hybrid (M)", "hybrid/dense b1",
         "hybrid/dense b32", "parity"],
        [[f"{r['sparsity']:.0%}", f"{r['stripe_layers']}/{r['layers']}", f"{r['macs_dense'] / 1e6:.2f}",
          f"{r['macs_hybrid'] / 1e6:.2f}", f"{r['hybrid_vs_dense'][1]:.2f}", f"{r['hybrid_vs_dense'][32]:.2f}",
          f"{r['parity']:.1e}"] for r in rows])


if __name__ == "__main__":
    main()
