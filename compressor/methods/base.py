"""The pruning-method interface and its registry.

A method decides *which* channels matter; surgery (``compressor.surgery``) decides *how many* and removes
them. A method sees a model and, if it is data-informed, calibration batches; it never touches files,
loader construction, optimizers or export. The contract:

1. ``calibrate(model, ctx)`` (optional): collect statistics on calibration data (HRank ranks, PFP
   sensitivities, ...). Called once on the unpruned model in eval mode.
2. ``score(group)``: one importance value per channel of a torch-pruning dependency group (a set of
   coupled layers that must lose the same channels); higher means keep. Scores are compared only within
   a group.

Each method registers itself with :func:`register` and declares an ``Options`` pydantic model whose
``name`` literal is the recipe's ``method.name``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .._schema import StrictModel
from ..errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    import torch


class MethodOptions(StrictModel):
    """Base of every method's options; subclasses narrow ``name`` to a Literal."""

    name: str


@dataclass(frozen=True)
class CalibrationContext:
    """What a data-informed method may use: calibration batches (images, labels) on ``device``."""

    batches: Callable[[], Iterable[tuple["torch.Tensor", "torch.Tensor"]]]
    device: "torch.device"
    num_images: int
    seed: int = 0


class PruningMethod(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `compress methods`
    paper: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]]
    needs_calibration: ClassVar[bool] = False

    def __init__(self, options: MethodOptions, seed: int = 0):
        self.options = options
        self.seed = seed

    def calibrate(self, model: "torch.nn.Module", ctx: CalibrationContext) -> None:  # noqa: B027 (optional hook)
        """Collect statistics on calibration data. The default method needs none."""

    @abstractmethod
    def score(self, group) -> "torch.Tensor":
        """Importance of each channel of ``group`` (a torch_pruning Group); higher means keep."""


_REGISTRY: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[PruningMethod]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"method.name: unknown method {name!r}" + did_you_mean(name, _REGISTRY)) from None


def list_methods() -> list[type[PruningMethod]]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def build_method(options: MethodOptions, seed: int = 0) -> PruningMethod:
    return get_method(options.name)(options, seed=seed)
