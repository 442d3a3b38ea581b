"""The recipe: one YAML file that says what to compress, how, and which gates the result must pass.

:class:`Recipe` and its sections; ``config.load`` reads, expands and validates the file once (unknown keys
are errors, every error names its field). Defaults live here (and in ``deploy.py`` / ``methods.py`` /
``training.py`` for the export, profile, method and finetune sections) and nowhere else. Torch-free:
validating a recipe never imports torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationInfo, model_validator

from .. import artifacts
from ..errors import did_you_mean
from .autodetect import resolve_auto
from .deploy import Backend, ExportConfig, ProfileConfig
from .fields import PositiveInt, Ratio, ResolvedPath, StrictModel
from .methods import MethodConfig, check_swp_budget
from .task import ClassificationTask, TaskConfig, check_task
from .training import FinetuneConfig

SCHEMA_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    @property
    def user_factory(self) -> bool:
        """True when ``arch`` names Python code to import and call (``package.module:factory``), not a zoo model."""
        return ":" in self.arch


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
    images_key: str = Field("data", description="Name of the image array in the .npz.")
    labels_key: str = Field("labels", description="Name of the label array in the .npz.")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Axis order of the image array.")


class SyntheticSource(_Source):
    format: Literal["synthetic"]
    task: Literal["shapes"] = Field("shapes", description="Procedurally generated 10-class shape recognition.")
    num_images: PositiveInt = Field(6000, description="Images generated (seeded).")
    split: Literal["train", "test"] | None = Field(None, description="Default: the split this source is used for.")


class AutoSource(_Source):
    """The kind read off what ``path`` holds (``config/autodetect.py``): a CIFAR-10/100 pickle folder, an ``.npz``
    (image and label arrays and their axis order from the array headers), or an image-folder tree or ``.zip``.
    The resolved recipe names the kind that was found."""

    format: Literal["auto"]
    path: ResolvedPath = Field(description="A CIFAR pickle folder, an image-folder tree or .zip, or an .npz.")


Source = Annotated[Union[CifarSource, ImageFolderSource, NpzSource, SyntheticSource, AutoSource],
                   Field(discriminator="format")]


class Normalize(StrictModel):
    mean: tuple[float, ...] = Field(description="Per-channel mean of the 0..1 pixel values.")
    std: tuple[Annotated[float, Field(gt=0)], ...] = Field(description="Per-channel standard deviation of the 0..1 "
                                                            "pixel values.")

    @model_validator(mode="after")
    def _same_length(self) -> "Normalize":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


class Augment(StrictModel):
    """Training-time augmentation (fine-tuning only; evaluation and calibration are never augmented)."""

    random_crop_padding: Annotated[int, Field(ge=0)] = Field(0, description="CIFAR-style pad-and-random-crop.")
    hflip: bool = Field(False, description="Random horizontal flips while training.")
    random_resized_crop: bool = Field(False, description="ImageNet-style random resized crop to image_size.")


class DataConfig(StrictModel):
    train: Source = Field(description="Training images: fine-tuning, validation split and calibration come from here.")
    test: Source = Field(description="Held-out images: every reported accuracy is top-1 on this split.")
    num_classes: PositiveInt = Field(description="Classes of the classifier head (labels are 0..num_classes-1).")
    normalize: Normalize
    image_size: PositiveInt | None = Field(None, description="Side of the square network input; default: model input H.")
    resize: PositiveInt | None = Field(None, description="Resize the shorter side to this before the center crop.")
    augment: Augment = Augment()
    val_split: Annotated[float, Field(gt=0)] = Field(
        0.1, description="Validation images carved (seeded) from train: a fraction if < 1, else a count.")
    calibration_images: PositiveInt = Field(512, description="Training images used by data-informed methods.")
    batch_size: PositiveInt = Field(128, description="Training batch; under torchrun the global batch, "
                                       "each process takes batch_size / processes.")
    eval_batch_size: PositiveInt = Field(256, description="Batch of evaluation and calibration passes.")
    workers: Annotated[int, Field(ge=0)] = Field(0, description="DataLoader worker processes (0: in the main process, "
                                                 "which keeps --resume bit-exact).")
    in_memory: bool | Literal["auto"] = Field(
        "auto", description="Hold the decoded training images in memory as one uint8 tensor and augment them in "
        "batches (fine-tuning throughput). auto: when every image is stored at the network's input size (no resize, "
        "no random_resized_crop) and they fit in 4 GiB, else images are read one by one (with data.workers); "
        "true: the same, or stop with the reason; false: always one by one.")

    @model_validator(mode="before")
    @classmethod
    def _default_splits(cls, data: Any, info: ValidationInfo) -> Any:
        """``format: auto`` becomes the kind its path holds; a cifar/synthetic source without an explicit split
        reads the split it is used for."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("train", "test"):
                src = data.get(key)
                if isinstance(src, dict) and src.get("format") == "auto":
                    src = data[key] = resolve_auto(src, key, (info.context or {}).get("base_dir"))
                if isinstance(src, dict) and src.get("format") in ("cifar10", "cifar100", "synthetic"):
                    data[key] = {"split": key, **src}
        return data


# --------------------------------------------------------------------------------------------- pruning
class LayerRule(StrictModel):
    match: str = Field(description="Layer name glob (layer3.*.conv1) or regex with a 're:' prefix.")
    ratio: Ratio = Field(description="Fraction of the matched group's channels to remove.")


class BNRecalibration(StrictModel):
    images: PositiveInt = Field(2000, description="Calibration images used to re-estimate BatchNorm statistics.")


class LatencyTarget(StrictModel):
    """Prune until the pruned model runs this much faster on a backend, measured (``surgery/latency_search.py``)."""

    speedup: Annotated[float, Field(gt=1)] | None = Field(
        None, description="Baseline latency / pruned latency to reach, e.g. 2.0 (median of interleaved rounds).")
    ms: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Median latency to reach, in milliseconds per batch, on this machine.")
    backend: Backend | None = Field(  # type: ignore[valid-type]
        None, description="Where the latency is measured; default: the first of profile.backends.")
    batch: PositiveInt | None = Field(None, description="Batch the latency is measured at; default: the largest of "
                                      "profile.batch_sizes.")
    tolerance_pct: Annotated[float, Field(gt=0, lt=50)] = Field(
        5.0, description="The measured speedup must be within this many percent of the target (the search aims at "
        "half of it, leaving room for the profile stage's own measurement); also the latency_target gate's margin.")
    allocation: Literal["knapsack", "uniform"] = Field(
        "knapsack", description="knapsack: channels by importance per millisecond (the method's scores over a "
        "measured latency model, widths snapped to the measured fast ones); uniform: one ratio for every group, "
        "as a MACs target would, searched on measured latency instead of MACs.")
    rounds: Annotated[int, Field(ge=1, le=30)] = Field(
        8, description="Most whole-graph measurements of candidates (each: prune a copy, export, time it "
        "interleaved with the baseline) before the closest one is taken.")
    cache: ResolvedPath | None = Field(
        None, description="Folder of the per-layer latency tables (per backend, machine and shape; reused by later "
        "runs); default: $COMPRESSOR_CACHE/latency, else ~/.cache/compressor/latency.")

    @model_validator(mode="after")
    def _one_amount(self) -> "LatencyTarget":
        if (self.speedup is None) == (self.ms is None):
            raise ValueError("give exactly one of speedup (e.g. 2.0) or ms (milliseconds per batch)")
        return self


class PruningConfig(StrictModel):
    ratio: Ratio | None = Field(None, description="Fraction of channels removed from every prunable group.")
    macs_reduction_pct: Annotated[float, Field(gt=0, lt=100)] | None = Field(
        None, description="Target MACs reduction in percent; the global ratio is searched to within 1 point.")
    params_reduction_pct: Annotated[float, Field(gt=0, lt=100)] | None = Field(
        None, description="Target reduction of conv/linear parameters in percent (PFP's budget), searched like MACs.")
    latency_target: LatencyTarget | None = Field(
        None, description="Target measured speedup or latency on a backend ({speedup: 2.0} or {ms: 1.2}); channels "
        "are allocated on a measured latency model and every candidate is checked by timing the whole graph.")
    layers: list[LayerRule] = Field(default_factory=list, description="Per-layer ratios; the first match wins.")
    layer_ratios: list[Ratio] = Field(
        default_factory=list, description="One removal ratio per conv layer in module order, head excluded (HRank's "
        "compress_rate lists); a group takes the ratio of its first layer; entries of protected layers are unused.")
    ignore: list[str] = Field(default_factory=list, description="Layers (globs or 're:' regexes) never pruned.")
    heads: list[str] | None = Field(None, description="The output layers, kept whole (globs or 're:' regexes); default: "
                                    "every Conv/Linear whose result reaches a model output through parameter-free ops.")
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
        names = ("ratio", "macs_reduction_pct", "params_reduction_pct", "latency_target")
        given = [n for n in names if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of {', '.join(names)}, not {' and '.join(given)}")
        return self

    @property
    def sets_amount(self) -> bool:
        """True when the recipe says how much to prune (else the method must allocate, e.g. a threshold)."""
        targets = (self.ratio, self.macs_reduction_pct, self.params_reduction_pct, self.latency_target)
        return any(t is not None for t in targets) or bool(self.layers) or bool(self.layer_ratios)


# ------------------------------------------------------------------------------------------------ gates
class LatencyGate(StrictModel):
    backend: Backend = Field("onnxruntime-cpu", description="Where the latency is measured "  # type: ignore[valid-type]
                             "(one of profile.backends).")
    artifact: str = Field("pruned_onnx", description="Which artifact is gated: pruned_onnx, pruned_int8, pruned_fp16, "
                          "stripe_onnx, pruned_torch, pruned_fp16_engine, ...")
    batch: PositiveInt = Field(description="Batch the latency is measured at (one of profile.batch_sizes).")
    p50_ms: Annotated[float, Field(gt=0)] = Field(description="Largest allowed median latency of the pruned model.")


DEFAULT_MAX_ACCURACY_DROP = 1.0  # points: a recipe without an accuracy gate gets this one


class GatesConfig(StrictModel):
    max_accuracy_drop: Annotated[float, Field(ge=0)] | None = Field(
        DEFAULT_MAX_ACCURACY_DROP, description="Largest allowed top-1 drop (baseline - pruned) in points on the test "
        f"split. On by default ({DEFAULT_MAX_ACCURACY_DROP:g} points), so that a run whose model collapsed fails "
        "(exit 1); null turns it off (the report then says that accuracy was not gated).")
    min_macs_reduction_pct: Annotated[float, Field(ge=0, le=100)] | None = Field(
        None, description="Smallest allowed MACs reduction in percent, counted on the exported ONNX graphs.")
    max_latency_ms: list[LatencyGate] = Field(default_factory=list)
    max_variant_accuracy_drop: Annotated[float, Field(ge=0)] | None = Field(
        None, description="Largest allowed top-1 drop of each pruned precision variant (export.precisions, on "
        "onnxruntime CPU) below the pruned FP32 model, in points.")



# ----------------------------------------------------------------------------------------------- recipe
class Recipe(StrictModel):
    version: Literal[1] = Field(1, description="Recipe format version.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Used in the default run folder name.")
    seed: int = Field(0, description="Seeds data splits, augmentation, initialisation and sampling: same recipe and "
                      "seed, same metrics.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the PyTorch work runs (auto: CUDA when "
                                                   "present).")
    model: ModelConfig
    task: TaskConfig = ClassificationTask()
    data: DataConfig | None = Field(None, description="The images of task classification (a custom task brings its own "
                                    "loaders).")
    method: MethodConfig
    pruning: PruningConfig
    finetune: FinetuneConfig = FinetuneConfig()
    export: ExportConfig = ExportConfig()
    profile: ProfileConfig = ProfileConfig()
    gates: GatesConfig = GatesConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        if not self.pruning.sets_amount and not self.method.allocates:
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
        self._check_latency_target()
        check_swp_budget(self.method, self.pruning)
        check_task(self)
        for gate in self.gates.max_latency_ms:
            produced = self._gateable(gate.backend)
            if gate.artifact not in produced:
                raise ValueError(f"gates.max_latency_ms: artifact {gate.artifact} is not measured on {gate.backend} by "
                                 f"this recipe" + did_you_mean(gate.artifact, produced))
            self._check_profiled("gates.max_latency_ms", gate.backend, gate.batch)
        return self

    def _check_profiled(self, field: str, backend: str, batch: int) -> None:
        """A latency figure ``field`` asks for is measured by this recipe: its backend and batch are profiled."""
        if backend not in self.profile.backends:
            raise ValueError(f"{field}: backend {backend} is not in profile.backends {self.profile.backends}; add it "
                             "there so that it is measured")
        if not self.export.onnx or not self.profile.enabled:
            raise ValueError(f"{field} needs the ONNX export and profiling (export.onnx and profile.enabled true) to "
                             "measure anything")
        if batch not in self.profile.batch_sizes:
            raise ValueError(f"{field}: batch {batch} is not profiled; add it to profile.batch_sizes "
                             f"{list(self.profile.batch_sizes)}")

    @property
    def validates(self) -> bool:
        """Whether the validation split is evaluated: only when something trains (fine-tuning picks its best
        epoch on it; a training-time method or a layerwise schedule trains too). Retrain-free, nothing reads it."""
        return self.finetune.epochs > 0 or self.method.trains or self.pruning.schedule == "layerwise"

    @property
    def batch_size(self) -> int:
        """The training batch: ``data.batch_size``, or ``task.batch_size`` for a custom task."""
        return self.data.batch_size if self.data is not None else self.task.batch_size

    @property
    def channel_plan(self) -> PruningConfig:
        """``pruning`` as the channel plan checks it before any work: a MACs target that SWP meets with stripes
        (mode reconstruct) is no channel amount."""
        if self.method.name == "swp" and self.pruning.macs_reduction_pct is not None:
            return self.pruning.model_copy(update={"macs_reduction_pct": None})
        return self.pruning

    @property
    def latency_target(self) -> LatencyTarget | None:
        """``pruning.latency_target`` with its defaults filled in from ``profile`` (backend, batch)."""
        target = self.pruning.latency_target
        if target is None:
            return None
        return target.model_copy(update={"backend": target.backend or self.profile.backends[0],
                                         "batch": target.batch or max(self.profile.batch_sizes)})

    def _check_latency_target(self) -> None:
        target = self.latency_target
        if target is None:
            return
        if not self.profile.enabled or not self.export.onnx:  # named first: the default backend is always profiled
            raise ValueError("pruning.latency_target needs profiling and the ONNX export (profile.enabled and "
                             "export.onnx true): the report must show the speedup measured")
        self._check_profiled("pruning.latency_target", target.backend, target.batch)
        if self.method.trains or self.method.allocates:
            raise ValueError(f"pruning.latency_target: method {self.method.name} decides the channels itself (a "
                             "training-time method, or an option such as functionality's threshold); use a one-shot "
                             "criterion (l1, l2, fpgm, hrank, pfp, functionality without threshold) with a latency "
                             "target, or drop the target")
        if target.backend == "tensorrt":
            raise ValueError("pruning.latency_target.backend tensorrt is not supported yet (every candidate would "
                             "need an engine build); use onnxruntime-tensorrt, which builds through TensorRT too")

    def _gateable(self, backend: str) -> set[str]:
        """The artifacts a latency gate can name on ``backend``, given what this recipe exports."""
        engines = self.export.tensorrt.precisions if self.export.tensorrt.enabled else []
        return artifacts.gateable(backend, self.export.precisions, engines)

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


