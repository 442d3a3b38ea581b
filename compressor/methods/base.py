"""The pruning-method interface and its registry.

A method decides *which* channels matter; surgery (``compressor.surgery``) decides *how many* (unless the
method allocates), rounds every count, and removes the channels. A method sees a model, its prunable groups
and, if it is data-informed, calibration batches; it never touches files, loader construction, optimizers or
export, and it imports nothing from ``surgery/``: what it needs of surgery (rounding, the cost model) is
handed to it through the small protocols below. The contract, in the order surgery calls it:

1. ``calibrate(model, groups, ctx)`` (data-informed methods): collect statistics on calibration data (HRank
   ranks, PFP sensitivities, functionality signatures). Called once on the unpruned model in eval mode;
   ``groups`` are the prunable groups' ``GroupInfo`` (with the channel slots of every layer they touch).
2. ``score(info, group)``: one importance value per channel of a group (coupled layers that must lose the
   same channels); higher means keep. Scores are compared only within a group.
3. ``allocate(space)`` (optional): an :class:`Allocation`, the channels each group keeps (PFP's epsilon
   allocation, functionality's threshold), which surgery rounds; None lets surgery use the recipe's ratios or
   MACs target.
4. ``choose(key, scores, keep, slices)`` (optional): which channels to remove (PFP's sampling); None
   removes the lowest-scoring ones.
5. ``before_removal(model, removed)`` (optional): adjust weights right before the channels go, with the
   original channel numbering (PFP's re-weighting of kept channels). Generic compensation (fold, least
   squares) is surgery's, chosen by ``pruning.compensation``; ``default_compensation`` is what ``auto``
   means for this method.

A :class:`TrainingMethod` (SFP/HFP/GHFP, SWP) first trains with masks: surgery's schedule calls ``begin``,
runs the training loop with the method as its :class:`TrainingHooks`, then ``finish`` (every pruned element
final) and ``release`` (hooks off) before the physical surgery. A method may set ``details`` (a small dict of
plain values) to be shown in the report (e.g. PFP's epsilon).

Each method registers itself under its options type from ``compressor.config.methods``
(``@register(HRankOptions)``); the options' ``name`` literal is the method's name (``method.name``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from ..config.methods import MethodOptions
from ..errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CalibrationContext:
    """What a data-informed method may use: calibration batches (images, labels) on ``device``; for a method that
    meets ``pruning.macs_reduction_pct`` itself (SWP mode reconstruct), the target and the unpruned network's MACs
    per image."""

    batches: Callable[[], Iterable[tuple["torch.Tensor", "torch.Tensor"]]]
    device: "torch.device"
    num_images: int
    seed: int = 0
    macs_reduction_pct: float | None = None
    network_macs: int | None = None
    skip_layers: frozenset[str] = frozenset()  # layers the recipe never prunes (pruning.ignore)


# ------------------------------------------------------------------------------ what surgery hands over
class Rounding(Protocol):
    """Surgery's rounding rules (``pruning.round_to``, ``min_channels``, grouped-conv slices): every kept count
    a method proposes goes through one of these."""

    round_to: int
    min_channels: int

    def for_ratio(self, info, ratio: float) -> int:
        """Channels a group keeps when ``ratio`` of them go (the floor rule of HRank's and torch-pruning's code)."""

    def up(self, info, keep: int) -> int:
        """The smallest allowed width holding ``keep`` channels (a kept channel is never dropped by rounding)."""

    def nearest(self, info, keep: int) -> int:
        """The allowed width nearest to ``keep``."""


class AllocationSpace(Protocol):
    """What ``allocate`` sees: the prunable groups with their requested ratios, the rounding, the exact cost
    model and the recipe's reduction target."""

    plans: Sequence  # surgery.plan.GroupPlan: .info (GroupInfo), .ratio, .fixed (a per-layer rule)
    rounding: Rounding
    target: tuple[str, float] | None  # ("macs" | "params", percent) of the recipe, or None for a plain ratio

    def cost(self, kept: dict[str, int], metric: str) -> int:
        """MACs or conv/linear parameters of the network keeping ``kept`` channels per group."""

    def base_cost(self, metric: str) -> int:
        """The same for the unpruned network."""

    def fixed(self) -> dict[str, int]:
        """Kept counts of the groups with a per-layer rule (``pruning.layers`` / ``layer_ratios``)."""

    def closest(self, kept: dict[str, int], anchor: dict[str, int]) -> dict[str, int]:
        """The plan within the target's tolerance reachable by rounding steps from ``kept`` that is closest to
        ``anchor``; raises a SurgeryError when none is."""


@dataclass(frozen=True)
class Allocation:
    """Channels each group keeps, as a method decided them. Surgery rounds every count (``rounding``: up, so a
    channel the method kept is never dropped, or to the nearest allowed width); groups the method does not
    name keep the recipe's count."""

    kept: dict[str, int]
    rounding: Literal["up", "nearest"] = "up"


# ------------------------------------------------------------------------------------------- methods
class PruningMethod(ABC):
    name: ClassVar[str]  # set by @register from the options' name literal
    summary: ClassVar[str]  # one line for `compress methods`
    paper: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]]  # set by @register
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

    def allocate(self, space: AllocationSpace) -> Allocation | None:
        """Channels each group keeps, or None to let surgery decide from the recipe."""
        return None

    def choose(self, key: str, scores: "torch.Tensor", keep: int, slices: int) -> list[int] | None:
        """Channel indices to remove from group ``key`` so that ``keep`` remain, or None for the lowest scores."""
        return None

    def before_removal(self, model: "torch.nn.Module", removed: dict[str, list[int]]) -> None:  # noqa: B027
        """Adjust weights just before ``removed`` channels go (original numbering); the default does nothing."""

    @classmethod
    def finetune_hooks(cls, model: "torch.nn.Module") -> TrainingHooks | None:
        """Training hooks for the fine-tuning stage after surgery (e.g. SWP keeps pruned stripes at zero), or
        None for plain fine-tuning."""
        return None


class TrainingHooks:
    """What a training loop calls on a training-time method (or a fine-tuning constraint); every hook has a
    no-op default. The loop owns the optimizer; hooks never see it."""

    def frozen(self) -> list[tuple["torch.nn.Parameter", "torch.Tensor"]]:
        """(parameter, boolean mask of its frozen elements): kept exactly zero and untouched by the optimizer."""
        return []

    def before_step(self, model: "torch.nn.Module") -> None:  # noqa: B027 (optional hook)
        """Called after ``backward`` and before the optimizer step (e.g. to add a sub-gradient)."""

    def after_step(self, model: "torch.nn.Module") -> None:  # noqa: B027 (optional hook)
        """Called after every optimizer step (e.g. a function-preserving re-parametrisation)."""

    def end_epoch(self, model: "torch.nn.Module", epoch: int) -> None:  # noqa: B027 (optional hook)
        """Called after every epoch's optimizer steps, before validation (1-based epoch)."""

    def state_dict(self) -> dict:
        """The hooks' own state for an epoch checkpoint (masks, history); plain Python values only."""
        return {}

    def load_state(self, model: "torch.nn.Module", state: dict) -> None:  # noqa: B027 (optional hook)
        """Take back :meth:`state_dict`'s output, after the model's weights were restored."""


class TrainingMethod(PruningMethod, TrainingHooks):
    """A method that trains ``epochs`` epochs with masks before the surgery (its options have ``epochs``)."""

    @property
    def epochs(self) -> int:
        return self.options.epochs

    @abstractmethod
    def begin(self, model: "torch.nn.Module", groups: list, final_kept: dict[str, int], rounding: Rounding) -> None:
        """Attach masks before the first epoch: ``groups`` (GroupInfo), each group's final kept count, and the
        rounding every intermediate count must follow."""

    def finish(self, model: "torch.nn.Module") -> None:  # noqa: B027 (optional)
        """After the last epoch: make every pruned element final (the masked network now computes what the
        physically pruned one will)."""

    def release(self) -> None:  # noqa: B027 (optional)
        """Remove what the masks attached to the model (hooks) before surgery changes its layers' widths."""


# ------------------------------------------------------------------------------------------ registry
_REGISTRY: dict[type[MethodOptions], type[PruningMethod]] = {}


def register(options: type[MethodOptions]) -> Callable[[type[PruningMethod]], type[PruningMethod]]:
    """Class decorator: the method for recipes whose ``method`` section is ``options``; its name is the options'."""
    name = options.method_name()

    def add(cls: type[PruningMethod]) -> type[PruningMethod]:
        if options in _REGISTRY or any(c.name == name for c in _REGISTRY.values()):
            raise ValueError(f"method {name!r} registered twice")
        cls.Options, cls.name = options, name
        _REGISTRY[options] = cls
        return cls

    return add


def method_for(options: MethodOptions) -> type[PruningMethod]:
    """The method class registered for this options object's type."""
    try:
        return _REGISTRY[type(options)]
    except KeyError:
        raise RecipeError(f"method.name: no method is registered for {type(options).__name__}") from None


def get_method(name: str) -> type[PruningMethod]:
    for cls in _REGISTRY.values():
        if cls.name == name:
            return cls
    raise RecipeError(f"method.name: unknown method {name!r}" + did_you_mean(name, [c.name for c in _REGISTRY.values()]))


def list_methods() -> list[type[PruningMethod]]:
    return sorted(_REGISTRY.values(), key=lambda cls: cls.name)


def build_method(options: MethodOptions, seed: int = 0) -> PruningMethod:
    return method_for(options)(options, seed=seed)
