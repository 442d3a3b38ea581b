"""Image files in ``<class>/<image>`` folders, from a directory or straight out of a ``.zip``.

Layout rules (as torchvision's ImageFolder, plus one convenience): the class folders are the folders
that directly contain images; they must all share one parent, which is the root or ONE extra top folder
(``train/<class>/x.jpg`` inside ``train.zip``). Class index = position in the sorted class names.
Extensions jpg/jpeg/png/bmp/webp (any case); hidden files and ``__MACOSX`` folders are skipped.

Cost model: opening reads only the file list (a zip's central directory), never pixels. Each image is
decoded when first asked for and converted to the model's channel count; small images (<= 64x64, e.g.
CIFAR as JPEG) stay cached in memory, so every image is decoded at most once per process and a small
calibration subset of a 50,000-file zip decodes only its own files. Zip members are read directly (no
extraction) through one ``ZipFile`` handle per process, reopened after a DataLoader worker forks.
"""

from __future__ import annotations

import io
import os
import posixpath
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ImageSource, describe

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_MAX_SIDE = 64  # only small images are cached (decoding a 32x32 JPEG costs about as much as copying it)
CACHE_MAX_BYTES = 256 * 2**20  # per process: every DataLoader worker holds its own cache
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError)


def open_imagefolder(path: Path, field: str, channels: int) -> ImageFolderSource:
    """Index a folder or zip of class folders (file names only) for lazy reading."""
    path = Path(path)
    if channels not in _MODES:
        raise DataError(f"{field}: image files decode to 1, 3 or 4 channels but model.input_shape asks for "
                        f"{channels}; use format: npz for other channel counts")
    if not path.exists():
        raise DataError(f"{field}.path: {path} does not exist; point it at a folder or .zip of <class>/<image> files")
    if path.is_dir():
        (names, folders), archive = _list_dir(path, field), None
    else:
        archive = _open_zip(path, field)
        names = _zip_names(archive, path, field)
        folders = [info.filename.rstrip("/") for info in archive.infolist() if info.is_dir()]
    classes, members, labels = _index(names, path, field)
    _check_no_empty_classes(folders, classes, members, path, field)
    source = ImageFolderSource(field, path, classes, members, labels, _MODES[channels])
    source.adopt(archive)
    return source


class ImageFolderSource(ImageSource):
    """Lazily decoded image files; ``members`` are paths relative to the folder or names in the zip."""

    def __init__(self, field: str, path: Path, classes: tuple[str, ...], members: list[str],
                 labels: np.ndarray, mode: str):
        super().__init__(field, str(path), labels, classes)
        self.path = path
        self.members = members
        self.mode = mode
        self.is_zip = not path.is_dir()
        self._cache: dict[int, np.ndarray] = {}
        self._cache_bytes = 0
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1

    @property
    def channels(self) -> int:
        return len(self.mode)

    def read(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        image = self._decode(self.members[index])
        small = image.shape[1] <= CACHE_MAX_SIDE and image.shape[2] <= CACHE_MAX_SIDE
        if small and self._cache_bytes + image.nbytes <= CACHE_MAX_BYTES:
            self._cache[index] = image
            self._cache_bytes += image.nbytes
        return image

    def read_many(self, indices: np.ndarray) -> list[np.ndarray]:
        """Decoded without filling the per-image cache: the caller holds them all."""
        return [self._cache[i] if i in self._cache else self._decode(self.members[i]) for i in map(int, indices)]

    def adopt(self, archive: zipfile.ZipFile | None) -> None:
        """Reuse the handle that listing opened (this process only) instead of opening the zip again."""
        self._zip, self._zip_pid = archive, (os.getpid() if archive is not None else -1)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"], state["_zip_pid"] = None, -1  # a handle never crosses processes
        state["_cache"], state["_cache_bytes"] = {}, 0  # nor does the cache (spawned workers start empty)
        return state

    def _decode(self, member: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            raw = self._read_bytes(member)
            with Image.open(io.BytesIO(raw)) as img:
                array = np.asarray(_to_8bit(img).convert(self.mode))
        except (*_READ_ERRORS, Image.DecompressionBombError) as exc:
            reason = "not a readable image" if isinstance(exc, UnidentifiedImageError) else describe(exc)
            raise DataError(f"{self.field}: cannot read image '{member}' in {self.path} ({reason}); "
                            "remove or replace that file") from None
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return np.ascontiguousarray(array)

    def _read_bytes(self, member: str) -> bytes:
        if not self.is_zip:
            with open(self.path / member, "rb") as handle:
                return handle.read()
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip.read(member)


def _to_8bit(img):
    """PIL clips 16-bit and 32-bit integer images to 255 when converting to RGB/L: scale them instead."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
        return Image.fromarray(np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8))
    if img.mode == "F":
        raise OSError("32-bit float images are not supported; convert them to 8-bit PNG or JPEG")
    return img


# ------------------------------------------------------------------------------------------- listing
def _list_dir(root: Path, field: str) -> tuple[list[str], list[str]]:
    """Files and folders under ``root``, as relative posix paths."""
    names, folders = [], []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        rel = Path(os.path.relpath(folder, root)).as_posix()
        prefix = "" if rel == "." else rel + "/"
        names.extend(prefix + name for name in files)
        folders.extend(prefix + name for name in dirs)
    if not names:
        raise DataError(f"{field}.path: folder {root} is empty; put the images in <class>/<image> folders under it")
    return names, folders


def _open_zip(path: Path, field: str) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{field}.path: {path} is not a zip file; format imagefolder takes a folder or a .zip "
                        "of <class>/<image> files")
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DataError(f"{field}.path: zip file {path} is corrupt ({describe(exc)}); "
                        "download or create it again") from None


def _zip_names(archive: zipfile.ZipFile, path: Path, field: str) -> list[str]:
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    if not names:
        raise DataError(f"{field}.path: zip file {path} is empty; it must hold <class>/<image> files")
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise DataError(f"{field}.path: zip file {path} has an unsafe member name '{name}' (absolute or "
                            "with '..'); re-create the zip with relative paths")
    return names


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


# ------------------------------------------------------------------------------------------ indexing
def _index(names: list[str], path: Path, field: str) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Class names, image members sorted by (class, name), and their class indices."""
    images = sorted(n for n in names if n.lower().endswith(EXTENSIONS) and not any(map(_hidden, n.split("/"))))
    if not images:
        shown = ", ".join(sorted(names)[:3])
        raise DataError(f"{field}.path: no images ({', '.join(EXTENSIONS)}) in {path} (found e.g. {shown}); "
                        "imagefolder needs <class>/<image> files")
    parents = {posixpath.dirname(n) for n in images}
    if "" in parents:
        loose = next(n for n in images if "/" not in n)
        raise DataError(f"{field}.path: image '{loose}' in {path} is not inside a class folder; "
                        "put every image in a <class>/ folder")
    roots = sorted({posixpath.dirname(p) for p in parents})
    if len(roots) > 1:
        raise DataError(f"{field}.path: class folders in {path} have different parents ({_show(roots)}); "
                        "all <class>/ folders must sit side by side (point the path at one split)")
    if "/" in roots[0]:
        raise DataError(f"{field}.path: class folders in {path} are nested under '{roots[0]}/'; at most one "
                        "top folder is allowed: point the path there or re-create the zip")
    classes = tuple(sorted({posixpath.basename(p) for p in parents}))
    lookup = {name: i for i, name in enumerate(classes)}
    labels = np.array([lookup[posixpath.basename(posixpath.dirname(n))] for n in images], dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    return classes, [images[i] for i in order], labels[order]


def _check_no_empty_classes(folders: list[str], classes: tuple[str, ...], members: list[str], path: Path,
                            field: str) -> None:
    """A class folder without images would silently shift every later class index (torchvision refuses it too)."""
    root = posixpath.dirname(posixpath.dirname(members[0]))
    siblings = {posixpath.basename(f) for f in folders if posixpath.dirname(f) == root and not _hidden(posixpath.basename(f))}
    empty = sorted(siblings - set(classes))
    if empty:
        where = [posixpath.join(root, e) for e in empty]
        raise DataError(f"{field}.path: class folder(s) {_show(where)} in {path} hold no images; add images or remove "
                        "the folder(s), otherwise the class indices of the other folders shift")


def _show(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{item or '.'}'" for item in items[:limit])
    return shown + (", ..." if len(items) > limit else "")
