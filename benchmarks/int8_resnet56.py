"""INT8 (QDQ) and pruning on ResNet-56, onnxruntime CPU: latency ratios and top-1 of four files.

Runs ``recipes/resnet56_cifar10_l1.yaml`` through the pipeline from the akamaster ResNet-56: L1 filter
pruning to 50% of the MACs (block-internal channels, least-squares compensation, no fine-tuning), then the
FP32 and the QDQ INT8 ONNX files of the baseline and the pruned model (INT8 calibrated on 512 images of
``cifar10-jpg/train.zip``; ``--activations uint8``, the default, for onnxruntime CPU's U8S8 kernels, or
``int8``, symmetric, the file TensorRT takes). Top-1 of every file is computed by onnxruntime CPU on the exact first
1,017 CIFAR-10 test images; latency at batch 1 and 32, one thread, all four files interleaved in one process.

``--backends onnxruntime-cpu openvino-cpu`` times the four files on OpenVINO's CPU plugin too, in the same
process and the same interleaved rounds as onnxruntime (eight runners per round); it then adds, per file and
batch, the median over rounds of (OpenVINO round p50 / onnxruntime round p50), and each file's top-1 on
OpenVINO and its largest |OpenVINO - onnxruntime| logit on the same test images.

    .venv/bin/python benchmarks/int8_resnet56.py [--data ../shared/data] [--out runs/int8_resnet56] [--activations uint8|int8]
        [--backends onnxruntime-cpu openvino-cpu] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    parser.add_argument("--backends", nargs="+", default=["onnxruntime-cpu"],
                        help="profile.backends; onnxruntime-cpu openvino-cpu times both, interleaved")
    args = parser.parse_args()
    overrides = [
        *resnet56_overrides(args.data, train_subset=3000), "data.val_split=500",
        f"pruning.residual={args.residual}", "pruning.round_to=8", "pruning.compensation=least_squares",
        "export.precisions=[int8]", "export.int8.calibration_images=512", f"export.int8.activations={args.activations}",
        "finetune.epochs=0",
        "profile.batch_sizes=[1, 32]", "profile.threads=1", f"profile.repeats={args.repeats}", "gates={max_accuracy_drop: null}",
        f"profile.backends=[{', '.join(args.backends)}]",
    ]
    recipe = load_recipe(REPO / "recipes" / "resnet56_cifar10_l1.yaml", overrides)
    report = run(recipe, args.out, overwrite=True).report
    top1 = {"baseline_onnx": report["baseline"]["accuracy"], "pruned_onnx": report["pruned"]["accuracy"],
            **{k: v["accuracy"] for k, v in report["deploy"]["variants"].items()}}
    macs = {"baseline": report["baseline"]["macs"], "pruned": report["pruned"]["macs"]}
    p50 = {f"{s['artifact']} {s['backend']} b{s['batch']}": s["p50_ms"] for s in report["latency"]}
    ratios = [{k: r[k] for k in ("artifact", "reference", "backend", "batch", "ratio", "spread")}
              for r in report["latency_ratios"]]
    found = {"top1": top1, "macs": macs, "p50_ms": p50, "ratios": ratios}
    if "openvino-cpu" in args.backends and "onnxruntime-cpu" in args.backends:
        found["openvino_vs_onnxruntime"] = across_backends(report["latency"], "openvino-cpu", "onnxruntime-cpu")
        found["openvino"] = openvino_accuracy(recipe, args.out, report)
        found["openvino_config"] = next(s["versions"] for s in report["latency"] if s["backend"] == "openvino-cpu")
    print(json.dumps(found, indent=1))


def across_backends(latency: list[dict], backend: str, reference: str) -> list[dict]:
    """Per file and batch: median over the shared rounds of (``backend`` round p50 / ``reference`` round p50)."""
    rounds = {(s["artifact"], s["backend"], s["batch"]): s["round_p50_ms"] for s in latency}
    rows = []
    for (artifact, name, batch), mine in rounds.items():
        theirs = rounds.get((artifact, reference, batch))
        if name != backend or theirs is None:
            continue
        per_round = [a / b for a, b in zip(mine, theirs)]
        ratio = statistics.median(per_round)
        rows.append({"artifact": artifact, "batch": batch, "ratio": round(ratio, 4),
                     "spread": round((max(per_round) - min(per_round)) / ratio, 4)})
    return rows


def openvino_accuracy(recipe, out: Path, report: dict) -> dict:
    """Top-1 on OpenVINO (f32 config of the profile, 1 thread) of every timed file over the test split, and the
    largest |OpenVINO - onnxruntime| logit on those images."""
    import numpy as np

    from compressor.data import build_loaders
    from compressor.export.precision import run_onnx
    from compressor.profiling.openvino import openvino_outputs

    loader = build_loaders(recipe.data, tuple(report["model"]["input_shape"]), recipe.seed).test
    batches = [(images.numpy().astype(np.float32), labels.numpy()) for images, labels in loader]
    found = {}
    for name in ("baseline_onnx", "pruned_onnx", "baseline_int8", "pruned_int8"):
        path = out / report["artifacts"][name]
        correct, worst = 0, 0.0
        for images, labels in batches:
            logits = openvino_outputs(path, images)
            correct += int((logits.argmax(1) == labels).sum())
            worst = max(worst, float(np.abs(logits - run_onnx(path, images)).max()))
        images_seen = sum(len(labels) for _, labels in batches)
        found[name] = {"top1": round(100.0 * correct / images_seen, 2), "images": images_seen,
                       "max_abs_diff_vs_onnxruntime": worst}
    return found


if __name__ == "__main__":
    main()
