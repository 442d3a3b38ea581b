"""SWP end to end on ResNet-56: stripe sparsity, MACs, accuracy, dense-slim vs hybrid stripe latency.

Runs ``recipes/swp_resnet56_cifar10.yaml`` through the pipeline from the akamaster ResNet-56 checkpoint,
training the Filter Skeleton on a fixed subset of ``cifar10-jpg/train.zip`` (500 of it held out for
validation) and testing on the exact first 1,017 CIFAR-10 test images. The profile stage measures the
baseline, the dense-slim pruned graph and the hybrid stripe graph side by side (onnxruntime CPU, 1 thread,
interleaved rounds). Prints the figures the benchmarks README quotes; the run folder holds the rest.

    .venv/bin/python benchmarks/swp_resnet56.py [--data ../shared/data] [--epochs 4] [--alpha A]
        [--finetune-epochs 4] [--mode finetune] [--out runs/swp]
    .venv/bin/python benchmarks/swp_resnet56.py --mode reconstruct --sparsity 0.7 [--budget global]
        [--finetune-epochs 0]      # retrain-free: stripes chosen and re-fitted on 512 calibration images
    .venv/bin/python benchmarks/swp_resnet56.py --mode reconstruct --sparsity 0.7 --budget layer \
        --finetune-epochs 2 --subset 0      # then 2 epochs on all 50,000 training images (500 held out)
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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--alpha", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--threshold", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--mode", choices=["finetune", "scratch", "reconstruct"], default="finetune")
    parser.add_argument("--sparsity", type=float, default=None, help="mode reconstruct: share of stripes removed")
    parser.add_argument("--budget", choices=["global", "layer"], default="global", help="mode reconstruct")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="after removal, stripes frozen; default: the recipe's")
    parser.add_argument("--subset", type=int, default=10500, help="training images (0: all 50,000)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "swp_resnet56")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more recipe overrides, e.g. finetune.distill={weight: 0.5}")
    args = parser.parse_args()
    overrides = [
        *resnet56_overrides(args.data, train_subset=args.subset or None), "data.val_split=500",
        f"method.epochs={args.epochs}", f"method.mode={args.mode}", "gates={max_accuracy_drop: null}",
    ]
    if args.mode == "reconstruct":
        overrides += [f"method.sparsity={args.sparsity}", f"method.budget={args.budget}", "data.calibration_images=512",
                      "pruning.bn_recalibration=null"]  # the re-fit matched the original outputs; BN stays as trained
    overrides += [f"{key}={value}" for key, value in (("method.alpha", args.alpha), ("method.threshold", args.threshold),
                                                       ("finetune.epochs", args.finetune_epochs)) if value is not None]
    recipe = load_recipe(REPO / "recipes" / "swp_resnet56_cifar10.yaml", overrides + args.set)
    report = run(recipe, args.out, overwrite=True).report
    details = report["pruning"]["method_details"]
    summary = {
        "mode": args.mode, "alpha": recipe.method.alpha, "threshold": recipe.method.threshold, "epochs": args.epochs,
        "stripe_sparsity": details.get("stripe_sparsity"), "history": details.get("history"),
        "filters_removed": details.get("filters_without_stripes"),
        "finetune_epochs": recipe.finetune.epochs, "before_finetune_top1": report["pruned"]["accuracy_before_finetune"],
        "baseline_top1": report["baseline"]["accuracy"], "pruned_top1": report["pruned"]["accuracy"],
        "macs_baseline": report["baseline"]["macs"], "macs_dense_slim": report["pruned"]["macs"],
        "macs_stripe_graph": (report["stripe"] or {}).get("macs"),
        "stripe_layers": (report["stripe"] or {}).get("stripe_layers"),
        "layers": len((report["stripe"] or {}).get("layers", [])),
        "latency_ratios": report["latency_ratios"],
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
