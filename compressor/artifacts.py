"""Every artifact name and every path of a run folder, defined once.

*Names* label the things a run measures, in ``report.json`` (``artifacts``, ``parity``, ``latency``), latency
tables and gates: ``baseline_onnx`` / ``pruned_onnx`` (the FP32 exports), ``stripe_onnx`` (SWP's stripe
graph), ``<side>_<precision>`` (``pruned_int8``: a precision variant, ``export.precisions``),
``<side>_<precision>_engine`` (a TensorRT engine) and ``<side>_torch`` (the PyTorch module itself).

*Paths* are those of :class:`RunLayout` (the run folder, DESIGN.md §4) and the files written next to an
exported ONNX file (variants, engines, build logs). Torch-free: the recipe checks its latency gates against
these names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BASELINE, PRUNED = "baseline", "pruned"
BASELINE_ONNX, PRUNED_ONNX, STRIPE_ONNX = "baseline_onnx", "pruned_onnx", "stripe_onnx"
PRUNED_TORCH = "pruned_torch"
QUANTIZED = ("fp16", "int8")  # precision variants, compared with the FP32 baseline as well as their own


def variant_name(side: str, precision: str) -> str:
    """``pruned_int8``: the ``precision`` variant of one side's ONNX export."""
    return f"{side}_{precision}"


def engine_name(side: str, precision: str) -> str:
    """``pruned_fp16_engine``: one side's TensorRT engine at ``precision``."""
    return f"{side}_{precision}_engine"


def torch_name(side: str) -> str:
    """``baseline_torch``: one side's PyTorch module, timed on a torch backend."""
    return f"{side}_torch"


def _stem(name: str) -> str:
    return name.removeprefix(f"{PRUNED}_").removeprefix(f"{BASELINE}_")


def times_onnx(backend: str) -> bool:
    """Whether ``backend`` times the ONNX files (onnxruntime-*, openvino-cpu), not the PyTorch modules or engines."""
    return backend.startswith(("onnxruntime", "openvino"))


def gateable(backend: str, precisions: Iterable[str], engine_precisions: Iterable[str]) -> set[str]:
    """The artifacts a latency gate can name on ``backend``, given the variants and engines a recipe makes."""
    if times_onnx(backend):
        return {PRUNED_ONNX, STRIPE_ONNX, *(variant_name(PRUNED, p) for p in precisions)}
    if backend.startswith("torch"):
        return {PRUNED_TORCH}
    return {engine_name(PRUNED, p) for p in engine_precisions}


def comparisons(names: Iterable[str]) -> list[tuple[str, str]]:
    """The (artifact, reference) pairs a run quotes latency ratios for: each pruned artifact against its
    baseline counterpart, the stripe graph against both dense exports, and every FP16 / INT8 file against the
    FP32 baseline."""
    names = sorted(set(names))
    pairs = [(name, f"{BASELINE}_{_stem(name)}") for name in names if name.startswith(f"{PRUNED}_")]
    pairs += [(STRIPE_ONNX, BASELINE_ONNX), (STRIPE_ONNX, PRUNED_ONNX)]
    pairs += [(name, BASELINE_ONNX) for name in names
              if name.startswith((f"{PRUNED}_", f"{BASELINE}_")) and _stem(name) in QUANTIZED]
    return list(dict.fromkeys(pairs))


def is_headline(artifact: str, reference: str) -> bool:
    """The ratios a summary shows: a pruned artifact against its own baseline (same precision), and the stripe
    graph against dense-slim; the cross-precision ones stay in the report."""
    own = artifact.startswith(f"{PRUNED}_") and _stem(artifact) == _stem(reference)
    return own or (artifact == STRIPE_ONNX and reference == PRUNED_ONNX)


# ------------------------------------------------------------------------------- files next to an export
def variant_file(onnx: Path, precision: str) -> Path:
    """``model.int8.onnx`` next to ``model.onnx``."""
    return Path(onnx).with_suffix(f".{precision}.onnx")


def tensorrt_int8_file(onnx: Path) -> Path:
    """The symmetric INT8 QDQ file only a TensorRT engine needs (when the variant is asymmetric)."""
    return Path(onnx).with_suffix(".int8.tensorrt.onnx")


def engine_file(onnx: Path, precision: str) -> Path:
    """``model.fp16.engine`` next to ``model.onnx``."""
    return Path(onnx).with_suffix(f".{precision}.engine")


def build_log_file(onnx: Path, precision: str) -> Path:
    return Path(onnx).with_suffix(f".{precision}.build.log")


def timing_cache_file(onnx: Path) -> Path:
    """The TensorRT timing cache shared by the engines of one folder (unless the recipe names one)."""
    return Path(onnx).parent / "timing.cache"


def latency_files(folder: Path) -> tuple[Path, Path]:
    """``latency.json`` and ``latency.png`` of a profile folder (a run's ``profile/`` or ``compress profile --out``)."""
    return Path(folder) / "latency.json", Path(folder) / "latency.png"


def default_profile_folder(files: Iterable[Path]) -> Path:
    """Where ``compress profile`` writes without ``--out``: ``./profile-<stem>[-<stem>...]`` (git-ignored)."""
    return Path("profile-" + "-".join(dict.fromkeys(Path(p).stem for p in files)))


# ------------------------------------------------------------------------------------------ run folder
RESOLVED_RECIPE = "recipe.resolved.yaml"
STAGES_DIR = ".stages"
DEVICES_DIR = "device"
HISTORY_FILE = "pruning_history.json"
STATE_FILE = "model.pt"
_CHECKPOINTS = {"prune": "method.ckpt.pt", "finetune": "finetune.ckpt.pt"}  # a training stage's epoch state


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run folder (DESIGN.md §4)."""

    root: Path

    # --------------------------------------------------------------------------------------- top level
    @property
    def resolved_recipe(self) -> Path:
        return self.root / RESOLVED_RECIPE

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def markers(self) -> tuple[Path, ...]:
        """The files that say how far a run got: an earlier run's are dropped before a new one starts."""
        return self.report_json, self.report_md, self.status

    # ----------------------------------------------------------------------------------- stage records
    @property
    def stages(self) -> Path:
        return self.root / STAGES_DIR

    def record(self, stage: str) -> Path:
        """A finished stage's record (versioned JSON, for ``--resume``)."""
        return self.stages / f"{stage}.json"

    def state(self, stage: str) -> Path:
        """The weights a finished stage left the network with (a plain state_dict, loaded with weights_only)."""
        return self.stages / f"{stage}.state.pt"

    def checkpoint(self, stage: str) -> Path | None:
        """The epoch checkpoint of a stage that trains (mask training in prune, fine-tuning), else None."""
        name = _CHECKPOINTS.get(stage)
        return self.pruned / name if name else None

    @property
    def checkpoints(self) -> tuple[Path, ...]:
        return tuple(self.pruned / name for name in _CHECKPOINTS.values())

    # ------------------------------------------------------------------------------------- stage folders
    @property
    def baseline(self) -> Path:
        return self.root / BASELINE

    @property
    def baseline_onnx(self) -> Path:
        return self.baseline / "model.onnx"

    @property
    def baseline_metrics(self) -> Path:
        return self.baseline / "metrics.json"

    @property
    def pruned(self) -> Path:
        return self.root / PRUNED

    @property
    def history(self) -> Path:
        return self.pruned / HISTORY_FILE

    @property
    def widths(self) -> Path:
        return self.pruned / "widths.json"

    @property
    def groups(self) -> Path:
        return self.pruned / "groups.json"

    @property
    def finetune_log(self) -> Path:
        return self.pruned / "finetune.json"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def pruned_onnx(self) -> Path:
        return self.export / "model.onnx"

    @property
    def stripe_onnx(self) -> Path:
        return self.export / "model.stripe.onnx"

    @property
    def stripe_layers(self) -> Path:
        return self.export / "stripe_layers.json"

    @property
    def deploy(self) -> Path:
        return self.export / "deploy.json"

    @property
    def profile(self) -> Path:
        return self.root / "profile"

    @property
    def latency_json(self) -> Path:
        return latency_files(self.profile)[0]

    @property
    def latency_png(self) -> Path:
        return latency_files(self.profile)[1]

    @property
    def devices(self) -> Path:
        """``device/``: one folder per target device measured by ``compress deploy``."""
        return self.root / DEVICES_DIR

    def device(self, name: str) -> Path:
        return self.devices / name

    @property
    def latency_macs_png(self) -> Path:
        """Latency against MACs of baseline, pruned and the latency target (drawn with the report)."""
        return self.root / "latency_vs_macs.png"
