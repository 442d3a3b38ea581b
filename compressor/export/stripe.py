"""Stripe-decomposed convolutions (SWP) that run faster than the dense convolution they replace.

A stripe is the C-vector ``W[n, :, i, j]`` of one filter at one kernel position (METHODS.md §1). A KxK conv
whose pruned stripes are zero is rewritten as ("flat output-shift" formulation, ours):

1. ``Z = W_s @ X``: ONE MatMul of every surviving stripe (S rows, ordered by kernel position) with the input
   flattened to (B, C, H*W), at input resolution: S*C*H*W MACs instead of N*C*K*K*H*W;
2. zero-pad Z along the flattened spatial axis, and for each kernel position (i, j) slice its rows shifted
   by ``(i - p) * W + (j - p)``: a vertical shift out of the map reads the padding, a horizontal one would
   wrap into the neighbouring row and is zeroed by a constant column mask (only positions with j != p);
3. ``Y = E @ concat(slices)``: a constant 0/1 matrix (N x S) adds each filter's stripes up; bias added;
   reshaped to (B, N, H, W), and sub-sampled for stride > 1 or a smaller output (Slice with steps).

Every op is static (MatMul, Pad, Slice, Concat, Mul, Add, Reshape): no NonZero, no boolean indexing, no
negative Pad, dynamic batch; spatial sizes are fixed at export. Why this one: the reference's form (1x1 conv
at input resolution, scatter of shifted outputs) and the input-shift form (Pad + strided Slice of the input
per position, one thin 1x1 conv each, then a scatter) spend their time in Pad/Slice of C-channel tensors
and in B*K*K tiny GEMMs; onnxruntime's dense conv runs near peak, so they lose 2-6x. Here the
input is never copied, the stripe GEMM is one large MatMul, and only the S-row result is shifted (S is
small when the sparsity is high). Stride 2 computes Z at input resolution (4x the stripe MACs), as the
reference does; the per-layer choice (``hybrid``) keeps such layers dense when that is faster.

``StripeConv2d`` is the same computation in PyTorch (parity, and a reference for other backends);
``rewrite_onnx`` replaces chosen Conv nodes of a dense-slim ONNX graph by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ExportError


@dataclass(frozen=True)
class StripeLayout:
    """Where the surviving stripes of one KxK conv are and how they add up (all static)."""

    weight: np.ndarray            # (S, C): surviving stripes, ordered by kernel position, then filter
    filters: np.ndarray           # (S,): the output filter of each stripe
    positions: tuple[tuple[int, int, int, int], ...]  # (i, j, first row, rows) per used kernel position
    out_channels: int
    in_channels: int
    kernel: int
    stride: int
    padding: int
    height: int                   # input spatial size (fixed at export)
    width: int

    @property
    def stripes(self) -> int:
        return int(self.filters.size)

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's N*K*K stripes that are zero."""
        return 1 - self.stripes / (self.out_channels * self.kernel * self.kernel)

    @property
    def out_size(self) -> tuple[int, int]:
        size = lambda n: (n + 2 * self.padding - self.kernel) // self.stride + 1  # noqa: E731
        return size(self.height), size(self.width)

    def shift(self, i: int, j: int) -> int:
        return (i - self.padding) * self.width + (j - self.padding)

    @property
    def pad(self) -> tuple[int, int]:
        """Zeros before/after the flattened spatial axis so that every shifted slice stays inside."""
        shifts = [self.shift(i, j) for i, j, _, _ in self.positions] or [0]
        return max(0, -min(shifts)), max(0, max(shifts))

    def column_mask(self, j: int) -> np.ndarray:
        """1 where output column x reads input column x + j - p inside the map, 0 where it would wrap."""
        x = np.arange(self.height * self.width) % self.width + j - self.padding
        return ((x >= 0) & (x < self.width)).astype(np.float32)

    def accumulate(self) -> np.ndarray:
        """E (N x S): row n sums the stripes of filter n."""
        e = np.zeros((self.out_channels, self.stripes), np.float32)
        e[self.filters, np.arange(self.stripes)] = 1
        return e


def stripe_mask(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, K, K) bool: which stripes of a (N, C, K, K) weight have any non-zero entry."""
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    return np.abs(w).sum(axis=1) != 0


def layout_for(weight, stride: int, padding: int, height: int, width: int) -> StripeLayout:
    """The stripe layout of a dense (N, C, K, K) weight whose pruned stripes are zero."""
    w = weight.detach().cpu().float().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float32)
    n, c, k, k2 = w.shape
    check_supported(k, k2, stride, padding, height, width)
    mask = stripe_mask(w)
    rows, filters, positions = [], [], []
    for i in range(k):
        for j in range(k):
            kept = np.nonzero(mask[:, i, j])[0]
            if kept.size:
                positions.append((i, j, len(filters), int(kept.size)))
                rows.append(w[kept, :, i, j])
                filters += kept.tolist()
    weight_rows = np.concatenate(rows) if rows else np.zeros((0, c), np.float32)
    return StripeLayout(np.ascontiguousarray(weight_rows, np.float32), np.asarray(filters, np.int64),
                        tuple(positions), n, c, k, stride, padding, height, width)


def check_supported(k: int, k2: int, stride: int, padding: int, height: int, width: int) -> None:
    """The formulation reads outputs on the input grid: every output position must lie on it."""
    if k != k2 or k < 2:
        raise ExportError(f"stripe form needs a square kernel larger than 1x1, got {k}x{k2}")
    out = (min(height, width) + 2 * padding - k) // stride + 1
    if (out - 1) * stride > min(height, width) - 1 or padding >= width:
        raise ExportError(f"stripe form needs outputs on the input grid (kernel {k}, stride {stride}, "
                          f"padding {padding}, input {height}x{width})")


# ------------------------------------------------------------------------------------------- PyTorch
class StripeConv2d(nn.Module):
    """The flat output-shift stripe convolution; equal to the dense conv with its pruned stripes zero."""

    def __init__(self, layout: StripeLayout, bias: torch.Tensor | None = None):
        super().__init__()
        self.layout = layout
        self.register_buffer("weight", torch.from_numpy(layout.weight.copy()))
        self.register_buffer("accumulate", torch.from_numpy(layout.accumulate()))
        masks = [torch.from_numpy(layout.column_mask(j)).expand(rows, -1) for _, j, _, rows in layout.positions]
        self.register_buffer("mask", torch.cat(masks) if masks else torch.zeros(0, layout.height * layout.width))
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, height: int, width: int) -> StripeConv2d:
        if conv.groups != 1 or conv.dilation != (1, 1) or len(set(conv.stride)) != 1 or len(set(conv.padding)) != 1:
            raise ExportError("stripe form supports groups=1, dilation 1, equal strides and paddings")
        layout = layout_for(conv.weight, conv.stride[0], conv.padding[0], height, width)
        return cls(layout, conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        batch = x.shape[0]
        z = torch.matmul(self.weight, x.reshape(batch, lay.in_channels, -1))       # (B, S, H*W)
        before, after = lay.pad
        z = F.pad(z, (before, after))
        hw = lay.height * lay.width
        parts = [z[:, first:first + rows, before + lay.shift(i, j): before + lay.shift(i, j) + hw]
                 for i, j, first, rows in lay.positions]
        shifted = torch.cat(parts, dim=1) * self.mask if parts else z[:, :0, :hw]
        y = torch.matmul(self.accumulate, shifted)                                  # (B, N, H*W)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1)
        y = y.reshape(batch, lay.out_channels, lay.height, lay.width)
        ho, wo = lay.out_size
        return y[:, :, : (ho - 1) * lay.stride + 1: lay.stride, : (wo - 1) * lay.stride + 1: lay.stride]


# ---------------------------------------------------------------------------------------------- ONNX
def stripe_nodes(layout: StripeLayout, x: str, y: str, bias: str | None, prefix: str):
    """ONNX nodes and initializers computing ``y = stripe_conv(x)`` (opset >= 13)."""
    from onnx import helper, numpy_helper

    lay, nodes, inits = layout, [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), f"{prefix}{name}"))
        return f"{prefix}{name}"

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{prefix}{name}"], name=f"{prefix}{name}", **attrs))
        return f"{prefix}{name}"

    hw = lay.height * lay.width
    flat = node("Reshape", [x, const("in_shape", np.array([0, lay.in_channels, hw], np.int64))], "x_flat")
    z = node("MatMul", [const("weight", lay.weight), flat], "z")
    before, after = lay.pad
    z = node("Pad", [z, const("pads", np.array([0, 0, before, 0, 0, after], np.int64))], "z_pad")
    axes, parts, masks = const("axes", np.array([1, 2], np.int64)), [], {}
    for i, j, first, rows in lay.positions:
        start = before + lay.shift(i, j)
        part = node("Slice", [z, const(f"start_{i}_{j}", np.array([first, start], np.int64)),
                              const(f"end_{i}_{j}", np.array([first + rows, start + hw], np.int64)), axes],
                    f"slice_{i}_{j}")
        if j != lay.padding:
            if j not in masks:
                masks[j] = const(f"column_mask_{j}", lay.column_mask(j)[None, :])
            part = node("Mul", [part, masks[j]], f"masked_{i}_{j}")
        parts.append(part)
    shifted = node("Concat", parts, "shifted", axis=1) if len(parts) > 1 else parts[0]
    out = node("MatMul", [const("accumulate", lay.accumulate()), shifted], "sum")
    if bias is not None:
        out = node("Add", [out, node("Unsqueeze", [bias, const("bias_axes", np.array([1], np.int64))], "bias")],
                   "biased")
    full = np.array([0, lay.out_channels, lay.height, lay.width], np.int64)
    ho, wo = lay.out_size
    if (ho, wo) == (lay.height, lay.width):
        nodes.append(helper.make_node("Reshape", [out, const("out_shape", full)], [y], name=f"{prefix}out"))
        return nodes, inits
    out = node("Reshape", [out, const("out_shape", full)], "grid")
    nodes.append(helper.make_node("Slice", [out, const("sub_start", np.array([0, 0], np.int64)),
                                            const("sub_end", np.array([(ho - 1) * lay.stride + 1,
                                                                       (wo - 1) * lay.stride + 1], np.int64)),
                                            const("sub_axes", np.array([2, 3], np.int64)),
                                            const("sub_steps", np.array([lay.stride] * 2, np.int64))],
                                  [y], name=f"{prefix}out"))
    return nodes, inits
