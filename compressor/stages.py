"""The stages of a run. Each is a plain function that returns a small frozen result and writes only under
its own subfolder of the run folder. ``pipeline.run`` calls them in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ._io import write_json
from .ledger import CHECKPOINTS
from .recipe import Recipe


# ------------------------------------------------------------------------------------------------ load
@dataclass(frozen=True)
class Inputs:
    model: nn.Module  # the unpruned model, eval mode, on the run's device
    input_shape: tuple[int, int, int]
    loaders: object  # compressor.data.Loaders
    checkpoint: object | None  # compressor.models.CheckpointInfo

    @property
    def summary(self) -> str:
        data = self.loaders
        return (f"{type(self.model).__name__} {tuple(self.input_shape)}, train {data.num_train} / val {data.num_val} / "
                f"test {data.num_test} / calibration {data.num_calibration} images")


def load_inputs(recipe: Recipe, device: torch.device) -> Inputs:
    from .data import build_loaders
    from .models import build_model, load_checkpoint

    model, input_shape = build_model(recipe.model, recipe.data.num_classes)
    info = None
    if recipe.model.checkpoint is not None:
        info = load_checkpoint(model, recipe.model.checkpoint, key=recipe.model.checkpoint_key,
                               trust=recipe.model.trust_checkpoint, model_name=recipe.model.arch)
    check_plan(model, tuple(input_shape), recipe)
    loaders = build_loaders(recipe.data, input_shape, recipe.seed)
    return Inputs(model=model.to(device).eval(), input_shape=tuple(input_shape), loaders=loaders, checkpoint=info)


def check_plan(model: nn.Module, input_shape: tuple[int, int, int], recipe: Recipe) -> None:
    """Selectors, channel counts and a trial prune, checked before any work is done or any file written."""
    from .surgery import preflight
    from .surgery.graph import select_layers

    select_layers(model, recipe.pruning.ignore, "pruning.ignore")
    for i, rule in enumerate(recipe.pruning.layers):
        select_layers(model, [rule.match], f"pruning.layers[{i}].match")
    preflight(model, input_shape, recipe.pruning)


# -------------------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    max_abs_diff: float
    macs: int  # counted on the ONNX graph, per image
    params: int
    seconds: float


def export_artifact(model: nn.Module, inputs: Inputs, path: Path, recipe: Recipe) -> OnnxArtifact | None:
    """Export ``model`` (a CPU copy) to ONNX, check parity on real images, count MACs on the graph."""
    if not recipe.export.onnx:
        return None
    import copy
    import time

    from .export import check_parity, export_onnx
    from .profiling.macs import count_onnx

    start = time.perf_counter()
    cpu = copy.deepcopy(model).cpu().eval()
    images = parity_images(inputs, recipe.export.parity_images)
    export_onnx(cpu, images[:2], path, opset=recipe.export.opset)
    diff = check_parity(cpu, path, images)
    cost = count_onnx(path)
    return OnnxArtifact(path=path, max_abs_diff=diff, macs=cost.macs, params=cost.params,
                        seconds=time.perf_counter() - start)


def export_variants(onnx: OnnxArtifact | None, inputs: Inputs, recipe: Recipe) -> dict:
    """``export.precisions`` variants of an exported file (FP16, INT8-QDQ), each evaluated on onnxruntime CPU."""
    if onnx is None or not recipe.export.precisions:
        return {}
    from .export.deploy import precision_variants

    return precision_variants(onnx.path, recipe.export.precisions, recipe.export.int8, _int8_calibration(inputs, recipe),
                              inputs.loaders.test, parity_images(inputs, recipe.export.parity_images).numpy())


def _int8_calibration(inputs: Inputs, recipe: Recipe):
    """A callable yielding the INT8 calibration batches (``export.int8.calibration_images``), afresh each call."""
    loader = inputs.loaders.calibration_loader(recipe.export.int8.calibration_images)
    return lambda: (images for images, _ in loader)


def parity_images(inputs: Inputs, count: int) -> torch.Tensor:
    batches, total = [], 0
    for images, _ in inputs.loaders.calibration:
        batches.append(images)
        total += images.shape[0]
        if total >= count:
            break
    return torch.cat(batches)[:count].cpu()


# ---------------------------------------------------------------------------------------------- baseline
@dataclass(frozen=True)
class Baseline:
    test: object  # EvalResult
    val: object
    macs_torch: int
    params_torch: int
    onnx: OnnxArtifact | None
    variants: dict = field(default_factory=dict)  # precision -> export.deploy.VariantArtifact
    engines: dict = field(default_factory=dict)  # precision -> export.deploy.EngineArtifact

    @property
    def summary(self) -> str:
        return f"top-1 {self.test.accuracy:.2f}% on {self.test.images} test images, {self.macs_torch / 1e6:.2f} M MACs"


def baseline(recipe: Recipe, inputs: Inputs, folder: Path, device: torch.device) -> Baseline:
    from .profiling.macs import count_torch
    from .training import evaluate

    test = evaluate(inputs.model, inputs.loaders.test, device, "baseline: test")
    val = evaluate(inputs.model, inputs.loaders.val, device, "baseline: validation")
    cost = count_torch(inputs.model.cpu(), inputs.input_shape)
    inputs.model.to(device)
    onnx = export_artifact(inputs.model, inputs, folder / "model.onnx", recipe)
    variants = export_variants(onnx, inputs, recipe)
    engines = export_engines(onnx, variants, inputs, recipe)
    result = Baseline(test=test, val=val, macs_torch=cost.macs, params_torch=cost.params, onnx=onnx, variants=variants,
                      engines=engines)
    write_json(folder / "metrics.json", {"test": vars(test), "val": vars(val), "macs_torch": cost.macs,
                                         "params_torch": cost.params, "onnx": _artifact_json(onnx),
                                         "variants": {k: v.to_json() for k, v in variants.items()},
                                         "engines": {k: e.to_json() for k, e in engines.items()}})
    return result


# ----------------------------------------------------------------------------------------------- prune
@dataclass(frozen=True)
class Pruned:
    surgery: object  # compressor.surgery.Surgery
    retrain_free: object  # EvalResult on test, before fine-tuning
    bn_images: int  # images used to re-estimate BatchNorm statistics (0: not done)
    method_details: dict  # what the method reports about itself (e.g. PFP's epsilon)
    masked_vs_pruned: float | None = None  # training-time methods: max |masked - physically pruned| on logits

    @property
    def summary(self) -> str:
        s = self.surgery
        how = "counts allocated by the method" if s.allocation == "method" else f"global ratio {s.global_ratio:.3f}"
        return (f"{len(s.pruned_groups)} groups pruned ({how}), MACs -{s.macs_reduction_pct:.1f}%, "
                f"retrain-free top-1 {self.retrain_free.accuracy:.2f}%")


def prune(recipe: Recipe, inputs: Inputs, model: nn.Module, folder: Path, device: torch.device) -> Pruned:
    from .methods import CalibrationContext, build_method
    from .training import evaluate, recalibrate_batchnorm

    method = build_method(recipe.method, seed=recipe.seed)
    ctx = CalibrationContext(batches=lambda: inputs.loaders.calibration, device=device,
                             num_images=inputs.loaders.num_calibration, seed=recipe.seed)
    masked = train_with_masks(recipe, inputs, model, method, device, folder) if getattr(method, "trains", False) else None
    if recipe.pruning.schedule == "layerwise":
        surgery = _prune_layerwise(recipe, inputs, model, method, ctx, device)
    else:
        from .surgery import prune as surgery_prune

        surgery = surgery_prune(model, inputs.input_shape, method, recipe.pruning, ctx)
    difference = _max_difference(masked, model, inputs) if masked is not None else None
    bn_images = 0
    if recipe.pruning.bn_recalibration is not None:
        loader = inputs.loaders.calibration_loader(recipe.pruning.bn_recalibration.images)
        bn_images = recalibrate_batchnorm(model, loader, device)
    retrain_free = evaluate(model, inputs.loaders.test, device, "pruned (before fine-tuning): test")
    write_json(folder / "widths.json", list(surgery.widths))
    write_json(folder / "groups.json", {"global_ratio": surgery.global_ratio, "allocation": surgery.allocation,
                                        "search": list(surgery.search), "compensation": list(surgery.compensation),
                                        "method": method.details, "pruned": [vars(g) for g in surgery.groups],
                                        "skipped": surgery.skipped})
    return Pruned(surgery=surgery, retrain_free=retrain_free, bn_images=bn_images, method_details=method.details,
                  masked_vs_pruned=difference)


def train_with_masks(recipe: Recipe, inputs: Inputs, model: nn.Module, method, device: torch.device,
                     folder: Path) -> nn.Module:
    """SFP/HFP/GHFP/SWP: train ``method.options.epochs`` epochs with the method's masks (the recipe's fine-tuning
    optimizer, last epoch kept; resumable per epoch from ``method.ckpt.pt``), make every pruned element final;
    returns a copy of that masked network."""
    import copy
    import math

    from .surgery.graph import example_input
    from .surgery.prune import analyse, plan_counts
    from .training import LoopOptions
    from .training import finetune as train

    cfg = recipe.pruning
    layout = analyse(model, example_input(inputs.input_shape, device), cfg)
    plan = plan_counts(layout, cfg)
    multiples = {p.info.key: math.lcm(cfg.round_to, p.info.slices) for p in layout.plans}
    method.begin(model, [info for info, _ in layout.groups], plan.kept, multiples, cfg.min_channels)
    epochs = method.options.epochs
    tune = recipe.finetune.model_copy(update={"epochs": epochs, "warmup_epochs": min(recipe.finetune.warmup_epochs,
                                                                                       epochs - 1)})
    checkpoint = folder.parent / CHECKPOINTS["prune"]
    options = LoopOptions(checkpoint=checkpoint, seed=recipe.seed, name=f"{method.name} training",
                          teacher=inputs.model if recipe.finetune.distill is not None else None)
    train(model, inputs.loaders.train, inputs.loaders.val, tune, device, hooks=method, keep_best=False, options=options)
    method.finish(model)  # the checkpoint goes once the prune stage is recorded (pipeline)
    masked = copy.deepcopy(model)
    if hasattr(method, "masks"):
        method.masks.release()
    return masked


def _max_difference(masked: nn.Module, pruned: nn.Module, inputs: Inputs) -> float:
    """The masked network and the physically pruned one must compute the same logits."""
    images = parity_images(inputs, 64).to(next(pruned.parameters()).device)
    with torch.no_grad():
        return float((masked.eval()(images) - pruned.eval()(images)).abs().max())


def _prune_layerwise(recipe: Recipe, inputs: Inputs, model: nn.Module, method, ctx, device: torch.device):
    """HRank's schedule: scores once, then one group at a time in model order, fine-tuning after each."""
    from .progress import log
    from .surgery import carry_out, decide, summarize
    from .training import LoopOptions
    from .training import finetune as train

    cfg = recipe.pruning
    decision = decide(model, inputs.input_shape, method, cfg, ctx)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    keys = sorted(decision.chosen, key=order.get)
    tune = recipe.finetune.model_copy(update={"epochs": cfg.layerwise_epochs, "warmup_epochs": 0})
    history, done = [], []
    for step, key in enumerate(keys, start=1):
        steps, compensation = carry_out(model, decision, method, cfg, ctx, keys=[key])
        history += steps
        done.append(compensation)
        log(f"  layerwise {step}/{len(keys)}: {key} loses {len(decision.chosen[key])} channels")
        if cfg.layerwise_epochs:
            options = LoopOptions(seed=recipe.seed, name=f"layerwise {step}",
                                  teacher=inputs.model if recipe.finetune.distill is not None else None)
            train(model, inputs.loaders.train, inputs.loaders.val, tune, device, options=options)
    return summarize(model, decision, cfg, history, done)


# -------------------------------------------------------------------------------------------- finetune
@dataclass(frozen=True)
class Tuned:
    result: object  # FinetuneResult
    test: object  # EvalResult of the final model
    val: object
    files: dict  # "state_dict"/"history" -> path of the saved pruned model

    @property
    def summary(self) -> str:
        best = f", best epoch {self.result.best_epoch}" if self.result.best_epoch else " (no fine-tuning)"
        return f"top-1 {self.test.accuracy:.2f}% on test{best}"


def finetune(recipe: Recipe, inputs: Inputs, model: nn.Module, pruned: Pruned | None, folder: Path,
             device: torch.device) -> Tuned | None:
    """Fine-tune (all ranks under torchrun; resumable per epoch from ``finetune.ckpt.pt``), then on rank 0
    evaluate and save the final pruned model (state_dict + history) under ``folder``."""
    from .methods import get_method
    from .training import LoopOptions, distributed, evaluate
    from .training import finetune as train

    checkpoint = folder.parent / CHECKPOINTS["finetune"]
    options = LoopOptions(checkpoint=checkpoint, seed=recipe.seed, name="finetune",
                          teacher=inputs.model if recipe.finetune.distill is not None else None)
    hooks = get_method(recipe.method.name).finetune_hooks(model) if recipe.finetune.epochs else None
    result = train(model, inputs.loaders.train, inputs.loaders.val, recipe.finetune, device, hooks=hooks,
                   options=options)
    if not distributed.is_main():
        return None
    if result.best_epoch is None:  # unchanged since the retrain-free evaluation
        test = pruned.retrain_free
    else:
        test = evaluate(model, inputs.loaders.test, device, "pruned: test")
    val = evaluate(model, inputs.loaders.val, device, "pruned: validation")
    write_json(folder / "finetune.json", {"best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                                          "resumed_after_epoch": result.resumed_from,
                                          "distill": recipe.finetune.distill and recipe.finetune.distill.model_dump(),
                                          "epochs": [vars(e) for e in result.epochs]})
    files = save_model(recipe, inputs, model, pruned.surgery.history, folder)
    return Tuned(result=result, test=test, val=val, files=files)


def save_model(recipe: Recipe, inputs: Inputs, model: nn.Module, history: list, folder: Path) -> dict[str, Path]:
    from .surgery import save_pruned

    config = recipe.model.model_dump(mode="json", exclude={"checkpoint", "checkpoint_key", "trust_checkpoint"})
    return save_pruned(folder, model, history, config, recipe.data.num_classes, inputs.input_shape)


# ---------------------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class StripeArtifact(OnnxArtifact):
    layers: tuple = ()  # hybrid.LayerChoice per KxK conv
    batch: int = 1      # the batch the choice was measured at
    graph_check: dict | None = None  # whole-graph dense vs hybrid timings (hybrid form)

    @property
    def stripe_layers(self) -> int:
        return sum(c.form == "stripe" for c in self.layers)


@dataclass(frozen=True)
class Exported:
    onnx: OnnxArtifact | None
    macs_torch: int
    params_torch: int
    stripe: StripeArtifact | None = None
    variants: dict = field(default_factory=dict)  # precision -> export.deploy.VariantArtifact
    engines: dict = field(default_factory=dict)  # precision -> export.deploy.EngineArtifact

    @property
    def summary(self) -> str:
        if self.onnx is None:
            return "ONNX export disabled"
        text = f"{self.onnx.path.name}: parity {self.onnx.max_abs_diff:.2e}, {self.onnx.macs / 1e6:.2f} M MACs on ONNX"
        if self.stripe is not None:
            text += (f"; {self.stripe.path.name}: {self.stripe.stripe_layers}/{len(self.stripe.layers)} layers as "
                     f"stripes, parity {self.stripe.max_abs_diff:.2e}, {self.stripe.macs / 1e6:.2f} M MACs")
        for v in self.variants.values():
            text += f"; {v.path.name}: top-1 {v.accuracy:.2f}% (onnxruntime)"
        for e in self.engines.values():
            text += f"; {e.path.name}: parity {e.max_abs_diff:.2e}"
        return text


def export(recipe: Recipe, inputs: Inputs, model: nn.Module, folder: Path) -> Exported:
    from .profiling.macs import count_torch

    cost = count_torch(model.cpu(), inputs.input_shape)
    onnx = export_artifact(model, inputs, folder / "model.onnx", recipe)
    stripe = export_stripe_artifact(model, inputs, onnx, folder / "model.stripe.onnx", recipe)
    variants = export_variants(onnx, inputs, recipe)
    engines = export_engines(onnx, variants, inputs, recipe)
    if variants or engines:
        write_json(folder / "deploy.json", {"variants": {k: v.to_json() for k, v in variants.items()},
                                            "engines": {k: e.to_json() for k, e in engines.items()}})
    return Exported(onnx=onnx, macs_torch=cost.macs, params_torch=cost.params, stripe=stripe, variants=variants,
                    engines=engines)


def export_engines(onnx: OnnxArtifact | None, variants: dict, inputs: Inputs, recipe: Recipe) -> dict:
    """TensorRT engines of the pruned model (``export.tensorrt``), parity-checked against onnxruntime."""
    if onnx is None or not recipe.export.tensorrt.enabled:
        return {}
    from .export.deploy import build_engines

    def make(precision: str) -> Path:  # an ONNX variant only the engine needs; its INT8 is symmetric (TensorRT)
        from .export.precision import make_variant, to_int8_qdq

        if precision != "int8":
            return make_variant(onnx.path, precision, onnx.path.parent).path
        cfg = recipe.export.int8
        return to_int8_qdq(onnx.path, onnx.path.with_suffix(".int8.tensorrt.onnx"), _int8_calibration(inputs, recipe)(),
                           per_channel=cfg.per_channel, method=cfg.method, activations="int8")

    usable = {p: v for p, v in variants.items() if p != "int8" or recipe.export.int8.activations == "int8"}
    return build_engines(onnx.path, usable, recipe.export.tensorrt, recipe.profile.batch_sizes, inputs.input_shape,
                         parity_images(inputs, recipe.export.parity_images).numpy(), make)


def export_stripe_artifact(model: nn.Module, inputs: Inputs, dense: OnnxArtifact | None, path: Path,
                           recipe: Recipe) -> StripeArtifact | None:
    """The stripe-decomposed (hybrid) graph of the dense-slim export, with parity and MACs on the graph."""
    import copy
    import time

    from .export import check_parity
    from .export.hybrid import export_stripe
    from .export.stripe import stripe_mask
    from .profiling.macs import count_onnx

    cfg = recipe.export.stripe
    if cfg.enabled is False or dense is None:
        return None
    sparse = any(isinstance(m, nn.Conv2d) and m.groups == 1 and max(m.kernel_size) > 1
                 and not stripe_mask(m.weight).all() for m in model.modules())
    if cfg.enabled == "auto" and not sparse:
        return None
    start = time.perf_counter()
    batch = cfg.batch or max(recipe.profile.batch_sizes)
    result = export_stripe(dense.path, path, batch, recipe.profile.threads, form=cfg.form, min_gain=cfg.min_gain)
    layers = result.choices
    write_json(path.parent / "stripe_layers.json", {"batch": batch, "threads": recipe.profile.threads,
                                                    "form": cfg.form, "whole_graph_check": result.graph_check,
                                                    "layers": [c.to_json() for c in layers]})
    cpu = copy.deepcopy(model).cpu().eval()
    diff = check_parity(cpu, path, parity_images(inputs, recipe.export.parity_images))
    cost = count_onnx(path)
    return StripeArtifact(path=path, max_abs_diff=diff, macs=cost.macs, params=cost.params,
                          seconds=time.perf_counter() - start, layers=tuple(layers), batch=batch,
                          graph_check=result.graph_check)


# --------------------------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class Profiled:
    stats: tuple  # LatencyStats
    ratios: tuple  # dicts from latency_ratios

    @property
    def summary(self) -> str:
        rows = headline_ratios(self.ratios)
        several = len({(r["artifact"], r.get("backend")) for r in rows}) > 1
        parts = [(f"{r['artifact']} vs {r['reference']} on {r.get('backend', 'onnxruntime-cpu')} " if several else "")
                 + f"batch {r['batch']}: {r['speedup']:.2f}x" for r in rows]
        return "speedup " + ", ".join(parts) if parts else "skipped"


def headline_ratios(ratios) -> list[dict]:
    """The ratios a summary shows: each pruned artifact against its own baseline (same precision, same
    backend) and the stripe graph against dense-slim; the cross-precision ones stay in the report."""
    def stem(name: str) -> str:
        return name.removeprefix("pruned_").removeprefix("baseline_")

    return [r for r in ratios if (r["artifact"].startswith("pruned_") and stem(r["artifact"]) == stem(r["reference"]))
            or (r["artifact"] == "stripe_onnx" and r["reference"] == "pruned_onnx")]


def profile(recipe: Recipe, baseline_result: Baseline, exported: Exported, folder: Path,
            models: dict[str, nn.Module], input_shape: tuple[int, int, int], device: torch.device) -> Profiled:
    """Every artifact on every ``profile.backends`` backend, interleaved in one process; ratios of each pruned
    artifact against its baseline counterpart on the same backend; ``latency.json`` and ``latency.png``."""
    cfg = recipe.profile
    if not cfg.enabled or baseline_result.onnx is None or exported.onnx is None:
        return Profiled(stats=(), ratios=())
    from .profiling.latency import measure, write_profile

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)  # torch-cpu rows at the same thread count as onnxruntime's
    try:
        runners = _runners(recipe, baseline_result, exported, models, input_shape, device)
        stats = measure(runners, cfg.batch_sizes, cfg.warmup, cfg.iterations, cfg.repeats)
    finally:
        torch.set_num_threads(threads)
    ratios = _pipeline_ratios(stats)
    write_profile(stats, folder, title=f"{recipe.name}: baseline vs pruned", ratios=ratios)
    return Profiled(stats=tuple(stats), ratios=tuple(ratios))


def _runners(recipe: Recipe, baseline_result: Baseline, exported: Exported, models: dict[str, nn.Module],
             input_shape: tuple[int, int, int], device: torch.device) -> list:
    from .environment import available_cores
    from .export.deploy import EngineArtifact, named_deployables
    from .profiling.backends import ORT_PROVIDERS, TORCH_BACKENDS, Target, TensorRTRunner, TorchRunner, make_runner

    deployables = named_deployables(baseline_result, exported)
    engines = {name: a for name, a in deployables.items() if isinstance(a, EngineArtifact)}
    files = {"baseline_onnx": baseline_result.onnx.path, "pruned_onnx": exported.onnx.path}
    if exported.stripe is not None:
        files["stripe_onnx"] = exported.stripe.path
    files.update({name: a.path for name, a in deployables.items() if name not in engines})
    threads = recipe.profile.threads or available_cores()
    runners = []
    for backend in recipe.profile.backends:
        if backend in ORT_PROVIDERS:
            runners += [make_runner(Target(name, path, backend), threads) for name, path in files.items()]
        elif backend in TORCH_BACKENDS:
            torch_device = torch.device("cpu") if backend == "torch-cpu" else device
            runners += [TorchRunner(f"{name}_torch", model, input_shape, torch_device, backend == "torch-cuda-graph")
                        for name, model in models.items()]
        else:  # tensorrt
            runners += [TensorRTRunner(name, engine.path) for name, engine in engines.items()]
    return runners


def _pipeline_ratios(stats: list) -> list[dict]:
    """Each pruned artifact against its baseline on the same backend (and the stripe graph against dense-slim,
    a quantized file against the FP32 baseline); rows carry ``backend``."""
    from .profiling.latency import latency_ratios

    names = {s.artifact for s in stats}
    pairs = [(name, name.replace("pruned_", "baseline_", 1)) for name in sorted(names) if name.startswith("pruned_")]
    pairs += [("stripe_onnx", "baseline_onnx"), ("stripe_onnx", "pruned_onnx")]
    pairs += [(name, "baseline_onnx") for name in sorted(names) if name.startswith(("pruned_", "baseline_"))
              and name.removeprefix("pruned_").removeprefix("baseline_") in ("fp16", "int8")]
    rows = []
    for backend in dict.fromkeys(s.backend for s in stats):
        for artifact, reference in dict.fromkeys(pairs):
            pair = [s for s in stats if s.backend == backend and s.artifact in (artifact, reference)]
            if {s.artifact for s in pair} == {artifact, reference}:
                rows += [{**row, "backend": backend} for row in latency_ratios(pair, reference)]
    return rows


def _artifact_json(artifact: OnnxArtifact | None) -> dict | None:
    if artifact is None:
        return None
    return {"path": artifact.path.name, "max_abs_diff": artifact.max_abs_diff, "macs": artifact.macs,
            "params": artifact.params, "seconds": round(artifact.seconds, 3)}
