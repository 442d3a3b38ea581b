"""``compress validate``: the checks a run makes before its first epoch, in seconds, every problem reported
(not only the first), and nothing written outside a temporary folder (no run folder).

In order; a check that needs the model is skipped, with one note saying so, when the model cannot be built
or its checkpoint not loaded, while the data checks always run:

- device and dependencies: ``device: cuda`` without a GPU, TensorRT or GPU backends the recipe asks for
  (``stages.load.check_dependencies``);
- model: ``model.arch`` builds and runs one input (``models.build_model``) and its output layer
  (``surgery.graph.find_heads``) has ``data.num_classes`` outputs;
- checkpoint: the file reads (missing, empty, truncated, pickled without trust), its classifier has
  ``data.num_classes`` outputs, and it loads strictly (``models.load_checkpoint``); a file that fits another
  zoo model says which;
- data: both sources open without reading pixels where the format allows (``data.open_source(peek=True)``):
  npz keys, CIFAR pickles, class folders, labels below ``data.num_classes``, class counts, channels; image
  size and normalisation; the subset / validation / calibration split (``data.split_sizes``);
- plan: selectors, channel counts and a trial prune (``stages.load.check_plan``);
- export (``export.onnx``): the UNPRUNED model exported to ONNX in a temporary folder as the run exports
  (``export.artifacts.export_checked``: dynamo, the TorchScript exporter as the fallback), run on onnxruntime
  against PyTorch on a few random images (a graph neither exporter writes, that fails to run or whose batch is
  not dynamic is a problem; the difference is shown, not judged: the run's parity gate uses real images), and
  its MACs counted on that graph.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import DataConfig, Recipe
from ..errors import CompressorError

PARITY_IMAGES = 4  # enough to run the graph at two batch sizes; the run compares export.parity_images


@dataclass(frozen=True)
class Problem:
    check: str  # dependencies, model, checkpoint, data, plan, export
    message: str  # one line: the field or file, what is wrong, how to fix it

    @property
    def line(self) -> str:
        return f"error: {self.message}"


@dataclass(frozen=True)
class Preflight:
    """What ``preflight`` found: the problems (empty when the recipe can run), the checks it had to skip, and
    the facts for the summary line (None where not known)."""

    problems: tuple[Problem, ...]
    skipped: tuple[str, ...] = ()
    model: str | None = None  # class name
    input_shape: tuple[int, int, int] | None = None
    params: int | None = None
    macs: int | None = None  # per image, counted on the exported ONNX graph
    plan: str | None = None  # groups and predicted reduction, where the trial prune returns them
    sizes: tuple[int, int, int, int] | None = None  # train, val, test, calibration images
    num_classes: int | None = None
    parity: str | None = None  # how the ONNX file compared with PyTorch

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        parts = []
        if self.model is not None:
            shape = "x".join(map(str, self.input_shape or ()))
            parts.append(f"{self.model} {shape}, {_count(self.params)} params"
                         + (f", {_count(self.macs)} MACs (ONNX graph)" if self.macs is not None else ""))
        if self.plan:
            parts.append(self.plan)
        if self.sizes is not None:
            train, val, test, calibration = self.sizes
            classes = f", {self.num_classes} classes" if self.num_classes is not None else " (task.loaders)"
            parts.append(f"data: train {train} / val {val} / test {test} / calibration {calibration} images{classes}")
        if self.parity is not None:
            parts.append(self.parity)
        return "; ".join(parts)


def preflight(recipe: Recipe, say: Callable[[str], None] | None = None) -> Preflight:
    """Run every check on a validated recipe; ``say`` gets a short line before each slower step."""
    from .load import check_dependencies

    checks = _Checks(say or (lambda _line: None))
    checks.attempt("dependencies", _device, recipe.device)
    checks.attempt("dependencies", check_dependencies, recipe.export, recipe.profile)
    checks.say("validate: building the model and reading model.checkpoint")
    model, shape, heads = _model(recipe, checks)
    loaded = model is not None and _checkpoint(model, shape, heads, recipe, checks)
    if recipe.data is not None:
        checks.say("validate: opening the data (labels and file lists, no pixels where possible)")
        _data(recipe.data, shape or _declared_shape(recipe), recipe.seed, checks)
    elif shape is not None:
        checks.say("validate: importing task.loss and task.metric, calling task.loaders")
        _task(recipe, shape, checks)
    if not loaded:
        why = "the model could not be built" if model is None else "model.checkpoint could not be loaded"
        checks.skipped.append(f"the trial prune and the ONNX export were not checked: {why}; fix that and validate again")
        return checks.result()
    checks.say("validate: trial prune of the plan")
    ok, plan = checks.attempt("plan", _check_plan, model, shape, recipe.channel_plan)
    if ok:
        checks.facts["plan"] = _describe_plan(plan)
    if recipe.export.onnx:
        checks.say("validate: ONNX export of the unpruned model (temporary folder)")
        _export(model, shape, recipe, checks)
    return checks.result()


class _Checks:
    """Collects problems instead of stopping at the first one."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.problems: list[Problem] = []
        self.skipped: list[str] = []
        self.facts: dict[str, Any] = {}

    def attempt(self, check: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """``(True, fn(...))``, or ``(False, None)`` with the CompressorError's message kept as a problem."""
        try:
            return True, fn(*args, **kwargs)
        except CompressorError as exc:
            self.add(check, str(exc))
            return False, None

    def add(self, check: str, message: str) -> None:
        self.problems.append(Problem(check, " ".join(message.split())))

    def result(self) -> Preflight:
        return Preflight(problems=tuple(self.problems), skipped=tuple(self.skipped), **self.facts)


# ---------------------------------------------------------------------------------------------- model
def _device(name: str) -> None:
    from ..environment import resolve_device

    resolve_device(name)


def _model(recipe: Recipe, checks: _Checks) -> tuple[nn.Module | None, tuple[int, int, int] | None, list[str]]:
    """The built model, its input shape and its output layers; (None, None, []) when it cannot be built."""
    from ..models import build_model
    from ..surgery.graph import example_input
    from ..surgery.heads import heads_for

    num_classes = recipe.data.num_classes if recipe.data is not None else None  # None: a custom task
    ok, built = checks.attempt("model", build_model, recipe.model, num_classes)
    if not ok:
        return None, None, []
    model, shape = built[0], tuple(int(s) for s in built[1])
    checks.facts.update(model=type(model).__name__, input_shape=shape,
                        params=sum(p.numel() for p in model.parameters()))
    ok, heads = checks.attempt("model", heads_for, model, example_input(shape), recipe.pruning.heads)
    modules = dict(model.named_modules())
    for name in (heads or []) if num_classes is not None else []:
        outputs = _outputs(modules.get(name))
        if outputs is not None and outputs != num_classes:
            checks.add("model", f"data.num_classes: {num_classes}, but the output layer '{name}' of model "
                       f"'{recipe.model.arch}' has {outputs} outputs; set data.num_classes: {outputs} or build the "
                       f"model for {num_classes} classes (model.kwargs)")
    return model, shape, list(heads or [])


def _outputs(module: nn.Module | None) -> int | None:
    for attr in ("out_features", "out_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def _checkpoint(model: nn.Module, shape: tuple[int, int, int], heads: list[str], recipe: Recipe,
                checks: _Checks) -> bool:
    """Read the checkpoint, compare its classifier with data.num_classes, load it strictly; True when loaded."""
    from ..models import load_checkpoint, read_state_dict

    cfg = recipe.model
    num_classes = recipe.data.num_classes if recipe.data is not None else None
    if cfg.checkpoint is None:
        return True
    ok, state = checks.attempt("checkpoint", read_state_dict, cfg.checkpoint, cfg.checkpoint_key,
                               cfg.trust_checkpoint, model)
    if not ok:
        return False
    head, rows = _file_head(state, heads)
    if rows is not None and num_classes is not None and rows != num_classes and _same_except(state, model.state_dict(), head):
        checks.add("checkpoint", f"data.num_classes: {num_classes}, but the classifier '{head}' in model.checkpoint "
                   f"{Path(cfg.checkpoint).name} has {rows} outputs; set data.num_classes: {rows} (or use a "
                   f"checkpoint trained for {num_classes} classes)")
        return False
    ok, _ = checks.attempt("checkpoint", load_checkpoint, model, cfg.checkpoint, key=cfg.checkpoint_key,
                           trust=cfg.trust_checkpoint, model_name=cfg.arch)
    if not ok:
        _hint_zoo_match(state, rows or num_classes, shape, cfg.arch, checks)
    return ok


def _file_head(state: dict[str, torch.Tensor], heads: list[str]) -> tuple[str | None, int | None]:
    for name in heads:
        weight = state.get(f"{name}.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim >= 1:
            return name, int(weight.shape[0])
    return None, None


def _same_except(state: dict[str, torch.Tensor], model_state: dict[str, Any], head: str | None) -> bool:
    """Do the file and the model agree on every key and shape outside the layer ``head``?"""
    def rest(sd: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)
                and not k.startswith(f"{head}.") and not k.endswith("num_batches_tracked")}

    return rest(state) == rest(model_state)


def _hint_zoo_match(state: dict[str, torch.Tensor], num_classes: int, shape: tuple[int, int, int], arch: str,
                    checks: _Checks) -> None:
    """Append "it fits zoo model 'x'" to the checkpoint problem just recorded, where one does."""
    from ..models import zoo_models_matching

    matches = [name for name in zoo_models_matching(state, num_classes, shape) if name != arch]
    if matches:
        last = checks.problems[-1]
        names = " or ".join(f"'{m}'" for m in matches)
        checks.problems[-1] = replace(last, message=f"{last.message}; the file fits zoo model {names} "
                                                    f"(set model.arch: {matches[0]})")


def _declared_shape(recipe: Recipe) -> tuple[int, int, int] | None:
    """The input shape the recipe or the zoo declares, for the data checks when the model cannot be built."""
    from ..errors import ModelError
    from ..models import get_model_spec

    if recipe.model.input_shape is not None:
        return tuple(recipe.model.input_shape)
    try:
        return get_model_spec(recipe.model.arch).input_shape
    except ModelError:
        return None


# ----------------------------------------------------------------------------------------------- data
def _data(cfg: DataConfig, shape: tuple[int, int, int] | None, seed: int, checks: _Checks) -> None:
    """Both sources peeked (labels, headers, file lists), checked against the recipe, and split."""
    from ..data import check_geometry, check_same_classes, open_source, split_sizes

    if shape is not None:
        checks.attempt("data", check_geometry, cfg, shape)
    channels = shape[0] if shape is not None else 3
    sources = {}
    for split in ("train", "test"):
        ok, sources[split] = checks.attempt("data", open_source, getattr(cfg, split), f"data.{split}", split,
                                            channels, cfg.num_classes, peek=True)
    if sources["train"] is None or sources["test"] is None:
        return
    checks.attempt("data", check_same_classes, sources["train"], sources["test"])
    ok, sizes = checks.attempt("data", split_sizes, cfg, sources["train"], sources["test"], seed)
    if ok:
        checks.facts.update(sizes=sizes, num_classes=cfg.num_classes)


def _task(recipe: Recipe, shape: tuple[int, int, int], checks: _Checks) -> None:
    """A custom task's functions imported and its loaders called and checked (their first batches)."""
    from .load import task_inputs

    ok, found = checks.attempt("data", task_inputs, recipe.task, None, shape, recipe.seed)
    if ok:
        loaders = found[0]
        checks.facts["sizes"] = (loaders.num_train, loaders.num_val, loaders.num_test, loaders.num_calibration)


# ------------------------------------------------------------------------------------- plan and export
def _check_plan(model: nn.Module, shape: tuple[int, int, int], pruning) -> Any:
    from .load import check_plan

    return check_plan(model, shape, pruning)


def _describe_plan(plan: Any) -> str | None:
    """Groups and predicted MACs reduction where the trial prune returns its plan (None when it does not)."""
    kept, predicted = getattr(plan, "kept", None), getattr(plan, "predicted_pct", None)
    if not isinstance(kept, dict):
        return None
    text = f"plan: {len(kept)} groups"
    return text + (f", -{predicted:.1f}% MACs predicted" if isinstance(predicted, (int, float)) else "")


def _export(model: nn.Module, shape: tuple[int, int, int], recipe: Recipe, checks: _Checks) -> None:
    """Export the unpruned model in a temporary folder as the run does (dynamo, TorchScript as the fallback),
    run it on onnxruntime against PyTorch, count its MACs on the graph."""
    from ..export.artifacts import Images, export_checked
    from ..profiling.macs import count_onnx

    cfg = recipe.export
    images = Images(parity=_images(recipe.data, shape, recipe.seed), calibration=lambda: iter(()),
                    atol=cfg.parity_tolerance, rtol=cfg.parity_rtol)
    with tempfile.TemporaryDirectory(prefix="compress-validate-") as tmp:
        path = Path(tmp) / "model.onnx"
        ok, found = checks.attempt("export", export_checked, model, path, images, cfg.opset)
        if not ok:
            return
        exporter, parity = found
        limit = parity.limit(cfg.parity_tolerance, cfg.parity_rtol)  # shown, not judged: random images, not the data
        checks.facts["parity"] = (f"ONNX parity {parity.max_abs_diff:.1e} (limit {limit:.1e}, {exporter} exporter, "
                                  "random images)")
        ok, cost = checks.attempt("export", count_onnx, path)
        if ok:
            checks.facts["macs"] = int(cost.macs)


def _images(cfg: DataConfig | None, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """A few random images scaled like normalised data (0..1 pixels through data.normalize; a custom task:
    standard normal)."""
    generator = torch.Generator().manual_seed(seed)
    if cfg is None:
        return torch.randn(PARITY_IMAGES, *shape, generator=generator)
    images = torch.rand(PARITY_IMAGES, *shape, generator=generator)
    mean, std = cfg.normalize.mean, cfg.normalize.std
    if len(mean) == shape[0]:
        images = (images - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return images


def _count(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)
