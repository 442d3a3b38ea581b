"""Every bad input is one line of DataError naming the recipe field and the file, with a way out."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from compressor.data import build_loaders
from compressor.data.synthetic import open_synthetic
from compressor.errors import DataError

from .conftest import data_config as _data_config
from .conftest import encode, image_files, synthetic_config, write_cifar10, write_npz, write_tree, write_zip

SHAPE = (3, 32, 32)


def data_config(train: dict, test: dict | None = None, **kwargs):
    kwargs.setdefault("val_split", 2)
    return _data_config(train, test, **kwargs)


def expect(cfg, *fragments: str, shape: tuple[int, int, int] = SHAPE, iterate: bool = False) -> str:
    """Build (and optionally iterate) the loaders; the DataError must be one line containing ``fragments``."""
    with pytest.raises(DataError) as info:
        loaders = build_loaders(cfg, shape, seed=0)
        for loader in (loaders.train, loaders.val, loaders.test) if iterate else ():
            for _ in loader:
                pass
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def folder(path) -> dict:
    return {"format": "imagefolder", "path": str(path)}


def cifar(path, fmt: str = "cifar10") -> dict:
    return {"format": fmt, "path": str(path)}


def npz(path, **kw) -> dict:
    return {"format": "npz", "path": str(path), **kw}


# ------------------------------------------------------------------------------------------- recipe-level
def test_normalize_length_must_match_channels():
    expect(synthetic_config(40, 10, normalize={"mean": [0.5], "std": [0.5]}), "data.normalize", "3 channels")


def test_subset_larger_than_source():
    cfg = _data_config({"format": "synthetic", "num_images": 50, "subset": 60},
                       {"format": "synthetic", "num_images": 10})
    expect(cfg, "data.train.subset: 60 requested but data.train has 50 images")


def test_test_subset_larger_than_source():
    cfg = _data_config({"format": "synthetic", "num_images": 50},
                       {"format": "synthetic", "num_images": 10, "subset": 11})
    expect(cfg, "data.test.subset: 11 requested but data.test has 10 images")


@pytest.mark.parametrize("val_split", [50, 60, 0.9999])
def test_val_split_must_leave_training_images(val_split):
    expect(synthetic_config(50, 10, val_split=val_split), "data.val_split", "leaves none")


def test_val_split_count_must_be_whole():
    expect(synthetic_config(50, 10, val_split=2.5), "data.val_split", "whole number")


def test_resize_smaller_than_crop():
    expect(synthetic_config(50, 10, resize=24), "data.resize", "smaller")


def test_labels_outside_num_classes(tmp_path):
    path = write_npz(tmp_path / "a.npz", num=20)
    expect(data_config(npz(path), num_classes=5), "data.train", "0..9", "data.num_classes is 5", str(path))


def test_negative_labels(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(path, data=np.zeros((4, 3, 8, 8), np.uint8), labels=np.array([0, 1, -1, 2]))
    good = write_npz(tmp_path / "good.npz")
    expect(data_config(npz(good), npz(path)), "data.test", "-1..2")


def test_channels_that_cannot_be_converted():
    expect(synthetic_config(40, 10, normalize={"mean": [0.5] * 2, "std": [0.5] * 2}), "data.train", "2",
           "model.input_shape", shape=(2, 32, 32))


# ------------------------------------------------------------------------------------------------- cifar
def test_cifar_missing_path(tmp_path):
    expect(data_config(cifar(tmp_path / "nope")), "data.train.path", "does not exist", "cifar-10-batches-py")


def test_cifar_path_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    expect(data_config(cifar(tmp_path / "file")), "data.train.path", "is a file")


def test_cifar_folder_without_pickles(tmp_path):
    expect(data_config(cifar(tmp_path)), "data.train.path", "data_batch_1", str(tmp_path))


def test_cifar100_folder_given_for_cifar10(tmp_path):
    folder = write_cifar10(tmp_path)
    expect(data_config(cifar(folder, "cifar100"), num_classes=100), "data.train.path", "cifar-100-python")


def test_cifar_corrupt_pickle(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    expect(data_config(cifar(folder)), "data.train.path", "data_batch_3", "re-extract")


def test_cifar_pickle_without_labels(tmp_path):
    folder = write_cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, handle)
    expect(data_config(cifar(folder)), "data.test.path", "test_batch", "'labels'")


def test_cifar_pickle_with_wrong_data_shape(tmp_path):
    folder = write_cifar10(tmp_path)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle)
    expect(data_config(cifar(folder)), "data.train.path", "data_batch_1", "(N, 3072)")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = write_cifar10(tmp_path)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": _Evil(), b"labels": []}, handle)
    expect(data_config(cifar(folder)), "data.train.path", "not allowed")


# ------------------------------------------------------------------------------------------ imagefolder
def test_imagefolder_missing_path(tmp_path):
    expect(data_config(folder(tmp_path / "nope.zip"), num_classes=3), "data.train.path", "does not exist")


def test_imagefolder_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "images.tar").write_bytes(b"not a zip at all")
    expect(data_config(folder(tmp_path / "images.tar"), num_classes=3), "data.train.path", "not a zip file")


def test_imagefolder_corrupt_zip(tmp_path):
    path = write_zip(tmp_path / "a.zip", image_files())
    data = bytearray(path.read_bytes())
    directory = data.rfind(b"PK\x01\x02")
    data[directory:directory + 4] = b"XXXX"  # break the central directory
    path.write_bytes(bytes(data))
    expect(data_config(folder(path), num_classes=3), "data.train.path", "a.zip")


def test_imagefolder_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    expect(data_config(folder(tmp_path / "empty"), num_classes=3), "data.train.path", "is empty")


def test_imagefolder_empty_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as archive:
        archive.writestr("train/", b"")
    expect(data_config(folder(tmp_path / "e.zip"), num_classes=3), "data.train.path", "is empty")


def test_imagefolder_without_images(tmp_path):
    path = write_zip(tmp_path / "t.zip", {"cat/a.txt": b"x", "dog/b.gif": b"y"})
    expect(data_config(folder(path), num_classes=3), "data.train.path", "no images", "cat/a.txt")


def test_imagefolder_images_outside_class_folders(tmp_path):
    files = {**image_files(per_class=1), "loose.png": image_files(per_class=1)["cat/000.png"]}
    expect(data_config(folder(write_tree(tmp_path / "t", files)), num_classes=3), "data.train.path",
           "'loose.png'", "class folder")


def test_imagefolder_class_folders_under_different_parents(tmp_path):
    files = {f"{split}/{name}": data for split in ("train", "test") for name, data in image_files(1).items()}
    expect(data_config(folder(write_tree(tmp_path / "t", files)), num_classes=3), "data.train.path",
           "'test', 'train'")


def test_imagefolder_two_top_folders_are_too_deep(tmp_path):
    path = write_zip(tmp_path / "deep.zip", {f"a/b/{n}": d for n, d in image_files(1).items()})
    expect(data_config(folder(path), num_classes=3), "data.train.path", "nested under 'a/b/'")


@pytest.mark.parametrize("bad", ["../evil/x.png", "/abs/cat/x.png", "cat/../../x.png"])
def test_imagefolder_unsafe_zip_member_names(tmp_path, bad):
    path = write_zip(tmp_path / "u.zip", {**image_files(1), bad: b"x"})
    expect(data_config(folder(path), num_classes=3), "data.train.path", "unsafe member name", bad)


def test_imagefolder_wrong_number_of_classes(tree):
    expect(data_config(folder(tree), num_classes=10), "data.train", "3 classes", "data.num_classes: 3")


def test_imagefolder_test_classes_differ_from_train(tmp_path, tree):
    other = write_tree(tmp_path / "other", {n.replace("zebra", "horse"): d for n, d in image_files(1).items()})
    expect(data_config(folder(tree), folder(other), num_classes=3), "data.test", "'zebra'", "'horse'")


def test_imagefolder_corrupt_image_in_a_folder(tmp_path):
    files = {**image_files(), "dog/broken.jpg": b"\xff\xd8\xff garbage"}
    tree = write_tree(tmp_path / "t", files)
    expect(data_config(folder(tree), num_classes=3, val_split=1), "data.train", "'dog/broken.jpg'", str(tree),
           "remove or replace", iterate=True)


def test_corrupt_image_read_in_a_worker_process_is_still_one_line(tmp_path):
    files = {**image_files(), "dog/broken.jpg": b"\xff\xd8\xff garbage"}
    tree = write_tree(tmp_path / "t", files)
    message = expect(data_config(folder(tree), num_classes=3, val_split=1, workers=1), iterate=True)
    assert message.startswith("data.train: cannot read image 'dog/broken.jpg'")


def test_imagefolder_corrupt_member_in_a_zip(tmp_path):
    files = image_files()
    files["cat/001.jpg"] = encode(Image.new("RGB", (4, 4)), "jpg")[:20]
    path = write_zip(tmp_path / "c.zip", files, top="train")
    expect(data_config(folder(path), num_classes=3, val_split=1), "data.train", "'train/cat/001.jpg'", str(path),
           iterate=True)


def test_imagefolder_zip_member_with_bad_crc(tmp_path):
    files = image_files()
    path = write_zip(tmp_path / "crc.zip", files)
    data = bytearray(path.read_bytes())
    member = next(name for name in files if name.startswith("dog/"))
    target = files[member]
    start = data.find(target)
    data[start + len(target) // 2] ^= 0xFF  # flip a byte inside a stored member
    path.write_bytes(bytes(data))
    expect(data_config(folder(path), num_classes=3, val_split=1), "data.train", f"'{member}'", iterate=True)


# --------------------------------------------------------------------------------------------------- npz
def test_npz_missing_path(tmp_path):
    expect(data_config(npz(tmp_path / "x.npz")), "data.train.path", "does not exist")


def test_npz_path_is_a_folder(tmp_path):
    expect(data_config(npz(tmp_path)), "data.train.path", "is a folder")


def test_npz_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"hello world")
    expect(data_config(npz(tmp_path / "x.npz")), "data.train.path", "not an .npz file")


def test_npz_single_npy_array(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    expect(data_config(npz(tmp_path / "x.npy")), "data.train.path", "single .npy array")


def test_npz_missing_key_lists_the_keys(tmp_path):
    path = write_npz(tmp_path / "a.npz")
    expect(data_config(npz(path, images_key="images")), "data.train.images_key", "'images'", "data, labels")
    expect(data_config(npz(path, labels_key="y")), "data.train.labels_key", "'y'", "data, labels")


def test_npz_images_not_4d(tmp_path):
    path = write_npz(tmp_path / "a.npz", data=np.zeros((10, 32, 32), np.uint8))
    expect(data_config(npz(path)), "data.train.images_key", "4-D", str(path))


def test_npz_images_not_uint8(tmp_path):
    path = write_npz(tmp_path / "a.npz", data=np.zeros((10, 3, 8, 8), np.float32))
    expect(data_config(npz(path)), "data.train.images_key", "float32", "uint8")


def test_npz_wrong_layout(tmp_path):
    path = write_npz(tmp_path / "a.npz", layout="NHWC")
    expect(data_config(npz(path)), "data.train.layout", "NHWC")


def test_npz_fewer_labels_than_images(tmp_path):
    path = write_npz(tmp_path / "a.npz", num=10, labels=np.arange(5))
    expect(data_config(npz(path)), "data.train.labels_key", "10 images but only 5 labels")


def test_npz_labels_not_1d_integers(tmp_path):
    path = write_npz(tmp_path / "a.npz", num=10, labels=np.zeros((10, 2)))
    expect(data_config(npz(path)), "data.train.labels_key", "1-D integer")


def test_npz_pickled_objects_are_refused(tmp_path):
    path = write_npz(tmp_path / "a.npz", labels=np.array([{"a": 1}] * 30, dtype=object))
    expect(data_config(npz(path)), "data.train.path", "a.npz")


def test_synthetic_unknown_task():
    with pytest.raises(DataError, match="data.train.task"):
        open_synthetic("circles", 10, "train", "data.train")


def test_data_error_is_raised_for_an_unreadable_npz_in_test(tmp_path):
    good = write_npz(tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:200])
    expect(data_config(npz(good), npz(bad)), "data.test.path", "bad.npz")



def test_imagefolder_empty_class_folder_in_a_tree(tmp_path):
    root = write_tree(tmp_path / "t", image_files(per_class=1))
    (root / "bird").mkdir()  # sorts between cat and dog: would shift dog and zebra by one
    expect(data_config(folder(root), num_classes=4), "data.train.path", "'bird'", "hold no images")


def test_imagefolder_empty_class_folder_in_a_zip(tmp_path):
    path = write_zip(tmp_path / "t.zip", image_files(per_class=1), top="train")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("train/bird/", b"")
    expect(data_config(folder(path), num_classes=4), "data.train.path", "'train/bird'", "hold no images")


def test_imagefolder_float_image_is_refused(tmp_path):
    files = image_files(per_class=1)
    image = Image.fromarray(np.ones((32, 32), dtype=np.float32))
    files["cat/000.png"] = encode(image, "tiff")  # a float TIFF under a .png name: PIL decodes by content
    expect(data_config(folder(write_tree(tmp_path / "t", files)), num_classes=3), "data.train", "float",
           iterate=True)
