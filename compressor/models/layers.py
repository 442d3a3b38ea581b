"""Custom layers of the zoo, and the protocol that makes a custom layer prunable by our surgery.

The prunable-layer protocol
---------------------------
torch-pruning only knows how to shrink its own module types; a parameter-free layer that reorders or
pads channels (such as the option-A CIFAR ResNet shortcut) is otherwise treated as an element-wise op,
which silently breaks the pruned model. Any ``nn.Module`` can opt in to our surgery by providing:

- class attribute ``compressor_prunable = True``;
- properties ``in_channels`` and ``out_channels`` (current widths along dim 1);
- ``prune_out_channels(idxs)``: output channels at positions ``idxs`` disappear;
- ``prune_in_channels(idxs)``: input channels ``idxs`` disappear (the layer receives fewer channels).

Input and output channels are independent (pruning one never implies pruning the other). After any
sequence of calls the layer's forward must still be correct for the narrower input and produce the
narrower output. ``idxs`` are positions in the layer's *current* numbering; duplicates are ignored.

:class:`ZeroPadShortcut` is the reference implementation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def _unique_in_range(idxs: Iterable[int], size: int, what: str) -> list[int]:
    """Sorted distinct indices; a programming error (not user input) if one is out of range."""
    out = sorted({int(i) for i in idxs})
    if out and (out[0] < 0 or out[-1] >= size):
        raise IndexError(f"{what} index out of range: {out[0] if out[0] < 0 else out[-1]} (size {size})")
    return out


class ZeroPadShortcut(nn.Module):
    """Parameter-free "option A" shortcut of CIFAR ResNets: subsample spatially, pad channels with zeros.

    Unpruned it equals akamaster/pytorch_resnet_cifar10's
    ``F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, p, p))`` with ``p = (out - in) // 2`` zero channels on
    each side (any odd remainder goes after). The channel map ``src`` (non-persistent buffer, so the layer
    has no state_dict entries) says which input channel feeds each output channel (-1: a zero channel).

    Two forward paths, chosen whenever the map changes (never by data-dependent ops, so ONNX export is
    static): ``"pad"`` when the map is "zeros, input channels 0..in-1 in order, zeros" (a plain Slice + Pad),
    otherwise ``"gather"`` (append one zero channel, then ``index_select`` with the map).
    """

    compressor_prunable = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if in_channels < 1 or out_channels < in_channels or stride < 1:
            raise ValueError(
                f"ZeroPadShortcut needs 1 <= in_channels <= out_channels and stride >= 1, "
                f"got in={in_channels}, out={out_channels}, stride={stride}")
        self.stride = int(stride)
        before = (out_channels - in_channels) // 2
        after = out_channels - in_channels - before
        src = [-1] * before + list(range(in_channels)) + [-1] * after
        self._in_channels = in_channels
        self.register_buffer("src", torch.tensor(src, dtype=torch.long), persistent=False)
        self.register_buffer("gather_index", torch.empty(0, dtype=torch.long), persistent=False)
        self.path = "pad"
        self.pad_before = 0
        self.pad_after = 0
        self._update_path()

    # ------------------------------------------------------------------------------------ protocol
    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def out_channels(self) -> int:
        return int(self.src.numel())

    def prune_out_channels(self, idxs: Iterable[int]) -> None:
        """Remove the output channels at positions ``idxs``."""
        drop = set(_unique_in_range(idxs, self.out_channels, "output channel"))
        keep = [j for j in range(self.out_channels) if j not in drop]
        self.src = self.src[torch.tensor(keep, dtype=torch.long, device=self.src.device)]
        self._update_path()

    def prune_in_channels(self, idxs: Iterable[int]) -> None:
        """Input channels ``idxs`` disappear: outputs they fed become zeros, other sources are renumbered."""
        drop = _unique_in_range(idxs, self._in_channels, "input channel")
        src = self.src.tolist()
        removed = set(drop)
        shift = [0] * self._in_channels  # number of dropped channels before each input channel
        count = 0
        for c in range(self._in_channels):
            shift[c] = count
            count += c in removed
        new = [-1 if s < 0 or s in removed else s - shift[s] for s in src]
        self.src = torch.tensor(new, dtype=torch.long, device=self.src.device)
        self._in_channels -= len(drop)
        self._update_path()

    # ------------------------------------------------------------------------------------- forward
    def _update_path(self) -> None:
        """Pick the forward path for the current map (python attributes only)."""
        src = self.src.tolist()
        n_in = self._in_channels
        used = [j for j, s in enumerate(src) if s >= 0]
        first = used[0] if used else len(src)
        contiguous = len(used) == n_in and src[first:first + n_in] == list(range(n_in))
        if contiguous:
            self.path = "pad"
            self.pad_before = first
            self.pad_after = len(src) - first - n_in
            self.gather_index = torch.empty(0, dtype=torch.long, device=self.src.device)
        else:
            self.path = "gather"
            self.pad_before = self.pad_after = 0
            self.gather_index = torch.where(self.src < 0, torch.full_like(self.src, n_in), self.src)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.path == "pad":
            if self.pad_before == 0 and self.pad_after == 0:
                return x
            return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        padded = F.pad(x, (0, 0, 0, 0, 0, 1))  # one zero channel at index in_channels
        return padded.index_select(1, self.gather_index)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, path={self.path}"
