"""Pruning criteria on ResNet-56 (akamaster checkpoint): retrain-free top-1 at 30% and 50% MACs, and after
one epoch of fine-tuning on 10,000 training images.

For each method (random, l1, fpgm, hrank, pfp, functionality) and MACs target (residual: internal), the
same pruning stage the pipeline runs (``compressor.surgery.prune``, BatchNorm re-estimation, evaluation) is
applied to a copy of the checkpoint in three retrain-free variants:

- ``default``: the method as it is (compensation ``auto``: none, fold for functionality);
- ``+BN``: BatchNorm statistics re-estimated on 2,000 calibration images;
- ``LS``: least-squares compensation of every next layer (no BN re-estimation: it hurts after LS here,
  because the calibration images are JPEGs while the test images are exact pixels);

then both the ``+BN`` and the ``LS`` models are fine-tuned for one epoch (SGD, lr 0.01 cosine, crop+flip) on a
10,000-image subset of ``cifar10-jpg/train.zip`` and evaluated again. Top-1 on the exact first 1,017 CIFAR-10 test images;
calibration and fine-tuning images from ``train.zip`` (never the test set). Each method calibrates once;
its statistics are reused for both targets and all variants.

    .venv/bin/python benchmarks/criteria_resnet56.py [--data ../shared/data] [--methods l1 hrank] [--no-finetune]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from _shared import add_data_argument, resnet56_overrides

from compressor import stages
from compressor.config import load_recipe
from compressor.environment import seed_everything
from compressor.methods import CalibrationContext, build_method, get_method
from compressor.surgery import prune
from compressor.training import evaluate, finetune, recalibrate_batchnorm

REPO = Path(__file__).resolve().parents[1]
METHODS = ["random", "l1", "fpgm", "hrank", "pfp", "functionality"]
TARGETS = [30, 50]


def recipe_for(data: Path):
    overrides = [
        *resnet56_overrides(data, train_subset=10500),
        "data.val_split=500", "data.calibration_images=512", "pruning.residual=internal",
        "finetune={epochs: 1, lr: 0.01, weight_decay: 0.0001, schedule: cosine}",
    ]
    return load_recipe(REPO / "recipes" / "resnet56_cifar10_l1.yaml", overrides)


class CalibrateOnce:
    """A method whose calibration runs the first time only (same network, same groups every time)."""

    def __init__(self, method):
        self.method, self.done, self.seconds = method, False, 0.0

    def __getattr__(self, name):
        return getattr(self.method, name)

    def calibrate(self, model, groups, ctx):
        if not self.done:
            start = time.perf_counter()
            self.method.calibrate(model, groups, ctx)
            self.done, self.seconds = True, time.perf_counter() - start


def run_method(name: str, recipe, inputs, device, do_finetune: bool) -> list[dict]:
    ctx = CalibrationContext(batches=lambda: inputs.loaders.calibration, device=device,
                             num_images=inputs.loaders.num_calibration, seed=recipe.seed)
    method = CalibrateOnce(build_method(get_method(name).Options(name=name), seed=recipe.seed))
    rows = []
    for target in TARGETS:
        row = {"method": name, "target_macs_pct": target}
        for variant, compensation, bn in (("default", "auto", False), ("+BN", "auto", True), ("LS", "least_squares", False)):
            cfg = recipe.pruning.model_copy(update={"macs_reduction_pct": target, "compensation": compensation})
            model = copy.deepcopy(inputs.model)
            start = time.perf_counter()
            surgery = prune(model, inputs.input_shape, method, cfg, ctx)
            if bn:
                recalibrate_batchnorm(model, inputs.loaders.calibration_loader(2000), device)
            row[variant] = evaluate(model, inputs.loaders.test, device).accuracy
            row[f"{variant}_seconds"] = round(time.perf_counter() - start, 1)
            row["macs_reduction_pct"] = round(surgery.macs_reduction_pct, 2)
            if do_finetune and variant in ("+BN", "LS"):
                seed_everything(recipe.seed)
                start = time.perf_counter()
                finetune(model, inputs.loaders.train, inputs.loaders.val, recipe.finetune, device)
                row[f"{variant}+1 epoch"] = evaluate(model, inputs.loaders.test, device).accuracy
                row["finetune_seconds"] = round(time.perf_counter() - start, 1)
        row["calibration_seconds"] = round(method.seconds, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict], baseline: float) -> str:
    lines = [f"Baseline (unpruned): {baseline:.2f}%.", "",
             "| method | MACs target | default | +BN re-estimation | least squares (LS) | +BN, 1 epoch | LS, 1 epoch |",
             "|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for r in rows:
        lines.append(f"| {r['method']} | {r['target_macs_pct']}% (got {r['macs_reduction_pct']}%) | {r['default']:.2f} | "
                     f"{r['+BN']:.2f} | {r['LS']:.2f} | {r.get('+BN+1 epoch', nan):.2f} | {r.get('LS+1 epoch', nan):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / "criteria_resnet56.json")
    args = parser.parse_args()
    recipe = recipe_for(args.data)
    device = torch.device("cpu")
    seed_everything(recipe.seed)
    inputs = stages.load_inputs(recipe.model, recipe.data, recipe.pruning, recipe.seed, device)
    baseline = evaluate(inputs.model, inputs.loaders.test, device).accuracy
    rows = [row for name in args.methods for row in run_method(name, recipe, inputs, device, not args.no_finetune)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": baseline, "rows": rows}, indent=2) + "\n")
    print(markdown(rows, baseline))


if __name__ == "__main__":
    main()
