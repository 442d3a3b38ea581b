"""What the ResNet-56 benchmark scripts share: where the shared evaluation material is, the recipe
overrides that point a run at it, and a markdown table printer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data``: the shared material (default: $COMPRESSOR_SHARED_DATA, else ../shared/data beside the repo)."""
    default = Path(os.environ.get("COMPRESSOR_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default, help="the shared evaluation material")


def resnet56_checkpoint(data: Path) -> Path:
    """The akamaster ResNet-56 checkpoint (93.39% on the CIFAR-10 test set)."""
    return sorted((data / "checkpoints" / "akamaster").glob("resnet56-*.th"))[0]


def exact_test_images(data: Path) -> Path:
    """The first 1,017 original CIFAR-10 test images (uint8 ``data``, labels in ``labels_all10000``)."""
    return data / "cifar10-exact" / "test_first1017.npz"


def resnet56_overrides(data: Path, train_subset: int | None) -> list[str]:
    """Recipe overrides: the akamaster checkpoint, ``cifar10-jpg/train.zip`` (a seeded subset, or all of it)
    for training and calibration, the exact 1,017 test images for testing."""
    subset = "" if train_subset is None else f", subset: {train_subset}"
    return [f"model.checkpoint={resnet56_checkpoint(data)}",
            f"data.train={{format: imagefolder, path: {data / 'cifar10-jpg' / 'train.zip'}{subset}}}",
            f"data.test={{format: npz, path: {exact_test_images(data)}, labels_key: labels_all10000}}"]


def print_markdown_table(headers: list[str], rows: list[list[str]]) -> None:
    print("\n| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
