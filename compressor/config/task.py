"""The recipe's ``task`` section: what the network is for, and so how it is trained and judged.

- ``classification`` (the default): the ``data`` section's class folders / CIFAR / npz sources, cross-entropy
  fine-tuning, top-1 accuracy on the test split.
- ``custom``: the user's own data, loss and metric, named as ``package.module:function`` and imported with
  the current directory on ``sys.path`` (like ``model.arch``). ``loaders(seed, batch_size)`` returns the
  train / val / test / calibration iterables of ``(inputs, targets)`` batches; ``loss(outputs, targets)`` is
  the fine-tuning loss; ``metric(model, loader, device)`` returns ``{name: value}``, and ``primary`` names the
  value the gates, the best epoch and the report use, ``direction`` whether higher or lower is better.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PositiveInt

from .fields import StrictModel

CALLABLE = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_CALLABLE_HELP = "'package.module:function', imported with the current directory on sys.path"


class ClassificationTask(StrictModel):
    """An image classifier: the ``data`` section, cross-entropy, top-1."""

    kind: Literal["classification"] = "classification"

    @property
    def primary(self) -> str:
        return "top1"

    @property
    def direction(self) -> str:
        return "higher"


class CustomTask(StrictModel):
    """Your own data, loss and metric (detection, segmentation, multi-head networks)."""

    kind: Literal["custom"]
    loaders: str = Field(pattern=CALLABLE, description=f"{_CALLABLE_HELP}; called as loaders(seed=, batch_size=), "
                         "it returns a dict with train, val, test and calibration iterables of (inputs, targets) "
                         "batches (inputs an N, C, H, W tensor; targets any nesting of tensors).")
    loss: str = Field(pattern=CALLABLE, description=f"{_CALLABLE_HELP}; loss(outputs, targets) -> scalar tensor, "
                      "used by fine-tuning and the training-time methods.")
    metric: str = Field(pattern=CALLABLE, description=f"{_CALLABLE_HELP}; metric(model, loader, device) -> "
                        "{name: value}; it must contain task.primary.")
    primary: str = Field(min_length=1, description="The metric the gates, the best fine-tuning epoch and the report "
                         "use (a key of metric's result).")
    direction: Literal["higher", "lower"] = Field("higher", description="Whether a higher or a lower primary value "
                                                  "is better.")
    batch_size: PositiveInt = Field(32, description="Passed to task.loaders; under torchrun the "
                            "global batch, each process takes batch_size / processes.")


def task_from_word(value):
    """A bare ``task: classification`` becomes ``{kind: classification}`` (a bare ``custom`` has no loaders and
    fails validation naming them)."""
    return {"kind": value} if isinstance(value, str) else value


TaskConfig = Annotated[ClassificationTask | CustomTask, Field(discriminator="kind"), BeforeValidator(task_from_word)]


def check_task(recipe) -> None:
    """The sections a task needs, and what a custom task cannot do yet (one line each, naming the field)."""
    task = recipe.task
    if task.kind == "classification":
        if recipe.data is None:
            raise ValueError("data: task classification needs a data section (train, test, num_classes, normalize); "
                             "or set task.kind: custom with task.loaders, task.loss and task.metric")
        return
    if recipe.data is not None:
        raise ValueError("data: a custom task brings its own data (task.loaders); remove the data section")
    if recipe.export.precisions or recipe.export.tensorrt.enabled:
        field = "export.precisions" if recipe.export.precisions else "export.tensorrt.enabled"
        raise ValueError(f"{field}: not supported with task.kind: custom yet (the variants' accuracy check and the "
                         "engines' parity assume one logits output); drop it, or export the ONNX and convert it "
                         "yourself")
    if recipe.finetune.label_smoothing:
        raise ValueError("finetune.label_smoothing: a custom task's loss is task.loss alone; smooth inside it, or "
                         "set finetune.label_smoothing: 0")
    if recipe.gates.max_variant_accuracy_drop is not None:
        raise ValueError("gates.max_variant_accuracy_drop: not supported with task.kind: custom (no precision "
                         "variants are made); remove it")
