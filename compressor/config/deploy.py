"""The recipe's deployment sections: ``export`` (ONNX, precision variants, TensorRT engines, the stripe graph)
and ``profile`` (where and how latency is measured). Torch-free."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .fields import PositiveInt, ResolvedPath, StrictModel, unique


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
        0.05, description="A layer goes stripe only when at least this fraction faster than dense, and the hybrid "
        "graph only when at least this fraction faster than dense-slim as a whole (noise margin).")


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

    enabled: bool = Field(False, description="Build TensorRT engines of both models.")
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
        unique(self.precisions, "precisions")
        if self.opt_batch and self.max_batch and self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch ({self.opt_batch}) must not exceed max_batch ({self.max_batch})")
        return self


class ExportConfig(StrictModel):
    onnx: bool = Field(True, description="Export baseline and pruned model to ONNX (needed by profiling, precisions "
                       "and TensorRT).")
    precisions: list[Literal["fp16", "int8"]] = Field(
        default_factory=list, description="Extra ONNX variants of the baseline and the pruned model: fp16, int8 (QDQ). "
        "Each is evaluated (top-1 on onnxruntime CPU) and profiled next to the FP32 files.")
    int8: Int8Config = Field(default_factory=Int8Config)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    stripe: StripeExportConfig = Field(default_factory=StripeExportConfig)
    opset: Annotated[int, Field(ge=18)] = Field(18, description="ONNX opset (torch's exporter needs 18 or later).")
    parity_tolerance: Annotated[float, Field(gt=0)] = Field(
        1e-4, description="Absolute part (atol) of the parity limit: an FP32 ONNX file passes its parity gate when "
        "max |PyTorch - onnxruntime| on the logits <= parity_tolerance + parity_rtol x max |PyTorch logits|.")
    parity_rtol: Annotated[float, Field(ge=0)] = Field(
        1e-3, description="Relative part (rtol) of the parity limit, times the largest |logit| of PyTorch on the parity "
        "images: float32 rounding grows with the logits' scale (pytorchcv sqnxt23_w1: 2.8e-4 of max |logit| on "
        "either exporter); a wrong graph is off by a sizeable fraction of it. 0 = absolute limit only.")
    parity_images: PositiveInt = Field(32, description="Test images the PyTorch / onnxruntime parity is checked on.")

    @model_validator(mode="after")
    def _distinct(self) -> "ExportConfig":
        unique(self.precisions, "precisions")
        return self


Backend = Literal["onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "openvino-cpu", "torch-cpu",
                  "torch-cuda", "torch-cuda-graph", "tensorrt"]


class ProfileConfig(StrictModel):
    enabled: bool = Field(True, description="Profile every exported artifact (needs export.onnx).")
    backends: list[Backend] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["onnxruntime-cpu"], min_length=1,
        description="Where to time: onnxruntime-cpu | onnxruntime-cuda | onnxruntime-tensorrt | openvino-cpu (ONNX "
        "files; the GPU providers need onnxruntime-gpu, openvino-cpu the openvino extra), torch-cpu | torch-cuda | "
        "torch-cuda-graph (the PyTorch models), tensorrt (the engines of export.tensorrt). Checked at the start of a "
        "run.")
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 32], description="Batches every artifact is "
                                           "timed at.")
    threads: PositiveInt | None = Field(
        1, description="Intra-op threads (onnxruntime, OpenVINO, torch-cpu). 1 gives the most repeatable ratios "
        "(measured: 2 threads on a 2-core machine spread round medians by up to 60%); set your deployment's count for "
        "absolute latency; null = all cores.")
    warmup: Annotated[int, Field(ge=0)] = Field(10, description="Untimed runs before timing each artifact and batch.")
    iterations: PositiveInt = Field(50, description="Timed runs per artifact, batch and round.")
    repeats: PositiveInt = Field(5, description="Interleaved rounds (baseline, pruned, baseline, ...).")

    @model_validator(mode="after")
    def _distinct(self) -> "ProfileConfig":
        unique(self.backends, "backends")
        return self


