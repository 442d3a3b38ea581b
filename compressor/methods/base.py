"""The pruning-method interface and its registry.

A method decides *which* channels matter; surgery (``compressor.surgery``) decides *how many* (unless
the method allocates) and removes them. A method sees a model, its prunable groups and, if it is
data-informed, calibration batches; it never touches files, loader construction, optimizers or export.
The contract, in the order surgery calls it:

1. ``calibrate(model, groups, ctx)`` (data-informed methods): collect statistics on calibration data (HRank
   ranks, PFP sensitivities, functionality signatures). Called once on the unpruned model in eval mode;
   ``groups`` are the prunable groups' ``GroupInfo`` (with the channel slots of every layer they touch).
2. ``score(info, group)``: one importance value per channel of a group (coupled layers that must lose the
   same channels); higher means keep. Scores are compared only within a group.
3. ``allocate(layout, cfg)`` (optional): channels each group keeps (PFP's epsilon allocation); None lets
   surgery use the recipe's ratios or MACs target.
4. ``choose(key, scores, keep, slices)`` (optional): which channels to remove (PFP's sampling); None
   removes the lowest-scoring ones.
5. ``before_removal(model, removed)`` (optional): adjust weights right before the channels go, with the
   original channel numbering (PFP's re-weighting of kept channels). Generic compensation (fold, least
   squares) is surgery's, chosen by ``pruning.compensation``; ``default_compensation`` is what ``auto``
   means for this method.

A method may set ``details`` (a small dict) to be shown in the report (e.g. PFP's epsilon).

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
    default_compensation: ClassVar[str] = "none"  # what pruning.compensation: auto means for this method

    def __init__(self, options: MethodOptions, seed: int = 0):
        self.options = options
        self.seed = seed
        self.details: dict = {}

    def calibrate(self, model: "torch.nn.Module", groups: list, ctx: CalibrationContext) -> None:  # noqa: B027
        """Collect statistics on calibration data. The default method needs none."""

    @abstractmethod
    def score(self, info, group) -> "torch.Tensor":
        """Importance of each channel of ``group`` (a torch_pruning Group, described by ``info``); higher = keep."""

    def allocate(self, layout, cfg) -> dict[str, int] | None:
        """Channels each group keeps, or None to let surgery decide from the recipe."""
        return None

    def choose(self, key: str, scores: "torch.Tensor", keep: int, slices: int) -> list[int] | None:
        """Channel indices to remove from group ``key`` so that ``keep`` remain, or None for the lowest scores."""
        return None

    def before_removal(self, model: "torch.nn.Module", removed: dict[str, list[int]]) -> None:  # noqa: B027
        """Adjust weights just before ``removed`` channels go (original numbering); the default does nothing."""

    @classmethod
    def finetune_hooks(cls, model: "torch.nn.Module"):
        """Training hooks for the fine-tuning stage after surgery (e.g. SWP keeps pruned stripes at zero), or
        None for plain fine-tuning."""
        return None


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
