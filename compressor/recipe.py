"""The recipe: one YAML file that says what to compress, how, and which gates the result must pass.

``load_recipe(path, overrides)`` is the only entry point; it validates once (unknown keys are errors,
every error names its field) and returns a frozen :class:`Recipe`. Defaults live here and nowhere else.
Relative paths in the file are relative to the file; relative paths given with ``--set`` are relative
to the current directory. ``${VAR}`` and ``${VAR:-default}`` in string values are taken from the
environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from ._schema import ResolvedPath, StrictModel
from .errors import RecipeError, did_you_mean
from .methods import method_options_types

SCHEMA_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PositiveInt = Annotated[int, Field(gt=0)]
Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]


# ----------------------------------------------------------------------------------------------- model
class ModelConfig(StrictModel):
    """Which network to build and which weights to load into it."""

    arch: str = Field(description="Zoo name (see `compress models`) or 'package.module:factory' for your own model.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the factory.")
    checkpoint: ResolvedPath | None = Field(
        None, description="Weights file (.pt/.pth/.th). 'builtin:NAME' names a file shipped with compressor. "
        "Without one the model keeps its random initialisation (only sensible for smoke tests).")
    checkpoint_key: str | None = Field(
        None, description="Key of the state_dict inside the checkpoint dict; default: tries state_dict, model, net, ...")
    trust_checkpoint: bool = Field(
        False, description="Allow arbitrary pickled objects in the checkpoint (torch.load weights_only=False). "
        "Only for files you trust: unpickling can run code.")
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="C, H, W of one input image; default: the zoo entry's shape (required for your own models).")


# ------------------------------------------------------------------------------------------------ data
class _Source(StrictModel):
    subset: PositiveInt | None = Field(None, description="Use a seeded random subset of this many images.")


class CifarSource(_Source):
    format: Literal["cifar10", "cifar100"]
    path: ResolvedPath = Field(description="Folder holding the python pickles (data_batch_1..5/test_batch or train/test).")
    split: Literal["train", "test"] | None = Field(None, description="Default: the split this source is used for.")


class ImageFolderSource(_Source):
    format: Literal["imagefolder"]
    path: ResolvedPath = Field(description="A folder or .zip with <class>/<image> files (one extra top folder is fine).")


class NpzSource(_Source):
    format: Literal["npz"]
    path: ResolvedPath = Field(description=".npz file with a uint8 image array and an integer label array.")
    images_key: str = "data"
    labels_key: str = "labels"
    layout: Literal["NCHW", "NHWC"] = "NCHW"


class SyntheticSource(_Source):
    format: Literal["synthetic"]
    task: Literal["shapes"] = Field("shapes", description="Procedurally generated 10-class shape recognition.")
    num_images: PositiveInt = 6000
    split: Literal["train", "test"] | None = Field(None, description="Default: the split this source is used for.")


Source = Annotated[Union[CifarSource, ImageFolderSource, NpzSource, SyntheticSource], Field(discriminator="format")]


class Normalize(StrictModel):
    mean: tuple[float, ...] = Field(description="Per-channel mean of the 0..1 pixel values.")
    std: tuple[Annotated[float, Field(gt=0)], ...]

    @model_validator(mode="after")
    def _same_length(self) -> "Normalize":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


class Augment(StrictModel):
    """Training-time augmentation (fine-tuning only; evaluation and calibration are never augmented)."""

    random_crop_padding: Annotated[int, Field(ge=0)] = Field(0, description="CIFAR-style pad-and-random-crop.")
    hflip: bool = False
    random_resized_crop: bool = Field(False, description="ImageNet-style random resized crop to image_size.")


class DataConfig(StrictModel):
    train: Source = Field(description="Training images: fine-tuning, validation split and calibration come from here.")
    test: Source = Field(description="Held-out images: every reported accuracy is top-1 on this split.")
    num_classes: PositiveInt
    normalize: Normalize
    image_size: PositiveInt | None = Field(None, description="Side of the square network input; default: model input H.")
    resize: PositiveInt | None = Field(None, description="Resize the shorter side to this before the center crop.")
    augment: Augment = Augment()
    val_split: Annotated[float, Field(gt=0)] = Field(
        0.1, description="Validation images carved (seeded) from train: a fraction if < 1, else a count.")
    calibration_images: PositiveInt = Field(512, description="Training images used by data-informed methods.")
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt = 256
    workers: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="before")
    @classmethod
    def _default_splits(cls, data: Any) -> Any:
        """A cifar/synthetic source without an explicit split reads the split it is used for."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("train", "test"):
                src = data.get(key)
                if isinstance(src, dict) and src.get("format") in ("cifar10", "cifar100", "synthetic"):
                    data[key] = {"split": key, **src}
        return data


# --------------------------------------------------------------------------------------------- pruning
class LayerRule(StrictModel):
    match: str = Field(description="Layer name glob (layer3.*.conv1) or regex with a 're:' prefix.")
    ratio: Ratio = Field(description="Fraction of the matched group's channels to remove.")


class BNRecalibration(StrictModel):
    images: PositiveInt = Field(2000, description="Calibration images used to re-estimate BatchNorm statistics.")


class PruningConfig(StrictModel):
    ratio: Ratio | None = Field(None, description="Fraction of channels removed from every prunable group.")
    macs_reduction_pct: Annotated[float, Field(gt=0, lt=100)] | None = Field(
        None, description="Target MACs reduction in percent; the global ratio is searched to within 1 point.")
    params_reduction_pct: Annotated[float, Field(gt=0, lt=100)] | None = Field(
        None, description="Target reduction of conv/linear parameters in percent (PFP's budget), searched like MACs.")
    layers: list[LayerRule] = Field(default_factory=list, description="Per-layer ratios; the first match wins.")
    layer_ratios: list[Ratio] = Field(
        default_factory=list, description="One removal ratio per conv layer in module order, head excluded (HRank's "
        "compress_rate lists); a group takes the ratio of its first layer; entries of protected layers are unused.")
    ignore: list[str] = Field(default_factory=list, description="Layers (globs or 're:' regexes) never pruned.")
    residual: Literal["internal", "coupled"] = Field(
        "internal", description="internal: only block-internal channels (as in the papers); coupled: residual-stream "
        "channels too, pruned together across each stage.")
    round_to: PositiveInt = Field(1, description="Kept channel counts are multiples of this (e.g. 8 for tensor cores).")
    min_channels: PositiveInt = Field(1, description="Never keep fewer channels than this in any group.")
    bn_recalibration: BNRecalibration | None = Field(
        None, description="Re-estimate BatchNorm statistics on calibration images right after surgery.")
    compensation: Literal["auto", "none", "fold", "least_squares"] = Field(
        "auto", description="Make the next layers absorb what removed channels carried, without training: fold "
        "(regress removed responses on kept ones, one pass), least_squares (re-fit each next layer to the original "
        "outputs, one pass per layer), none; auto = the method's own choice (fold for functionality, else none).")
    compensation_images: PositiveInt | None = Field(
        None, description="Calibration images used by compensation; default: all calibration images.")
    schedule: Literal["one-shot", "layerwise"] = Field(
        "one-shot", description="one-shot: remove every channel at once; layerwise: one group at a time in model "
        "order, fine-tuning layerwise_epochs after each (HRank's schedule).")
    layerwise_epochs: Annotated[int, Field(ge=0)] = Field(1, description="Fine-tuning epochs after each group (layerwise).")

    @model_validator(mode="after")
    def _one_target(self) -> "PruningConfig":
        given = [n for n in ("ratio", "macs_reduction_pct", "params_reduction_pct") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of ratio, macs_reduction_pct, params_reduction_pct, not {' and '.join(given)}")
        return self

    @property
    def sets_amount(self) -> bool:
        """True when the recipe says how much to prune (else the method must allocate, e.g. a threshold)."""
        targets = (self.ratio, self.macs_reduction_pct, self.params_reduction_pct)
        return any(t is not None for t in targets) or bool(self.layers) or bool(self.layer_ratios)


# ---------------------------------------------------------------------------------------- fine-tuning
class DistillConfig(StrictModel):
    """Knowledge distillation from the unpruned model (Hinton et al. 2015): the loss becomes
    (1 - weight) * cross-entropy + weight * T^2 * KL(teacher_T || student_T), both softened by temperature T."""

    weight: Annotated[float, Field(gt=0, le=1)] = Field(0.5, description="Share of the distillation term (1 = teacher only).")
    temperature: Annotated[float, Field(gt=0)] = Field(4.0, description="Softmax temperature T of teacher and student.")


class FinetuneConfig(StrictModel):
    epochs: Annotated[int, Field(ge=0)] = Field(0, description="0 skips fine-tuning.")
    lr: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75], description="step schedule: fractions of the epochs where lr *= gamma.")
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    max_steps_per_epoch: PositiveInt | None = Field(None, description="Cap the optimizer steps of each epoch.")
    distill: DistillConfig | None = Field(
        None, description="Distil from the unpruned model while fine-tuning (null: plain cross-entropy).")

    @model_validator(mode="after")
    def _warmup(self) -> "FinetuneConfig":
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        return self


# ------------------------------------------------------------------------------------ export/profile
class StripeExportConfig(StrictModel):
    enabled: bool | Literal["auto"] = Field(
        "auto", description="Write export/model.stripe.onnx: auto = when a KxK conv of the pruned model has zero "
        "stripes (SWP); true = always (fails without ONNX export); false = never.")
    form: Literal["hybrid", "stripe"] = Field(
        "hybrid", description="hybrid: each sparse layer as stripe or dense, whichever measured faster; stripe: all.")
    batch: PositiveInt | None = Field(
        None, description="Batch the per-layer choice is measured at (onnxruntime CPU, profile.threads); "
        "default the largest of profile.batch_sizes.")
    min_gain: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.05, description="A layer goes stripe only when at least this fraction faster than dense (noise margin).")


class Int8Config(StrictModel):
    """Static INT8 quantization (QDQ, symmetric, as TensorRT needs) calibrated on the run's calibration images."""

    calibration_images: PositiveInt = Field(256, description="Calibration images (the first of the calibration order).")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="onnxruntime calibration method.")
    per_channel: bool = Field(True, description="One weight scale per output channel.")
    activations: Literal["uint8", "int8"] = Field(
        "uint8", description="uint8: asymmetric activations, onnxruntime CPU's fast U8S8 kernels (ResNet-56 here: 0.40x "
        "of FP32 latency; symmetric int8 ran at 1.3-1.45x); int8: symmetric (zero point 0), the QDQ form TensorRT "
        "accepts. TensorRT engines always get their own symmetric file.")


class TensorRTConfig(StrictModel):
    """TensorRT engines of the pruned model (needs TensorRT 10 or 11 and a CUDA GPU; checked at the start)."""

    enabled: bool = False
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(
        default_factory=lambda: ["fp16"], min_length=1, description="One engine per precision (TensorRT 10: builder "
        "flags; 11: an FP16 / QDQ INT8 ONNX made by compressor).")
    workspace_mb: PositiveInt = Field(1024, description="Builder workspace memory pool limit.")
    max_batch: PositiveInt | None = Field(None, description="Optimization profile max batch (default: largest profiled).")
    opt_batch: PositiveInt | None = Field(None, description="Batch the kernels are tuned for (default: max_batch).")
    timing_cache: ResolvedPath | None = Field(
        None, description="Timing cache file, read if present and updated after each build (reused across runs).")

    @model_validator(mode="after")
    def _batches(self) -> "TensorRTConfig":
        _unique(self.precisions, "precisions")
        if self.opt_batch and self.max_batch and self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch ({self.opt_batch}) must not exceed max_batch ({self.max_batch})")
        return self


class ExportConfig(StrictModel):
    onnx: bool = True
    precisions: list[Literal["fp16", "int8"]] = Field(
        default_factory=list, description="Extra ONNX variants of the baseline and the pruned model: fp16, int8 (QDQ). "
        "Each is evaluated (top-1 on onnxruntime CPU) and profiled next to the FP32 files.")
    int8: Int8Config = Field(default_factory=Int8Config)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    stripe: StripeExportConfig = Field(default_factory=StripeExportConfig)
    opset: Annotated[int, Field(ge=18)] = Field(18, description="ONNX opset (torch's exporter needs 18 or later).")
    parity_tolerance: Annotated[float, Field(gt=0)] = Field(
        1e-4, description="Largest allowed |PyTorch - onnxruntime| on the logits; above it the parity gate fails.")
    parity_images: PositiveInt = 32

    @model_validator(mode="after")
    def _distinct(self) -> "ExportConfig":
        _unique(self.precisions, "precisions")
        return self


Backend = Literal["onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "torch-cpu", "torch-cuda",
                  "torch-cuda-graph", "tensorrt"]


class ProfileConfig(StrictModel):
    enabled: bool = True
    backends: list[Backend] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["onnxruntime-cpu"], min_length=1,
        description="Where to time: onnxruntime-cpu | onnxruntime-cuda | onnxruntime-tensorrt (ONNX files; the GPU "
        "providers need onnxruntime-gpu), torch-cpu | torch-cuda | torch-cuda-graph (the PyTorch models), tensorrt "
        "(the engines of export.tensorrt). Checked at the start of a run.")
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 32])
    threads: PositiveInt | None = Field(
        1, description="Intra-op threads. 1 gives the most repeatable ratios (measured: 2 threads on a 2-core machine "
        "spread round medians by up to 60%); set your deployment's count for absolute latency; null = all cores.")
    warmup: Annotated[int, Field(ge=0)] = 10
    iterations: PositiveInt = Field(50, description="Timed runs per artifact, batch and round.")
    repeats: PositiveInt = Field(5, description="Interleaved rounds (baseline, pruned, baseline, ...).")

    @model_validator(mode="after")
    def _distinct(self) -> "ProfileConfig":
        _unique(self.backends, "backends")
        return self


# ------------------------------------------------------------------------------------------------ gates
class LatencyGate(StrictModel):
    backend: Backend = "onnxruntime-cpu"  # type: ignore[valid-type]
    artifact: str = Field("pruned_onnx", description="Which artifact is gated: pruned_onnx, pruned_int8, pruned_fp16, "
                          "stripe_onnx, pruned_torch, pruned_fp16_engine, ...")
    batch: PositiveInt
    p50_ms: Annotated[float, Field(gt=0)] = Field(description="Largest allowed median latency of the pruned model.")


class GatesConfig(StrictModel):
    max_accuracy_drop: Annotated[float, Field(ge=0)] | None = Field(
        None, description="Largest allowed top-1 drop (baseline - pruned) in points on the test split.")
    min_macs_reduction_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    max_latency_ms: list[LatencyGate] = Field(default_factory=list)
    max_variant_accuracy_drop: Annotated[float, Field(ge=0)] | None = Field(
        None, description="Largest allowed top-1 drop of each pruned precision variant (export.precisions, on "
        "onnxruntime CPU) below the pruned FP32 model, in points.")


# ----------------------------------------------------------------------------------------------- recipe
def _unique(values: list, field: str) -> list:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{field}: {', '.join(map(str, repeated))} listed more than once")
    return values


class Recipe(StrictModel):
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Used in the default run folder name.")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelConfig
    data: DataConfig
    method: Annotated[Union[method_options_types()], Field(discriminator="name")]  # type: ignore[valid-type]
    pruning: PruningConfig
    finetune: FinetuneConfig = FinetuneConfig()
    export: ExportConfig = ExportConfig()
    profile: ProfileConfig = ProfileConfig()
    gates: GatesConfig = GatesConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        if not self.pruning.sets_amount and not getattr(self.method, "allocates", False):
            raise ValueError("pruning: nothing to prune; set ratio, macs_reduction_pct, params_reduction_pct, layers "
                             "or layer_ratios (or a method option that decides, e.g. functionality's threshold)")
        if (self.export.precisions or self.export.tensorrt.enabled) and not self.export.onnx:
            raise ValueError("export.precisions and export.tensorrt need export.onnx: true (they start from the ONNX "
                             "export); set export.onnx: true")
        if self.export.stripe.enabled is True and not self.export.onnx:
            raise ValueError("export.stripe.enabled: true needs export.onnx: true (the stripe graph is a rewrite of "
                             "the dense ONNX export); set export.onnx: true or export.stripe.enabled: auto")
        if "tensorrt" in self.profile.backends and not self.export.tensorrt.enabled:
            raise ValueError("profile.backends: tensorrt times the engines of export.tensorrt; set "
                             "export.tensorrt.enabled: true or drop tensorrt from profile.backends")
        self._check_tensorrt_batches()
        for gate in self.gates.max_latency_ms:
            produced = self._gateable(gate.backend)
            if gate.artifact not in produced:
                raise ValueError(f"gates.max_latency_ms: artifact {gate.artifact} is not measured on {gate.backend} by "
                                 f"this recipe" + did_you_mean(gate.artifact, produced))
            if gate.backend not in self.profile.backends:
                raise ValueError(f"gates.max_latency_ms: backend {gate.backend} is not in profile.backends "
                                 f"{self.profile.backends}; add it there so that it is measured")
            if not self.export.onnx or not self.profile.enabled:
                raise ValueError("gates.max_latency_ms needs the ONNX export and profiling (export.onnx and "
                                 "profile.enabled true) to measure anything")
            if gate.batch not in self.profile.batch_sizes:
                raise ValueError(f"gates.max_latency_ms: batch {gate.batch} is not profiled; "
                                 f"add it to profile.batch_sizes {list(self.profile.batch_sizes)}")
        return self

    def _gateable(self, backend: str) -> set[str]:
        """The artifacts a latency gate can name on ``backend``, given what this recipe exports."""
        if backend.startswith("onnxruntime"):
            return {"pruned_onnx", "stripe_onnx", *(f"pruned_{p}" for p in self.export.precisions)}
        if backend.startswith("torch"):
            return {"pruned_torch"}
        return {f"pruned_{p}_engine" for p in self.export.tensorrt.precisions} if self.export.tensorrt.enabled else set()

    def _check_tensorrt_batches(self) -> None:
        trt, largest = self.export.tensorrt, max(self.profile.batch_sizes)
        if not trt.enabled:
            return
        if trt.max_batch is not None and "tensorrt" in self.profile.backends and trt.max_batch < largest:
            raise ValueError(f"export.tensorrt.max_batch ({trt.max_batch}) is below the largest profiled batch "
                             f"({largest}); raise it or drop that batch from profile.batch_sizes")
        if trt.opt_batch is not None and trt.opt_batch > (trt.max_batch or largest):
            raise ValueError(f"export.tensorrt.opt_batch ({trt.opt_batch}) exceeds the engines' max batch "
                             f"({trt.max_batch or largest}); lower it or set export.tensorrt.max_batch")


# ------------------------------------------------------------------------------------------- loading
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, expand, override and validate a recipe file. Raises :class:`RecipeError` with one line."""
    path = Path(path)
    raw = _read_yaml(path)
    raw = _expand_env(raw, where="")
    recipe = _validate(raw, path, base_dir=path.resolve().parent)
    if not overrides:
        return recipe
    data = recipe.model_dump(mode="json", exclude_unset=True)  # what the file says; defaults come back on validation
    for item in overrides:
        _apply_override(data, item)
    return _validate(_expand_env(data, where=""), path, base_dir=Path.cwd(), via_set=True)


def recipe_json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compressor recipe"
    return schema


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (absolute paths, every default spelled out)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"recipe {path}:{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path}: not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path}: the top level must be a mapping of sections (model, data, ...)")
    return raw


def _expand_env(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise RecipeError(f"recipe field {where} uses ${{{name}}}, which is not set in the environment; "
                              f"export {name}=... or override the field with --set {where}=...")
        return _ENV.sub(sub, value)
    return value


def _validate(raw: dict, path: Path, base_dir: Path, via_set: bool = False) -> Recipe:
    try:
        return Recipe.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors()
        first = format_validation_error(errors[0])
        more = f" (+{len(errors) - 1} more; `compress validate {path}` lists all)" if len(errors) > 1 else ""
        raise RecipeError(f"recipe {path}: {first}{more}", ) from _as_list(errors)


class _ErrorList(Exception):
    """Carries every validation error so that `compress validate` can list them all."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def _as_list(errors: list[dict]) -> _ErrorList:
    return _ErrorList([format_validation_error(e) for e in errors])


def all_error_lines(exc: RecipeError) -> list[str]:
    cause = exc.__cause__
    return cause.lines if isinstance(cause, _ErrorList) else [str(exc)]


_UNION_FIELDS = {("method",), ("data", "train"), ("data", "test")}


def format_validation_error(err: dict) -> str:
    """One pydantic error as 'field.path: message', with the list of valid keys for unknown ones."""
    loc = list(err.get("loc", ()))
    shown = _without_union_tags(loc) if err["type"] != "union_tag_invalid" else loc
    field = ".".join(str(p) for p in shown) or "(top level)"
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"{field}: unknown field" + (did_you_mean(str(loc[-1]), allowed, limit=20) if allowed else "")
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        key = str(ctx.get("discriminator", "kind")).strip("'")
        return f"{field}.{key}: unknown {key} {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        key = str(err.get("ctx", {}).get("discriminator", "kind")).strip("'")
        return f"{field}.{key}: required field is missing (it says which kind of entry this is)"
    if kind == "missing":
        return f"{field}: required field is missing"
    value = err.get("input")
    if kind == "value_error" or isinstance(value, (dict, list)):
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {value!r})"


def _without_union_tags(loc: list) -> list:
    """pydantic puts the tag of a discriminated union into the location; users never wrote it."""
    for i in range(1, len(loc)):
        if tuple(loc[:i]) in _UNION_FIELDS and isinstance(loc[i], str):
            return loc[:i] + loc[i + 1:]
    return loc


def _allowed_keys(loc: list) -> list[str]:
    """Field names valid at a location of the recipe (for 'unknown field' hints)."""
    model: Any = Recipe
    path: list = []
    for part in loc:
        if isinstance(part, int):
            continue
        if tuple(path) in _UNION_FIELDS and part not in getattr(model, "model_fields", {}):
            model = _union_member(model, part)  # ``part`` is the tag pydantic inserted
            continue
        path.append(part)
        field = getattr(model, "model_fields", {}).get(part)
        model = _models_in(field.annotation)[0] if field and _models_in(field.annotation) else None
        if model is not None and len(_models_in(field.annotation)) > 1:
            model = _models_in(field.annotation)  # decided by the next (tag) part
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}).keys()) if not isinstance(model, list) else []


def _models_in(annotation: Any) -> list:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _union_member(members: Any, tag: str) -> Any:
    for member in members if isinstance(members, list) else [members]:
        for key in ("name", "format"):
            field = getattr(member, "model_fields", {}).get(key)
            if field is not None and tag in getattr(field.annotation, "__args__", ()):
                return member
    return None


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key.path=value, e.g. --set finetune.epochs=3")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise RecipeError(f"--set {item!r}: empty part in the key path {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _step(node, part, parts[: i + 1], item, create=True, list_next=parts[i + 1].lstrip("-").isdigit())
    last = parts[-1]
    if isinstance(node, list):
        index = _index(last, node, item)
        node[index] = _merged(node[index], value)
    elif isinstance(node, dict):
        node[last] = _merged(node.get(last), value)
    else:
        raise RecipeError(f"--set {item!r}: {'.'.join(parts[:-1])} is a value, not a section")


def _merged(old: Any, new: Any) -> Any:
    """``--set section={...}`` updates the named fields and keeps the others, unless it switches the kind of
    entry (another ``format`` or ``name``), which replaces the entry: its fields mean something else.
    ``--set section={}`` resets the section to its defaults."""
    if not (isinstance(old, dict) and isinstance(new, dict)) or not new:
        return new
    if any(key in new and key in old and new[key] != old[key] for key in ("format", "name")):
        return new
    return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}


def _step(node: Any, part: str, path: list[str], item: str, create: bool, list_next: bool = False) -> Any:
    if isinstance(node, list):
        return node[_index(part, node, item)]
    if not isinstance(node, dict):
        raise RecipeError(f"--set {item!r}: {'.'.join(path[:-1])} is a value, not a section")
    if node.get(part) is None and create:
        node[part] = [] if list_next else {}
    return node[part]


def _index(part: str, node: list, item: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise RecipeError(f"--set {item!r}: {part!r} is not an index of a list with {len(node)} entries")
    return int(part)
