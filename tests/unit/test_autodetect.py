"""``format: auto`` data sources (``config/autodetect.py``): each common layout is recognised without reading
pixels and the recipe is validated as the concrete kind; what cannot be told apart is one line naming the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compressor.config import load_recipe
from compressor.errors import RecipeError

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"


def source(path: Path, role: str = "train", extra: str = ""):
    recipe = load_recipe(QUICKSTART, [f"data.{role}={{format: auto, path: {path}{extra}}}"])
    return getattr(recipe.data, role)


def touch(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_cifar_pickle_folders(tmp_path):
    c10 = touch(tmp_path / "c10", "data_batch_1", "data_batch_5", "test_batch", "batches.meta")
    assert (source(c10).format, source(c10).split) == ("cifar10", "train")
    assert source(c10, "test").split == "test"
    assert source(touch(tmp_path / "c100", "train", "test", "meta")).format == "cifar100"


def test_image_folders_and_zips(tmp_path):
    assert source(touch(tmp_path / "a", "cat/1.png", "dog/2.JPG")).format == "imagefolder"
    assert source(touch(tmp_path / "b", "top/cat/1.jpeg")).format == "imagefolder"  # one extra top folder
    import zipfile

    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("cat/1.png", b"")
    found = source(tmp_path / "c.zip", extra=", subset: 10")
    assert (found.format, found.subset, found.path) == ("imagefolder", 10, tmp_path / "c.zip")


def test_npz_keys_and_layout_come_from_the_array_headers(tmp_path):
    np.savez(tmp_path / "nhwc.npz", pixels=np.zeros((4, 8, 8, 3), np.uint8), target=np.zeros(4, np.int64),
             names=np.array(["a", "b"]))
    found = source(tmp_path / "nhwc.npz")
    assert (found.format, found.images_key, found.labels_key, found.layout) == ("npz", "pixels", "target", "NHWC")
    np.savez(tmp_path / "nchw.npz", data=np.zeros((4, 3, 8, 8), np.uint8), labels_all10000=np.zeros(9, np.uint8))
    assert source(tmp_path / "nchw.npz").layout == "NCHW"


@pytest.mark.parametrize("make, words", [
    (lambda p: np.savez(p / "x.npz", a=np.zeros((2, 3, 4, 4), np.uint8), b=np.zeros((2, 3, 4, 4), np.uint8),
                        y=np.zeros(2, np.int64)), "cannot tell the image array"),
    (lambda p: (p / "x.npz").write_bytes(b"not a zip"), "not a readable .npz"),
    (lambda p: (p / "x.npz").unlink(missing_ok=True), "not found"),
    (lambda p: (p / "x.npz").mkdir(), "no CIFAR pickles and no class folders"),
])
def test_what_cannot_be_recognised_is_one_line_naming_the_field(tmp_path, make, words):
    make(tmp_path)
    with pytest.raises(RecipeError) as info:
        source(tmp_path / "x.npz")
    message = str(info.value)
    assert words in message and "data.train.path" in message and "\n" not in message
    assert "data: data.train" not in message  # the field is named once
