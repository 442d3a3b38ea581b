"""SFP vs HFP vs GHFP on ResNet-56: per-epoch accuracy with the same small epoch budget.

From the akamaster ResNet-56 checkpoint, each method trains E epochs with masks (40% of the filters of every
block-internal layer, ``residual: internal``, L2 criterion) on a fixed 10,000-image subset of
``cifar10-jpg/train.zip`` (SGD, nesterov, lr 0.01 cosine, weight decay 5e-4, crop+flip), through the same
stage the pipeline runs (``compressor.surgery.schedule.train_with_masks`` then surgery). After every epoch it records:
- **pruned now**: top-1 of a copy in which every currently pruned channel is hard, i.e. what removing them
  at this point would give (the curve the papers' convergence claim is about);
- **as trained**: top-1 of the training network itself (soft filters as they are).
Top-1 on the exact first 1,017 CIFAR-10 test images. At the end the final masks are removed physically and
the pruned network is evaluated (it equals the last "pruned now"). Writes a JSON file and a PNG plot.

    .venv/bin/python benchmarks/soft_resnet56.py [--data ../shared/data] [--epochs 6] [--plot benchmarks/soft_resnet56.png]
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
from compressor.export.artifacts import parity_images
from compressor.training import evaluate

REPO = Path(__file__).resolve().parents[1]
METHODS = ["sfp", "hfp", "ghfp"]


def recipe_for(data: Path, method: str, epochs: int):
    overrides = [
        *resnet56_overrides(data, train_subset=10500),
        "data.val_split=500", f"method.epochs={epochs}",
    ]
    return load_recipe(REPO / "recipes" / f"{method}_resnet56_cifar10.yaml", overrides)


def run_method(name: str, data: Path, epochs: int, inputs_cache: dict) -> dict:
    recipe = recipe_for(data, name, epochs)
    seed_everything(recipe.seed)
    device = torch.device("cpu")
    if "inputs" not in inputs_cache:
        inputs_cache["inputs"] = stages.load_inputs(recipe.model, recipe.data, recipe.pruning, recipe.seed, device)
    inputs = inputs_cache["inputs"]
    from compressor.methods import build_method

    method = build_method(recipe.method, seed=recipe.seed)
    curve = []
    original_end = method.end_epoch

    def end_epoch(model, epoch):
        original_end(model, epoch)
        now = evaluate(method.masks.hardened_copy(model), inputs.loaders.test, device).accuracy
        trained = evaluate(model, inputs.loaders.test, device).accuracy
        curve.append({"epoch": epoch, "pruned_now": now, "as_trained": trained})
        print(json.dumps({"method": name, **curve[-1]}), flush=True)

    method.end_epoch = end_epoch
    model = copy.deepcopy(inputs.model)
    start_accuracy = evaluate(method_start(method, model, recipe, inputs), inputs.loaders.test, device).accuracy
    curve.insert(0, {"epoch": 0, "pruned_now": start_accuracy, "as_trained": None})
    start = time.perf_counter()
    from compressor.surgery import prune
    from compressor.surgery.schedule import Trainer, train_with_masks

    trainer = Trainer(inputs.loaders.train, inputs.loaders.val, recipe.finetune, device, recipe.seed)
    masked = train_with_masks(model, method, inputs.input_shape, recipe.pruning, trainer, checkpoint=None)

    surgery = prune(model, inputs.input_shape, method, recipe.pruning)
    final = evaluate(model, inputs.loaders.test, device).accuracy
    with torch.no_grad():
        images = parity_images(inputs.loaders.calibration, 64)
        difference = float((masked.eval()(images) - model.eval()(images)).abs().max())
    return {"method": name, "curve": curve, "final": final, "masked_vs_pruned": difference,
            "macs_reduction_pct": round(surgery.macs_reduction_pct, 2), "seconds": round(time.perf_counter() - start, 1)}


def method_start(method, model, recipe, inputs) -> torch.nn.Module:
    """Epoch 0: the checkpoint with the initial selection removed (before any training with masks)."""
    from compressor.surgery.graph import example_input
    from compressor.surgery.plan import Rounding
    from compressor.surgery.prune import analyse, plan_counts

    probe, trial = copy.deepcopy(method), copy.deepcopy(model)
    layout = analyse(trial, example_input(inputs.input_shape), recipe.pruning)
    plan = plan_counts(layout, recipe.pruning)
    probe.begin(trial, [info for info, _ in layout.groups], plan.kept, Rounding.of(recipe.pruning))
    return probe.masks.hardened_copy(trial)


def plot(results: list[dict], baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for result in results:
        xs = [p["epoch"] for p in result["curve"]]
        ax.plot(xs, [p["pruned_now"] for p in result["curve"]], marker="o", label=f"{result['method'].upper()}")
    ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label=f"unpruned ({baseline:.2f}%)")
    ax.set_xlabel("epoch of training with masks")
    ax.set_ylabel("top-1 % if pruned now (exact 1,017 test images)")
    ax.set_title("ResNet-56, 40% of block-internal filters, 10k training images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "soft_resnet56.png")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / "soft_resnet56.json")
    args = parser.parse_args()
    cache: dict = {}
    results = [run_method(name, args.data, args.epochs, cache) for name in METHODS]
    baseline = evaluate(cache["inputs"].model, cache["inputs"].loaders.test, torch.device("cpu")).accuracy
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": baseline, "results": results}, indent=2) + "\n")
    plot(results, baseline, args.plot)
    for result in results:
        row = " | ".join(f"{p['pruned_now']:.2f}" for p in result["curve"])
        print(f"| {result['method']} | {row} | {result['final']:.2f} | {result['masked_vs_pruned']:.1e} |")


if __name__ == "__main__":
    main()
