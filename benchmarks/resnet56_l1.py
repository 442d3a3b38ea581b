"""ResNet-56 (akamaster checkpoint) pruned to a 50% MACs target with L1, both residual policies.

Runs ``recipes/resnet56_cifar10_l1.yaml`` through the normal pipeline (``compressor.pipeline.run``) with
the shared evaluation material: calibration and validation images from ``cifar10-jpg/train.zip``, top-1
on the exact first 1,017 CIFAR-10 test images (original pixels), no fine-tuning. For each configuration it
reports baseline and pruned (retrain-free) top-1, the MACs reduction counted on the exported ONNX graphs
and the onnxruntime CPU latency ratio pruned/baseline at batch 1 and 32 (medians of interleaved rounds,
one process, 1 thread).

    .venv/bin/python benchmarks/resnet56_l1.py [--data ../shared/data] [--out benchmarks/runs]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _shared import add_data_argument, resnet56_overrides

from compressor.config import load_recipe
from compressor.pipeline import run

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [  # (label, overrides)
    ("internal", ["pruning.residual=internal", "pruning.round_to=1"]),
    ("internal, round_to 8", ["pruning.residual=internal", "pruning.round_to=8"]),
    ("coupled", ["pruning.residual=coupled", "pruning.round_to=1"]),
    ("coupled, round_to 8", ["pruning.residual=coupled", "pruning.round_to=8"]),
    ("internal + BN re-estimation", ["pruning.residual=internal", "pruning.round_to=1",
                                     "pruning.bn_recalibration={images: 2000}"]),
]


def shared_overrides(data: Path) -> list[str]:
    return [
        *resnet56_overrides(data, train_subset=None),
        "data.val_split=500", "data.calibration_images=512", "data.augment={}",
        "finetune.epochs=0", "gates={max_accuracy_drop: null}", "profile.iterations=30", "profile.repeats=5", "profile.threads=1",
    ]


def row(label: str, report: dict) -> dict:
    ratios = {r["batch"]: r["ratio"] for r in report["latency_ratios"]}
    spreads = {r["batch"]: r["spread"] for r in report["latency_ratios"]}
    return {"config": label, "baseline_top1": report["baseline"]["accuracy"],
            "pruned_top1_no_finetune": report["pruned"]["accuracy"], "macs_reduction_pct_onnx": report["reduction"]["macs_pct"],
            "params_reduction_pct_onnx": report["reduction"]["params_pct"], "baseline_mmacs": report["baseline"]["macs"] / 1e6,
            "pruned_mmacs": report["pruned"]["macs"] / 1e6, "latency_ratio_b1": ratios.get(1),
            "latency_ratio_b32": ratios.get(32), "spread_b1": spreads.get(1), "spread_b32": spreads.get(32),
            "global_ratio": report["pruning"]["global_ratio"], "prune_seconds": report["timings"]["prune"]}


def markdown(rows: list[dict]) -> str:
    head = ("| configuration | baseline top-1 | pruned top-1 (no fine-tuning) | MACs reduction (ONNX) | "
            "latency pruned/baseline b1 | b32 |\n|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['config']} | {r['baseline_top1']:.2f} | {r['pruned_top1_no_finetune']:.2f} | "
                   f"{r['macs_reduction_pct_onnx']:.1f}% ({r['baseline_mmacs']:.1f} -> {r['pruned_mmacs']:.1f} M) | "
                   f"{r['latency_ratio_b1']:.2f} (spread {r['spread_b1']:.0%}) | "
                   f"{r['latency_ratio_b32']:.2f} (spread {r['spread_b32']:.0%}) |\n" for r in rows)
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / "resnet56_l1")
    parser.add_argument("--only", nargs="*", help="run only the configurations with these labels")
    args = parser.parse_args()
    rows = []
    for label, overrides in CONFIGS:
        if args.only and label not in args.only:
            continue
        recipe = load_recipe(REPO / "recipes" / "resnet56_cifar10_l1.yaml", shared_overrides(args.data) + overrides)
        start = time.perf_counter()
        folder = args.out / label.replace(" ", "_").replace(",", "").replace("+", "plus")
        result = run(recipe, folder, recipe_path=REPO / "recipes" / "resnet56_cifar10_l1.yaml", overwrite=True)
        rows.append(row(label, result.report) | {"seconds": round(time.perf_counter() - start, 1)})
        print(markdown(rows[-1:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
