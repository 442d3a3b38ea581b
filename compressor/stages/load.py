"""The load stage, and the checks that run before any work is done or any file written.

``load_inputs``: the model (zoo or the user's factory), its checkpoint, a trial prune of the recipe's plan
(selectors, channel counts, the pruned forward), and the loaders. ``check_dependencies``: a recipe that
needs TensorRT, a GPU or onnxruntime-gpu where they are missing stops in its first second with exit 2 and
the install hint, not after hours of fine-tuning (DESIGN.md §3). Nothing here writes a file, so a bad input
leaves no run folder behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..artifacts import RunLayout
from ..config import DataConfig, ExportConfig, ModelConfig, ProfileConfig, PruningConfig
from ..config.task import ClassificationTask, TaskConfig
from ..data import Loaders
from ..errors import ExportError
from ..models import CheckpointInfo
from ..training.task import Task


@dataclass(frozen=True)
class Inputs:
    model: nn.Module  # the unpruned model, eval mode, on the run's device
    input_shape: tuple[int, int, int]
    loaders: Loaders
    checkpoint: CheckpointInfo | None
    architecture: dict  # the recipe's model section without its weights: how to build the network again
    task: Task = field(default_factory=Task)  # the loss, the evaluation and which way is better

    @property
    def summary(self) -> str:
        data = self.loaders
        task = "" if self.task.kind == "classification" else f"custom task ({self.task.primary}), "
        return (f"{type(self.model).__name__} {tuple(self.input_shape)}, {task}train {data.num_train} / val "
                f"{data.num_val} / test {data.num_test} / calibration {data.num_calibration} images")


@dataclass(frozen=True)
class Context:
    """What every stage after load works with: the inputs, the run folder, the device and the recipe seed."""

    inputs: Inputs
    layout: RunLayout
    device: torch.device
    seed: int


def load_inputs(model_cfg: ModelConfig, data_cfg: DataConfig | None, pruning: PruningConfig, seed: int,
                device: torch.device, task_cfg: TaskConfig = ClassificationTask()) -> Inputs:
    """``data_cfg`` is None for a custom task (``task_cfg``), whose own loaders are called and checked."""
    from ..models import build_model, load_checkpoint

    model, input_shape = build_model(model_cfg, data_cfg.num_classes if data_cfg is not None else None)
    info = None
    if model_cfg.checkpoint is not None:
        info = load_checkpoint(model, model_cfg.checkpoint, key=model_cfg.checkpoint_key,
                               trust=model_cfg.trust_checkpoint, model_name=model_cfg.arch)
    check_plan(model, tuple(input_shape), pruning)
    loaders, task = task_inputs(task_cfg, data_cfg, tuple(input_shape), seed)
    architecture = model_cfg.model_dump(mode="json", exclude={"checkpoint", "checkpoint_key", "trust_checkpoint"})
    return Inputs(model=model.to(device).eval(), input_shape=tuple(input_shape), loaders=loaders, checkpoint=info,
                  architecture=architecture, task=task)


def task_inputs(task_cfg: TaskConfig, data_cfg: DataConfig | None, input_shape: tuple[int, int, int], seed: int):
    """(the loaders, the run-time task): the data section's, or a custom task's own functions, imported and checked."""
    from ..data import build_loaders
    from ..training.task import CustomTask

    if task_cfg.kind == "classification":
        return build_loaders(data_cfg, input_shape, seed), Task()
    from ..data.custom import custom_loaders, import_callable

    task = CustomTask(import_callable(task_cfg.loss, "task.loss"), import_callable(task_cfg.metric, "task.metric"),
                      task_cfg.primary, task_cfg.direction)
    return custom_loaders(task_cfg.loaders, seed, task_cfg.batch_size, input_shape), task


def check_plan(model: nn.Module, input_shape: tuple[int, int, int], pruning: PruningConfig):
    """Selectors, channel counts and a trial prune, checked before any work is done or any file written;
    returns the planned counts (``surgery.search.Plan``), or None when the method decides them."""
    from ..surgery import preflight
    from ..surgery.graph import select_layers

    select_layers(model, pruning.ignore, "pruning.ignore")
    for i, rule in enumerate(pruning.layers):
        select_layers(model, [rule.match], f"pruning.layers[{i}].match")
    return preflight(model, input_shape, pruning)


def check_dependencies(export: ExportConfig, profile: ProfileConfig) -> None:
    """Fail fast (exit 2) when the recipe needs TensorRT or a GPU backend this machine lacks."""
    if profile.enabled:
        from ..profiling.backends import require_backend

        for backend in profile.backends:
            if backend != "tensorrt":  # the engines' own check follows
                require_backend(backend)
    if export.tensorrt.enabled:
        from ..export.tensorrt import require_tensorrt

        require_tensorrt("export.tensorrt.enabled")
        if not torch.cuda.is_available():
            raise ExportError("export.tensorrt.enabled: TensorRT engines are built and checked on a CUDA GPU, and "
                              "this machine has none; run on a GPU machine (docker/Dockerfile.gpu) or set "
                              "export.tensorrt.enabled: false")
