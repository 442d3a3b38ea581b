"""Each source format opens, labels and reads images as documented."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from compressor.data.cifar import CIFAR10_CLASSES, open_cifar
from compressor.data.imagefolder import open_imagefolder
from compressor.data.npz import open_npz
from compressor.data.synthetic import CLASS_NAMES, SPLIT_SEEDS, make_shapes, open_synthetic

from .conftest import CLASSES, encode, image_files, write_cifar100, write_npz, write_tree, write_zip


# ----------------------------------------------------------------------------------------------- cifar
@pytest.mark.parametrize("use_parent", [False, True])
def test_cifar10_reads_folder_or_its_parent(cifar10_dir, use_parent):
    path = cifar10_dir.parent if use_parent else cifar10_dir
    train = open_cifar("cifar10", path, "train", "data.train")
    test = open_cifar("cifar10", path, "test", "data.test")
    assert (len(train), len(test)) == (60, 20)
    assert train.class_names == CIFAR10_CLASSES
    with open(cifar10_dir / "data_batch_2", "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    expected = batch[b"data"][3].reshape(3, 32, 32)
    np.testing.assert_array_equal(train.read(12 + 3), expected)
    assert train.labels[12 + 3] == batch[b"labels"][3]
    assert train.read(0).dtype == np.uint8 and train.labels.dtype == np.int64


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    write_cifar100(tmp_path)
    train = open_cifar("cifar100", tmp_path, "train", "data.train")
    test = open_cifar("cifar100", tmp_path / "cifar-100-python", "test", "data.test")
    assert (len(train), len(test)) == (40, 20)
    assert train.labels.max() == 39
    assert train.class_names[:2] == ("c000", "c001") and len(train.class_names) == 100


def test_cifar10_without_meta_uses_known_names(cifar10_dir):
    (cifar10_dir / "batches.meta").unlink()
    assert open_cifar("cifar10", cifar10_dir, "test", "data.test").class_names == CIFAR10_CLASSES


# ----------------------------------------------------------------------------------------- imagefolder
def _check_tree_source(source):
    assert source.class_names == CLASSES
    assert len(source) == 12
    assert list(source.labels) == [0] * 4 + [1] * 4 + [2] * 4
    assert source.members == sorted(source.members, key=lambda m: (m.split("/")[-2], m))
    for index in range(len(source)):
        image = source.read(index)
        assert image.dtype == np.uint8 and image.shape[0] == 3 and image.shape[1] == 32


def test_imagefolder_from_directory(tree):
    _check_tree_source(open_imagefolder(tree, "data.train", 3))


def test_imagefolder_from_zip_with_top_folder(tree_zip):
    source = open_imagefolder(tree_zip, "data.train", 3)
    _check_tree_source(source)
    assert source.members[0].startswith("train/cat/")


def test_imagefolder_zip_and_directory_give_same_pixels(tmp_path):
    files = image_files()
    folder = open_imagefolder(write_tree(tmp_path / "dir", files), "data.train", 3)
    archive = open_imagefolder(write_zip(tmp_path / "flat.zip", files), "data.train", 3)
    assert folder.members == archive.members
    for index in range(len(folder)):
        np.testing.assert_array_equal(folder.read(index), archive.read(index))


def test_imagefolder_class_folders_inside_one_top_folder_of_a_directory(tmp_path):
    write_tree(tmp_path / "root" / "train", image_files(per_class=1))
    source = open_imagefolder(tmp_path / "root", "data.train", 3)
    assert source.class_names == CLASSES


def test_imagefolder_converts_to_the_model_channels(tree):
    grey = open_imagefolder(tree, "data.train", 1)
    rgba = open_imagefolder(tree, "data.train", 4)
    assert {grey.read(i).shape[0] for i in range(len(grey))} == {1}
    assert {rgba.read(i).shape[0] for i in range(len(rgba))} == {4}


def test_imagefolder_skips_hidden_files_and_macos_folders(tmp_path):
    files = image_files(per_class=1)
    junk = {"__MACOSX/cat/._000.png": b"junk", "cat/.DS_Store": b"junk", ".hidden/x/1.png": b"junk",
            "README.txt": b"hello"}
    source = open_imagefolder(write_zip(tmp_path / "a.zip", {**files, **junk}), "data.train", 3)
    assert source.class_names == CLASSES and len(source) == 3


def test_imagefolder_extensions_are_case_insensitive(tmp_path):
    files = {name.replace(".png", ".PNG").replace(".jpg", ".JpG"): data for name, data in image_files().items()}
    assert len(open_imagefolder(write_tree(tmp_path / "d", files), "data.train", 3)) == 12


def test_imagefolder_decodes_lazily_once_and_caches_small_images(tree_zip, monkeypatch):
    source = open_imagefolder(tree_zip, "data.train", 3)
    assert source._cache == {}
    calls = []
    decode = source._decode
    monkeypatch.setattr(source, "_decode", lambda member: calls.append(member) or decode(member))
    first = source.read(5)
    assert source.read(5) is first
    assert calls == [source.members[5]] and list(source._cache) == [5]


def test_imagefolder_does_not_cache_large_images(tmp_path):
    source = open_imagefolder(write_tree(tmp_path / "big", image_files(per_class=1, size=80)), "data.train", 3)
    source.read(0)
    assert source._cache == {}


def test_imagefolder_zip_handle_is_reopened_in_another_process(tree_zip):
    source = open_imagefolder(tree_zip, "data.train", 3)
    handle = source._zip
    assert isinstance(handle, zipfile.ZipFile) and source._zip_pid == os.getpid()
    source._zip_pid = -2  # as seen from a forked worker
    source.read(0)
    assert source._zip is not handle and source._zip_pid == os.getpid()
    clone = pickle.loads(pickle.dumps(source))
    assert clone._zip is None
    np.testing.assert_array_equal(clone.read(1), source.read(1))


# ------------------------------------------------------------------------------------------------- npz
def test_npz_nchw_and_labels_longer_than_images(tmp_path):
    path = write_npz(tmp_path / "a.npz", num=30, extra_labels=70)
    source = open_npz(path, "data", "labels", "NCHW", "data.test")
    assert len(source) == 30 and source.labels.dtype == np.int64
    np.testing.assert_array_equal(source.read(7), np.load(path)["data"][7])


def test_npz_nhwc_is_transposed(tmp_path):
    path = write_npz(tmp_path / "a.npz", num=5, layout="NHWC")
    source = open_npz(path, "data", "labels", "NHWC", "data.test")
    np.testing.assert_array_equal(source.read(2), np.load(path)["data"][2].transpose(2, 0, 1))
    assert source.channels == 3


def test_npz_other_keys(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(path, x=np.zeros((4, 1, 5, 5), np.uint8), y=np.arange(4))
    source = open_npz(path, "x", "y", "NCHW", "data.train")
    assert source.channels == 1 and list(source.labels) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------- synthetic
def test_synthetic_splits_use_fixed_seeds_and_differ():
    train = open_synthetic("shapes", 50, "train", "data.train")
    test = open_synthetic("shapes", 50, "test", "data.test")
    np.testing.assert_array_equal(train.images, make_shapes(50, SPLIT_SEEDS["train"])[0])
    assert train.class_names == CLASS_NAMES
    flat_train = {img.tobytes() for img in train.images}
    assert not flat_train & {img.tobytes() for img in test.images}


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    files = image_files(per_class=1)
    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    files["cat/000.png"] = encode(Image.fromarray(ramp), "png")
    source = open_imagefolder(write_tree(tmp_path / "t", files), "data.train", 1)
    image = source.read(list(source.members).index("cat/000.png"))
    assert image.shape == (1, 32, 32) and image.min() == 0 and 250 <= image.max() <= 255
    assert (image == 255).mean() < 0.01  # PIL's plain convert would saturate almost every pixel


def test_decode_cache_is_bounded(tmp_path, monkeypatch):
    from compressor.data import imagefolder

    source = imagefolder.open_imagefolder(write_tree(tmp_path / "t", image_files(per_class=4)), "data.train", 3)
    monkeypatch.setattr(imagefolder, "CACHE_MAX_BYTES", 3 * 32 * 34 * 3)  # room for about three images
    for i in range(len(source.members)):
        source.read(i)
    assert 0 < len(source._cache) <= 3 and source._cache_bytes <= imagefolder.CACHE_MAX_BYTES
