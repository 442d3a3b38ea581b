"""INT8 (QDQ) and pruning on ResNet-56, onnxruntime CPU: latency ratios and top-1 of four files.

Runs ``recipes/resnet56_cifar10_l1.yaml`` through the pipeline from the akamaster ResNet-56: L1 filter
pruning to 50% of the MACs (block-internal channels, least-squares compensation, no fine-tuning), then the
FP32 and the QDQ INT8 ONNX files of the baseline and the pruned model (INT8 calibrated on 512 images of
``cifar10-jpg/train.zip``; ``--activations uint8``, the default, for onnxruntime CPU's U8S8 kernels, or
``int8``, symmetric, the file TensorRT takes). Top-1 of every file is computed by onnxruntime CPU on the exact first
1,017 CIFAR-10 test images; latency at batch 1 and 32, one thread, all four files interleaved in one process.

    .venv/bin/python benchmarks/int8_resnet56.py [--data ../shared/data] [--out runs/int8_resnet56] [--activations uint8|int8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _shared import add_data_argument, resnet56_overrides

from compressor.config import load_recipe
from compressor.pipeline import run

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "int8_resnet56")
    parser.add_argument("--residual", choices=["internal", "coupled"], default="internal")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--activations", choices=["int8", "uint8"], default="uint8",
                        help="uint8: onnxruntime CPU's fast U8S8 path; int8: symmetric, as TensorRT needs")
    args = parser.parse_args()
    overrides = [
        *resnet56_overrides(args.data, train_subset=3000), "data.val_split=500",
        f"pruning.residual={args.residual}", "pruning.round_to=8", "pruning.compensation=least_squares",
        "export.precisions=[int8]", "export.int8.calibration_images=512", f"export.int8.activations={args.activations}",
        "finetune.epochs=0",
        "profile.batch_sizes=[1, 32]", "profile.threads=1", f"profile.repeats={args.repeats}", "gates={}",
    ]
    recipe = load_recipe(REPO / "recipes" / "resnet56_cifar10_l1.yaml", overrides)
    report = run(recipe, args.out, overwrite=True).report
    top1 = {"baseline_onnx": report["baseline"]["accuracy"], "pruned_onnx": report["pruned"]["accuracy"],
            **{k: v["accuracy"] for k, v in report["deploy"]["variants"].items()}}
    macs = {"baseline": report["baseline"]["macs"], "pruned": report["pruned"]["macs"]}
    p50 = {(s["artifact"], s["batch"]): s["p50_ms"] for s in report["latency"]}
    ratios = [{k: r[k] for k in ("artifact", "reference", "batch", "ratio", "spread")} for r in report["latency_ratios"]]
    print(json.dumps({"top1": top1, "macs": macs, "p50_ms": {f"{a} b{b}": v for (a, b), v in p50.items()},
                      "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
