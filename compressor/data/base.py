"""What every data source provides: labels known up front and one uint8 image per index.

A source is opened cheaply (labels and file names only, no pixels decoded where that can be avoided)
and read lazily, one image at a time, as a ``uint8`` array of shape ``(C, H, W)``. ``field`` is the
recipe field it came from (``data.train``) and ``where`` the file or folder; both go into every error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import DataError

CONVERTIBLE_CHANNELS = {1: (1, 3), 2: (1, 3), 3: (1, 3), 4: (1, 3, 4)}  # stored C -> model C we can convert to


class ImageSource(ABC):
    """Labels (int64, one per image), optional class names, and lazy ``read(index) -> uint8 (C, H, W)``."""

    def __init__(self, field: str, where: str, labels: np.ndarray, class_names: tuple[str, ...] | None):
        self.field = field
        self.where = where
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.labels)

    @property
    @abstractmethod
    def channels(self) -> int:
        """Channels of the arrays ``read`` returns."""

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as a uint8 ``(C, H, W)`` array (may be a read-only view: do not modify it)."""

    def read_many(self, indices: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Images ``indices``, for a loader that holds them all (data/memory.py): one ``(N, C, H, W)`` array
        where the source stores one, else a list of ``(C, H, W)`` arrays (sizes may differ)."""
        return [self.read(int(i)) for i in indices]


class ArraySource(ImageSource):
    """Images already in memory as one uint8 ``(N, C, H, W)`` array (CIFAR pickles, npz, synthetic)."""

    def __init__(self, field: str, where: str, images: np.ndarray, labels: np.ndarray,
                 class_names: tuple[str, ...] | None = None):
        super().__init__(field, where, labels, class_names)
        self.images = images

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def read(self, index: int) -> np.ndarray:
        return self.images[index]

    def read_many(self, indices: np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]


class LabelSource(ImageSource):
    """Labels and the stored channel count without any pixels: what ``compress validate`` looks at
    (``open_source(..., peek=True)``). ``read`` is not available."""

    def __init__(self, field: str, where: str, labels: np.ndarray, channels: int,
                 class_names: tuple[str, ...] | None = None):
        super().__init__(field, where, labels, class_names)
        self._channels = channels

    @property
    def channels(self) -> int:
        return self._channels

    def read(self, index: int) -> np.ndarray:
        raise NotImplementedError(f"{self.field}: a peeked source holds labels only, no pixels")


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, for the parenthesis of a DataError."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def check_channels(source: ImageSource, channels: int) -> None:
    """The model's input channels must equal the stored ones or be reachable by a standard conversion."""
    stored = source.channels
    if stored == channels or channels in CONVERTIBLE_CHANNELS.get(stored, ()):
        return
    raise DataError(f"{source.field}: images in {source.where} have {stored} channels but the model takes "
                    f"{channels} (model.input_shape); use images with {channels} channels or fix model.input_shape")


def check_labels(source: ImageSource, num_classes: int) -> None:
    """Every label must lie in ``[0, num_classes)``."""
    if len(source.labels) == 0:
        raise DataError(f"{source.field}: {source.where} holds no images; point {source.field}.path at a "
                        "non-empty dataset")
    low, high = int(source.labels.min()), int(source.labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(f"{source.field}: labels in {source.where} range over {low}..{high} but "
                        f"data.num_classes is {num_classes}; labels must lie in 0..{num_classes - 1} "
                        "(fix data.num_classes or the labels)")


def check_class_names(source: ImageSource, num_classes: int) -> None:
    """A source that names its classes must name exactly ``num_classes`` of them."""
    names = source.class_names
    if names is not None and len(names) != num_classes:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise DataError(f"{source.field}: {source.where} has {len(names)} classes ({shown}) but "
                        f"data.num_classes is {num_classes}; set data.num_classes: {len(names)} or fix the data")
