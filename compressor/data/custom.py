"""A custom task's data: the user's ``task.loaders`` factory called and checked, as :class:`~.loaders.Loaders`.

``loaders(seed=, batch_size=)`` must return a dict with ``train``, ``val``, ``test`` and ``calibration``
iterables of ``(inputs, targets)`` batches: inputs a float (N, C, H, W) tensor of the model's input shape,
targets any nesting of tensors (what ``task.loss`` and ``task.metric`` read). The first batch of each part is
checked here, before any work, so a wrong return shape is one exit-2 line naming ``task.loaders``.
``import_callable`` imports ``package.module:function`` with the current directory on ``sys.path`` (as
``model.arch`` does) and names the recipe field in every failure.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import DataError
from .loaders import Loaders

PARTS = ("train", "val", "test", "calibration")


def import_callable(spec: str, field: str) -> Callable:
    """The function ``spec`` ('package.module:function') names; one line naming ``field`` when it cannot be had
    (``models.registry.import_callable``, as for ``model.arch``)."""
    from ..models.registry import import_callable as resolve

    return resolve(spec, field, DataError)


def custom_loaders(spec: str, seed: int, batch_size: int, input_shape: tuple[int, int, int]) -> Loaders:
    """Call ``task.loaders`` and check what it returned against the model's ``input_shape``."""
    factory = import_callable(spec, "task.loaders")
    try:
        parts = factory(seed=seed, batch_size=batch_size)
    except Exception as exc:
        raise DataError(f"task.loaders '{spec}' raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(parts, dict) or set(PARTS) - set(parts):
        got = sorted(map(str, parts)) if isinstance(parts, dict) else type(parts).__name__
        raise DataError(f"task.loaders '{spec}' returned {got}; it must return a dict with the keys "
                        f"{', '.join(PARTS)} (each an iterable of (inputs, targets) batches)")
    counts = {name: _check_part(parts[name], name, input_shape) for name in PARTS}
    pool = _Prefix(parts["calibration"], counts["calibration"])
    return Loaders(train=parts["train"], val=parts["val"], test=parts["test"], calibration=parts["calibration"],
                   num_train=counts["train"], num_val=counts["val"], num_test=counts["test"],
                   num_calibration=counts["calibration"], num_classes=0,  # no classes: a custom task
                   input_shape=tuple(input_shape), _pool=pool)


def _check_part(part, name: str, input_shape: tuple[int, int, int]) -> int:
    """The part's image count (its dataset's length, else counted), after checking its first batch."""
    where = f"task.loaders: the {name} part"
    if not hasattr(part, "__iter__"):
        raise DataError(f"{where} is a {type(part).__name__}, not an iterable of (inputs, targets) batches")
    first = next(iter(part), None)
    if first is None:
        raise DataError(f"{where} yields no batch; every part needs at least one")
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        got = f"a {type(first).__name__}" + (f" of {len(first)}" if isinstance(first, (tuple, list)) else "")
        raise DataError(f"{where} yields {got}; each batch must be a pair (inputs, targets)")
    inputs = first[0]
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(input_shape):
        got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DataError(f"{where}: inputs are {got}, expected (N, {', '.join(map(str, input_shape))}) as "
                        "model.input_shape says; fix the loaders or model.input_shape")
    if not inputs.is_floating_point():
        raise DataError(f"{where}: inputs are {inputs.dtype}; the network takes float tensors (normalise in the "
                        "loader)")
    dataset = getattr(part, "dataset", None)
    try:
        return len(dataset)
    except TypeError:
        return sum(int(batch[0].shape[0]) for batch in part)


class _Prefix:
    """``Loaders.calibration_loader(k)`` for a custom task: the first k images of its calibration part."""

    def __init__(self, part, count: int):
        self.part, self.order = part, range(count)

    def loader(self, num_images: int):
        return _FirstImages(self.part, num_images)


class _FirstImages:
    def __init__(self, part, num_images: int):
        self.part, self.num_images = part, num_images

    def __iter__(self):
        left = self.num_images
        for inputs, targets in self.part:
            if left <= 0:
                return
            if inputs.shape[0] > left:
                inputs, targets = inputs[:left], _slice(targets, left)
            left -= inputs.shape[0]
            yield inputs, targets


def _slice(targets, count: int):
    if isinstance(targets, torch.Tensor):
        return targets[:count]
    if isinstance(targets, dict):
        return {k: _slice(v, count) for k, v in targets.items()}
    if isinstance(targets, (list, tuple)):
        cut = [_slice(v, count) for v in targets]
        return type(targets)(*cut) if hasattr(targets, "_fields") else type(targets)(cut)
    return targets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["PARTS", "custom_loaders", "import_callable"]
