"""The recipe's ``finetune`` section: the training loop after surgery (and of training-time methods)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .fields import PositiveInt, StrictModel


class DistillConfig(StrictModel):
    """Knowledge distillation from the unpruned model (Hinton et al. 2015): the loss becomes
    (1 - weight) * cross-entropy + weight * T^2 * KL(teacher_T || student_T), both softened by temperature T."""

    weight: Annotated[float, Field(gt=0, le=1)] = Field(0.5, description="Share of the distillation term (1 = teacher only).")
    temperature: Annotated[float, Field(gt=0)] = Field(4.0, description="Softmax temperature T of teacher and student.")


class FinetuneConfig(StrictModel):
    epochs: Annotated[int, Field(ge=0)] = Field(0, description="0 skips fine-tuning.")
    lr: Annotated[float, Field(gt=0)] = Field(0.01, description="SGD learning rate at the top of the schedule.")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum.")
    weight_decay: Annotated[float, Field(ge=0)] = Field(5e-4, description="L2 weight decay on conv/linear weights "
                                                        "(not on BatchNorm parameters or biases).")
    schedule: Literal["cosine", "step", "constant"] = Field("cosine", description="Learning-rate schedule over all "
                                                            "steps (step: times gamma at each of milestones).")
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75], description="step schedule: fractions of the epochs where lr *= gamma.")
    gamma: Annotated[float, Field(gt=0, le=1)] = Field(0.1, description="Factor of the step schedule at each milestone.")
    warmup_epochs: Annotated[int, Field(ge=0)] = Field(0, description="Epochs of linear learning-rate warm-up.")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="Label smoothing of the cross-entropy.")
    max_steps_per_epoch: PositiveInt | None = Field(None, description="Cap the optimizer steps of each epoch.")
    distill: DistillConfig | None = Field(
        None, description="Distil from the unpruned model while fine-tuning (null: plain cross-entropy).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Training-step precision. auto: bfloat16 autocast where the device computes bfloat16 "
        "natively (a CPU with AVX-512 BF16 or AMX, a bf16-capable GPU), else fp32. Weights, optimizer and every "
        "evaluation stay float32.")
    channels_last: bool = Field(True, description="Run the training steps in the channels-last (NHWC) layout.")
    compile: bool = Field(False, description="torch.compile the training forward: a compilation (tens of seconds) at "
                          "the start of each training run, faster steps after it; pays for long runs only.")
    threads: PositiveInt | None = Field(None, description="Intra-op threads of the training loop (default: torch's, "
                                        "the physical cores).")

    @model_validator(mode="after")
    def _warmup(self) -> "FinetuneConfig":
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        return self
