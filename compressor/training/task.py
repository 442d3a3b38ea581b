"""What the network is for, at run time: the loss fine-tuning minimises, the evaluation every stage reports,
and which way is better (the recipe's ``task`` section, ``config/task.py``).

:class:`Task` is an image classifier (cross-entropy with label smoothing, top-1, KL distillation on the
logits). :class:`CustomTask` calls the user's ``loss(outputs, targets)`` and ``metric(model, loader, device)``;
its distillation matches every output tensor of the teacher by mean squared error. Batches are ``(inputs,
targets)``; targets may be any nesting of tensors (``to_device`` moves them). The primary value of an
evaluation is ``EvalResult.accuracy`` whatever its name, so the gates, the best epoch and the report treat both
tasks alike; ``better`` and ``worse_by`` respect ``direction``.

Under torchrun a custom metric runs on every rank over the whole loader (each rank gets the same value; the
metric need not know about ranks), where top-1 is summed over shards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError
from ..outputs import flatten
from .evaluate import EvalResult, evaluate, evaluate_sharded


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors in any nesting of tuples, lists and dicts, moved to ``device``; other values unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [to_device(v, device) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else type(value)(moved)  # a namedtuple, or not
    return value


class Task:
    """An image classifier: cross-entropy, top-1 (0-100, higher is better)."""

    kind, primary, direction = "classification", "top1", "higher"

    def loss(self, outputs, targets, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)

    def distillation(self, outputs, teacher_outputs, temperature: float) -> torch.Tensor:
        """Hinton's KL term on the logits, times T^2."""
        t = temperature
        return F.kl_div(F.log_softmax(outputs.float() / t, dim=1), F.log_softmax(teacher_outputs.float() / t, dim=1),
                        reduction="batchmean", log_target=True) * (t * t)

    def correct(self, outputs, targets) -> int | None:
        """Top-1 hits in a training batch (the epoch log's train accuracy); None where it means nothing."""
        return int((outputs.argmax(1) == targets).sum().item())

    def evaluate(self, model: nn.Module, loader, device: torch.device, description: str = "evaluate",
                 sharded: bool = False) -> EvalResult:
        return (evaluate_sharded if sharded else evaluate)(model, loader, device, description)

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` beats ``than`` (None: anything does)."""
        if than is None or (isinstance(than, float) and math.isnan(than)):
            return True
        return value > than if self.direction == "higher" else value < than

    def worse_by(self, baseline: float, pruned: float) -> float:
        """How much worse ``pruned`` is than ``baseline`` (negative when it is better)."""
        return baseline - pruned if self.direction == "higher" else pruned - baseline


class CustomTask(Task):
    """The user's loss and metric, imported from the recipe's ``task`` section (``load_custom_task``)."""

    kind = "custom"

    def __init__(self, loss_fn: Callable, metric_fn: Callable, primary: str, direction: str):
        self.loss_fn, self.metric_fn, self.primary, self.direction = loss_fn, metric_fn, primary, direction

    def loss(self, outputs, targets, label_smoothing: float = 0.0) -> torch.Tensor:
        value = user_call(self.loss_fn, "task.loss", outputs, targets)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"task.loss returned {got}; it must return a scalar tensor (the batch's loss)")
        return value.float().reshape(())

    def distillation(self, outputs, teacher_outputs, temperature: float) -> torch.Tensor:
        """Mean squared error between every output tensor and the teacher's (``temperature`` unused)."""
        pairs = list(zip(flatten(outputs), flatten(teacher_outputs)))
        return sum(F.mse_loss(s.float(), t.float()) for s, t in pairs) / max(1, len(pairs))

    def correct(self, outputs, targets) -> int | None:
        return None

    def evaluate(self, model: nn.Module, loader, device: torch.device, description: str = "evaluate",
                 sharded: bool = False) -> EvalResult:
        """The user's metric on ``loader`` (eval mode, no gradients; the model's mode restored after)."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                values = user_call(self.metric_fn, "task.metric", model, loader, device)
        finally:
            model.train(was_training)
        return _metric_result(values, self.primary, loader)


def user_call(fn: Callable, field: str, *args):
    """``fn(*args)``; an exception in the user's code becomes one exit-2 line naming ``field`` and where it was
    raised (a bug in a metric is the user's to fix, not a failed gate's exit 1)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the user's function, whatever it raises
        import traceback

        frame = traceback.extract_tb(exc.__traceback__)[-1]
        text = str(exc).strip().splitlines()
        raise DataError(f"{field} raised {type(exc).__name__}: {text[0] if text else ''} ({frame.filename}:"
                        f"{frame.lineno}, in {frame.name})") from exc


def _metric_result(values, primary: str, loader) -> EvalResult:
    """``values`` (what task.metric returned) as an EvalResult; one line naming the field when it is unusable."""
    if not isinstance(values, dict):
        raise DataError(f"task.metric returned a {type(values).__name__}; it must return a dict of "
                        f"{{name: number}} that contains task.primary ({primary!r})")
    if primary not in values:
        raise DataError(f"task.primary: {primary!r} is not among the values task.metric returned "
                        f"({', '.join(map(str, values)) or 'none'}); set task.primary to one of them")
    try:
        metrics = {str(k): float(v) for k, v in values.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"task.metric returned a value that is not a number ({exc}); return {{name: number}}") from None
    images = int(metrics.get("images", _count(loader)))
    return EvalResult(accuracy=metrics[primary], loss=metrics.get("loss", float("nan")), images=images,
                      metric=primary, metrics=metrics)


def _count(loader) -> int:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else 0
    except TypeError:
        return 0
