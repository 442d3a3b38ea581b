"""Data: the recipe's ``data`` section as PyTorch loaders (train / val / test / calibration).

Sources (``data.train.format``): ``cifar10``/``cifar100`` python pickles (:mod:`.cifar`), ``imagefolder``
folders or zips of ``<class>/<image>`` files (:mod:`.imagefolder`), ``npz`` arrays (:mod:`.npz`) and the
procedurally generated ``synthetic`` shapes task (:mod:`.synthetic`). :func:`build_loaders` splits and
wraps them (:mod:`.loaders`); the transforms are plain torch (:mod:`.transforms`, no torchvision).
``compress validate`` runs the same checks without reading pixels: ``open_source(..., peek=True)``,
``check_geometry``, ``check_same_classes`` and ``split_sizes``.
"""

from __future__ import annotations

from .base import ImageSource, LabelSource
from .loaders import (
    ImageDataset,
    Loaders,
    build_loaders,
    check_geometry,
    check_same_classes,
    open_source,
    split_sizes,
)
from .synthetic import CLASS_NAMES as SHAPES_CLASSES
from .synthetic import make_shapes
from .transforms import ImageTransform

__all__ = ["ImageDataset", "ImageSource", "ImageTransform", "LabelSource", "Loaders", "SHAPES_CLASSES", "build_loaders",
           "check_geometry", "check_same_classes", "make_shapes", "open_source", "split_sizes"]
