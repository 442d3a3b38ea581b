"""Fine-tuning throughput of ResNet-56 on this machine, against its measured compute limit.

The limit: a training step costs about 3x the forward FLOPs (forward, gradient of the input, gradient of the
weights), 6 x MACs per image; divided into the rate torch computes at here it gives the images/s the machine
could do at most. Two rates are measured, each in float32 and bfloat16: a large square GEMM (the peak) and
ResNet-56's own 3x3 convolutions (16-64 channels, the rate the network can use at best: "the conv limit").

Then, side by side on the akamaster ResNet-56 and ``cifar10-jpg/train.zip``:

1. steps: the recipe settings added one at a time (per-image loader fp32 -> in-memory batches ->
   channels-last -> bf16 autocast -> torch.compile), ``--steps`` optimizer steps each, in ``--rounds``
   interleaved rounds; the median seconds per step;
2. epochs: one whole fine-tuning epoch (49,500 training images, 500 for validation) with the old defaults
   (per-image loader, fp32, contiguous) and with today's (in-memory, bf16 where native, channels-last),
   through the real ``finetune`` loop, each from the checkpoint; images/s and top-1 on the exact 1,017 test
   images after it.

    .venv/bin/python benchmarks/finetune_throughput.py [--data ../shared/data] [--steps 8] [--rounds 5]
        [--skip-epochs]
    .venv/bin/python benchmarks/finetune_throughput.py --breakdown   # where a bf16 step's time goes (profiler)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _shared import REPO, add_data_argument, print_markdown_table, resnet56_overrides

from compressor.config import load_recipe
from compressor.data import build_loaders
from compressor.models import build_model, load_checkpoint
from compressor.profiling.macs import count_torch
from compressor.training import evaluate, finetune
from compressor.training.throughput import Speed

ROWS = [  # (label, data.in_memory, finetune overrides)
    ("per-image loader, fp32", False, {"precision": "fp32", "channels_last": False}),
    ("+ in-memory batches", True, {"precision": "fp32", "channels_last": False}),
    ("+ channels-last", True, {"precision": "fp32", "channels_last": True}),
    ("+ bf16 autocast", True, {"precision": "bf16", "channels_last": True}),
    ("+ torch.compile", True, {"precision": "bf16", "channels_last": True, "compile": True}),
]


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """GFLOP/s of one (m x k) @ (k x n) product, median of ``repeats`` after two warm-ups."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        a @ b
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def conv_rate(batch: int, channels: int, side: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """GFLOP/s of one forward 3x3 convolution (channels-last, as oneDNN runs it), median after two warm-ups."""
    x = torch.randn(batch, channels, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        F.conv2d(x, w, padding=1)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 2 * batch * side * side * channels * channels * 9 / statistics.median(times) / 1e9


def network_conv_rate(dtype: torch.dtype, batch: int) -> float:
    """ResNet-56's own 3x3 convolutions (stage s: 32/2^s side, 16*2^s channels), equally weighted in FLOPs (each
    stage has the same FLOPs): the harmonic mean of their rates. A convolution is a GEMM to oneDNN; this is the
    rate at the network's shapes (16-64 channels), below the peak of a large square GEMM."""
    rates = [conv_rate(batch, 16 << s, 32 >> s, dtype) for s in range(3)]
    return len(rates) / sum(1 / r for r in rates)


def recipe(data, in_memory: bool, tune: dict):
    overrides = [*resnet56_overrides(data, train_subset=None), "data.val_split=500", f"data.in_memory={in_memory}",
                 "finetune.epochs=1", "finetune.lr=0.01"]
    overrides += [f"finetune.{key}={value}" for key, value in tune.items()]
    return load_recipe(REPO / "recipes" / "resnet56_cifar10_l1.yaml", overrides)


def build(r):
    model, shape = build_model(r.model, r.data.num_classes)
    load_checkpoint(model, r.model.checkpoint)
    return model, build_loaders(r.data, shape, r.seed)


class StepTimer:
    """One row of the steps table: its model, loader iterator, optimizer and speed settings."""

    def __init__(self, r):
        self.model, loaders = build(r)
        self.speed = Speed.resolve(r.finetune, torch.device("cpu"))
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if self.speed.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loader, self.batches = loaders.train, iter(loaders.train)
        self.model.train()

    def steps(self, count: int) -> float:
        """Seconds per step over ``count`` steps, loading included."""
        start = time.perf_counter()
        for _ in range(count):
            images, labels = next(self.batches, None) or next(iter(self.loader))
            with self.speed.autocast_context(torch.device("cpu")):
                loss = F.cross_entropy(self.net(self.speed.layout(images)).float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / count


def steps_table(data, steps: int, rounds: int, flops: float, limits: dict) -> None:
    timers = []
    for label, in_memory, tune in ROWS:
        start = time.perf_counter()
        timer = StepTimer(recipe(data, in_memory, tune))
        timer.steps(3)  # warm-up: decoding (in-memory), allocations, compilation
        timers.append((label, timer))
        print(f"{label}: ready in {time.perf_counter() - start:.0f} s", flush=True)
    times = {label: [] for label, _ in timers}
    for _ in range(rounds):
        for label, timer in timers:
            times[label].append(timer.steps(steps))
    rows, first = [], None
    for label, _ in timers:
        seconds = statistics.median(times[label])
        first = first or seconds
        rate = 128 / seconds
        rows.append([label, f"{seconds * 1000:.0f}", f"{rate:.0f}", f"{first / seconds:.2f}x",
                     f"{rate * flops / limits['fp32'] * 100:.0f}%", f"{rate * flops / limits['bf16'] * 100:.0f}%"])
    print_markdown_table(["settings", "ms/step (b128)", "images/s", "vs first row", "of fp32 conv limit",
                          "of bf16 conv limit"], rows)


def breakdown(data, steps: int = 4) -> None:
    """Share of a bf16 channels-last step per kind of op (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    timer = StepTimer(recipe(data, True, {"precision": "bf16", "channels_last": True}))
    timer.steps(3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timer.steps(steps)
    kinds = {"convolution (forward + backward)": ("mkldnn_convolution", "convolution_backward"),
             "batch norm (forward + backward)": ("native_batch_norm", "native_batch_norm_backward"),
             "ReLU (forward + backward)": ("clamp_min", "threshold_backward", "relu"),
             "residual add, optimizer, casts": ("add", "add_", "copy_", "_to_copy", "mul_")}
    self_us = {e.key.removeprefix("aten::"): e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    rows = [[kind, f"{100 * sum(self_us.get(op, 0) for op in ops) / total:.0f}%"] for kind, ops in kinds.items()]
    print_markdown_table(["bf16 step, b128: self CPU time", "share"], rows)


def one_epoch(data, in_memory: bool, tune: dict) -> tuple[float, float, float]:
    """(train images/s, val top-1, test top-1) of one fine-tuning epoch from the checkpoint."""
    r = recipe(data, in_memory, tune)
    model, loaders = build(r)
    result = finetune(model, loaders.train, loaders.val, r.finetune, torch.device("cpu"))
    test = evaluate(model, loaders.test, torch.device("cpu"), "test")
    return loaders.num_train / result.seconds, result.best_val_accuracy, test.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-epochs", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="only the profiler breakdown of a bf16 step")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.data)
        return
    model, _ = build_model(recipe(args.data, True, {}).model, 10)
    macs = count_torch(model, (3, 32, 32)).macs
    flops = 6 * macs
    limits = {"fp32": network_conv_rate(torch.float32, 128) * 1e9, "bf16": network_conv_rate(torch.bfloat16, 128) * 1e9}
    peaks = {dtype: gemm_rate(2048, 2048, 2048, getattr(torch, name)) * 1e9
             for dtype, name in (("fp32", "float32"), ("bf16", "bfloat16"))}
    print(f"threads {torch.get_num_threads()}; ResNet-56: {macs / 1e6:.1f} M MACs, {flops / 1e9:.3f} GFLOP per "
          "training image (6 x MACs)")
    print_markdown_table(["GEMM", "fp32 GFLOP/s", "bf16 GFLOP/s", "images/s at most (fp32 / bf16)"], [
        ["2048 x 2048 x 2048", f"{peaks['fp32'] / 1e9:.0f}", f"{peaks['bf16'] / 1e9:.0f}",
         f"{peaks['fp32'] / flops:.0f} / {peaks['bf16'] / flops:.0f}"],
        ["ResNet-56's 3x3 convs, forward, b128", f"{limits['fp32'] / 1e9:.0f}", f"{limits['bf16'] / 1e9:.0f}",
         f"{limits['fp32'] / flops:.0f} / {limits['bf16'] / flops:.0f}"]])
    steps_table(args.data, args.steps, args.rounds, flops, limits)
    if args.skip_epochs:
        return
    rows = []
    for label, in_memory, tune in (("before: per-image, fp32, contiguous", False, ROWS[0][2]),
                                   ("after: the defaults", True, {})):
        rate, val, test = one_epoch(args.data, in_memory, tune)
        rows.append([label, f"{rate:.0f}", f"{rate * flops / limits['fp32'] * 100:.0f}%",
                     f"{rate * flops / limits['bf16'] * 100:.0f}%", f"{val:.2f}", f"{test:.2f}"])
        print(rows[-1], flush=True)
    print_markdown_table(["one epoch, 49,500 images", "images/s (validation included)", "of fp32 conv limit",
                          "of bf16 conv limit", "val top-1 (500)", "test top-1 (1,017)"], rows)


if __name__ == "__main__":
    main()
