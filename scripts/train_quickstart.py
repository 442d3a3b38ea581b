"""Reproduce ``compressor/assets/quicknet_shapes.pt``, the checkpoint the quickstart recipe prunes.

quicknet (see ``compressor/models/cifar_resnet.py``) is trained from scratch on the procedurally generated
shape task (``compressor/data/synthetic.py``) with compressor's own data pipeline and training loop, using
the data section of ``recipes/quickstart.yaml`` (same normalisation, same synthetic splits) with more
training images. Best epoch by validation accuracy; the test split is only read once at the end.

    .venv/bin/python scripts/train_quickstart.py            # about 2-3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compressor.config import FinetuneConfig, load_recipe
from compressor.data import build_loaders
from compressor.environment import resolve_device, seed_everything
from compressor.models import build_model
from compressor.training import evaluate, finetune

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "compressor" / "assets" / "quicknet_shapes.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSET)
    args = parser.parse_args()

    seed_everything(args.seed)
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml",
                         [f"data.train.num_images={args.train_images}", "model.checkpoint=null"])
    device = resolve_device("cpu")
    model, shape = build_model(recipe.model, recipe.data.num_classes)
    loaders = build_loaders(recipe.data, shape, args.seed)
    config = FinetuneConfig(epochs=args.epochs, lr=0.1, weight_decay=5e-4, schedule="cosine", warmup_epochs=1)
    start = time.perf_counter()
    result = finetune(model, loaders.train, loaders.val, config, device)
    test = evaluate(model, loaders.test, device)
    torch.save(model.state_dict(), args.out)
    meta = {"model": recipe.model.arch, "trained_epochs": args.epochs, "train_images": loaders.num_train,
            "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
            "test_accuracy": test.accuracy, "test_images": test.images, "seed": args.seed,
            "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
            "command": "python scripts/train_quickstart.py"}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
