"""Every pruning method's recipe options (the ``method`` section), torch-free.

Each class here is one method's ``Options``: its ``name`` literal is the recipe's ``method.name``, and the
method's implementation in ``compressor/methods/`` registers itself under this type
(``@register(HRankOptions)``), so a method's name is written once, here. What each option means for the
method, and where the method departs from its paper, is in the method's own file.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

from pydantic import Field, model_validator

from .fields import Ratio, StrictModel


class MethodOptions(StrictModel):
    """Base of every method's options; subclasses narrow ``name`` to a Literal."""

    name: str

    @property
    def allocates(self) -> bool:
        """True when the method itself decides how many channels go (then the recipe needs no amount)."""
        return False

    @property
    def trains(self) -> bool:
        """True for training-time methods (masks or a skeleton learned before surgery)."""
        return False

    @classmethod
    def method_name(cls) -> str:
        """The ``method.name`` this options type stands for (its ``name`` literal)."""
        values = get_args(cls.model_fields["name"].annotation)
        if len(values) != 1:
            raise TypeError(f"{cls.__name__}.name must be a Literal of one method name")
        return values[0]


# --------------------------------------------------------------------------------- data-free baselines
Reduction = Literal["mean", "first", "max", "sum"]


class _NormOptions(MethodOptions):
    reduction: Reduction = Field(
        "mean", description="How the per-layer scores of a coupled group combine: mean (torch-pruning's default), "
        "first (the root conv only, the papers' rule for a plain chain), max or sum.")


class L1Options(_NormOptions):
    name: Literal["l1"]


class L2Options(_NormOptions):
    name: Literal["l2"]


class FPGMOptions(_NormOptions):
    name: Literal["fpgm"]


class RandomOptions(MethodOptions):
    name: Literal["random"]


# ------------------------------------------------------------------------------------ data-informed
class HRankOptions(MethodOptions):
    name: Literal["hrank"]
    images: Annotated[int, Field(gt=0)] = Field(500, description="Calibration images g whose map ranks are averaged.")


class PFPOptions(MethodOptions):
    name: Literal["pfp"]
    variant: Literal["deterministic", "sampling"] = Field(
        "deterministic", description="deterministic: top-k by sensitivity (PFPNet); sampling: importance sampling "
        "with re-weighting of the kept channels (PFPNetRand).")
    sample_size: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Images in the sample set S; default: the paper's formula, capped by the calibration images.")


class FunctionalityOptions(MethodOptions):
    name: Literal["functionality"]
    images: Annotated[int, Field(gt=0)] = Field(256, description="Calibration images whose responses define a "
                                                                 "filter's functionality.")
    threshold: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Correlation at or above which a filter repeats a more important one and is removed; "
        "set it to let the method decide how many filters go (then the recipe needs no ratio or target).")

    @property
    def allocates(self) -> bool:
        return self.threshold is not None


# ------------------------------------------------------------------------------------ training-time
class _SoftOptions(MethodOptions):
    epochs: Annotated[int, Field(gt=0)] = Field(10, description="Epochs of training with masks (E).")
    criterion: Literal["l2", "fpgm"] = Field("l2", description="Filter score at re-selection: L2 norm or FPGM.")
    keep_schedule: Literal["constant", "poly", "exp"] = Field(
        "constant", description="Kept fraction over the epochs: the final one throughout, or the asymptotic "
        "poly / exp schedules (ASFP).")
    decay_start: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="d0: soft-pruned weights are multiplied by d(e) decaying from d0 (0: zeroed, as SFP).")
    decay_floor: Annotated[float, Field(gt=0)] = Field(1e-5, description="sigma of the decay schedule.")

    @property
    def trains(self) -> bool:
        return True


class SFPOptions(_SoftOptions):
    name: Literal["sfp"]


class HFPOptions(_SoftOptions):
    name: Literal["hfp"]


class GHFPOptions(_SoftOptions):
    name: Literal["ghfp"]
    hard_exponent: Annotated[float, Field(gt=0)] = Field(3.0, description="p in lambda(e) = 1 - (1 - (e+1)/E)^p.")


class SWPOptions(MethodOptions):
    name: Literal["swp"]
    epochs: Annotated[int, Field(gt=0)] = Field(10, description="Epochs of training with the Filter Skeleton.")
    alpha: Annotated[float, Field(ge=0)] = Field(1e-5, description="Weight of the L1 term on the skeleton (--sr).")
    threshold: Annotated[float, Field(gt=0)] = Field(
        0.05, description="delta: skeleton entries with |I| <= delta are pruned (paper's ResNet-56 rows: 0.05 params, "
        "0.09 FLOPs; reference README: 0.01). In mode finetune, relative to the filter's strongest stripe.")
    mode: Literal["finetune", "scratch", "reconstruct"] = Field(
        "finetune", description="finetune (from a trained checkpoint): skeleton initialised from the trained stripe "
        "norms and kept at max |I| = 1 per filter, a departure from the paper (see the method docstring); scratch: "
        "the reference rule (I = 1, absolute delta), for the paper's long from-scratch training; reconstruct: no "
        "training, the sparsity share of the stripes removed where the least-squares residual rises least and the "
        "survivors re-fitted to the original layer's output on the calibration images (a departure, "
        "methods/stripe_fit.py).")
    sparsity: Ratio | None = Field(
        None, description="mode reconstruct: the share of the KxK convs' stripes removed (every filter keeps one); or "
        "give pruning.macs_reduction_pct instead (counted on the stripe graph).")
    budget: Literal["global", "layer"] = Field(
        "global", description="mode reconstruct: global shares the sparsity out over the layers by how much of its "
        "output each would lose (measured on the calibration images); layer removes it from every layer alike.")

    @model_validator(mode="after")
    def _sparsity_with_reconstruct(self) -> "SWPOptions":
        if self.mode != "reconstruct" and self.sparsity is not None:
            raise ValueError("method.sparsity goes with method.mode: reconstruct (modes finetune and scratch prune what "
                             "the skeleton threshold leaves)")
        return self

    @property
    def allocates(self) -> bool:
        """SWP decides what goes (stripes under delta, or the sparsity share): no ratio or target is needed."""
        return True

    @property
    def trains(self) -> bool:
        """Modes finetune and scratch train the skeleton; reconstruct trains nothing."""
        return self.mode != "reconstruct"


METHOD_OPTIONS: tuple[type[MethodOptions], ...] = tuple(sorted(
    (L1Options, L2Options, FPGMOptions, RandomOptions, HRankOptions, PFPOptions, FunctionalityOptions,
     SFPOptions, HFPOptions, GHFPOptions, SWPOptions), key=lambda options: options.method_name()))
"""Every method's options, by method name (the order error messages and ``compress schema`` list them in)."""

MethodConfig = Annotated[Union[METHOD_OPTIONS], Field(discriminator="name")]  # type: ignore[valid-type]
"""The recipe's ``method`` section: one of :data:`METHOD_OPTIONS`, chosen by ``name``."""


def check_swp_budget(method, pruning) -> None:
    """SWP removes stripes: a channel amount means nothing to it; mode reconstruct takes one stripe budget."""
    if method.name != "swp":
        return
    channels = [n for n in ("ratio", "params_reduction_pct", "layers", "layer_ratios") if getattr(pruning, n)]
    if channels:
        raise ValueError(f"pruning.{channels[0]}: method swp removes stripes, not channels; give method.mode: "
                         "reconstruct a method.sparsity or a pruning.macs_reduction_pct instead")
    macs = pruning.macs_reduction_pct is not None
    if method.mode != "reconstruct" and macs:
        raise ValueError("pruning.macs_reduction_pct: method swp meets a MACs target in method.mode: reconstruct "
                         "only (modes finetune and scratch prune what the skeleton threshold leaves)")
    if method.mode == "reconstruct" and macs == (method.sparsity is not None):
        raise ValueError("method.mode: reconstruct takes one budget: method.sparsity (a share of the stripes) or "
                         "pruning.macs_reduction_pct (counted on the stripe graph), " + ("not both" if macs else
                                                                                          "e.g. sparsity: 0.5"))
