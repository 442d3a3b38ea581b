"""ZeroPadShortcut: equals akamaster's option-A shortcut, stays correct under any pruning, has no state."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from compressor.models.cifar_resnet import resnet56
from compressor.models.layers import ZeroPadShortcut


def akamaster(x: torch.Tensor, planes: int, stride: int) -> torch.Tensor:
    """The LambdaLayer of akamaster/pytorch_resnet_cifar10 (option A), written out independently."""
    return F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)


@pytest.mark.parametrize(("cin", "cout", "stride"), [(16, 32, 2), (32, 64, 2), (16, 32, 1)])
def test_equals_akamaster_formula(cin, cout, stride):
    layer = ZeroPadShortcut(cin, cout, stride)
    x = torch.randn(2, cin, 8, 8)
    expected = akamaster(x, cout, stride)
    assert torch.equal(layer(x), expected)
    assert layer.path == "pad" and (layer.pad_before, layer.pad_after) == (cout // 4, cout // 4)


def test_channel_layout_zeros_on_both_sides():
    layer = ZeroPadShortcut(16, 32, 2)
    assert layer.src.tolist() == [-1] * 8 + list(range(16)) + [-1] * 8
    out = layer(torch.ones(1, 16, 4, 4))
    per_channel = out.abs().sum(dim=(0, 2, 3))
    assert per_channel[:8].eq(0).all() and per_channel[24:].eq(0).all() and per_channel[8:24].gt(0).all()


def test_odd_difference_puts_extra_zero_after():
    layer = ZeroPadShortcut(3, 6, 1)
    assert layer.src.tolist() == [-1, 0, 1, 2, -1, -1]
    x = torch.randn(1, 3, 2, 2)
    assert torch.equal(layer(x), F.pad(x, (0, 0, 0, 0, 1, 2)))


def test_no_state_dict_entries():
    layer = ZeroPadShortcut(16, 32, 2)
    layer.prune_in_channels([3])
    assert dict(layer.state_dict()) == {}
    assert not [k for k in resnet56(shortcut="A").state_dict() if "shortcut" in k]
    assert layer.compressor_prunable is True


def _expected(x_full: torch.Tensor, kept_in: list[int], kept_out: list[int], cout: int, stride: int) -> torch.Tensor:
    """Original shortcut applied to the input with removed channels zeroed, then removed outputs dropped."""
    zeroed = torch.zeros_like(x_full)
    zeroed[:, kept_in] = x_full[:, kept_in]
    return akamaster(zeroed, cout, stride)[:, kept_out]


@pytest.mark.parametrize("seed", range(6))
def test_random_pruning_sequences_stay_correct(seed):
    rng = random.Random(seed)
    cin, cout, stride = 16, 32, 2
    layer = ZeroPadShortcut(cin, cout, stride)
    kept_in, kept_out = list(range(cin)), list(range(cout))
    x_full = torch.randn(2, cin, 6, 6)
    for _ in range(6):
        if rng.random() < 0.5 and len(kept_in) > 1:
            drop = rng.sample(range(len(kept_in)), rng.randint(1, min(3, len(kept_in) - 1)))
            layer.prune_in_channels(drop)
            kept_in = [c for i, c in enumerate(kept_in) if i not in drop]
        elif len(kept_out) > 1:
            drop = rng.sample(range(len(kept_out)), rng.randint(1, min(4, len(kept_out) - 1)))
            layer.prune_out_channels(drop)
            kept_out = [c for i, c in enumerate(kept_out) if i not in drop]
        assert (layer.in_channels, layer.out_channels) == (len(kept_in), len(kept_out))
        out = layer(x_full[:, kept_in])
        assert torch.equal(out, _expected(x_full, kept_in, kept_out, cout, stride)), layer.path


def test_contiguous_map_uses_pad_path():
    layer = ZeroPadShortcut(16, 32, 2)
    layer.prune_out_channels([0, 1, 2])  # three leading zeros go: 5 before, 8 after
    layer.prune_in_channels([15])  # last input goes: its slot becomes part of the trailing zeros
    assert layer.path == "pad"
    assert (layer.pad_before, layer.pad_after, layer.in_channels) == (5, 9, 15)
    x = torch.randn(1, 15, 4, 4)
    assert torch.equal(layer(x), F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 5, 9)))


def test_non_contiguous_map_uses_gather_path_and_back():
    layer = ZeroPadShortcut(16, 32, 2)
    layer.prune_in_channels([4])  # a zero channel appears between inputs 3 and 4 (old 5)
    assert layer.path == "gather"
    x = torch.randn(1, 15, 4, 4)
    out = layer(x)
    assert out[:, 12].abs().sum() == 0 and torch.equal(out[:, 13], x[:, 4, ::2, ::2])
    layer.prune_out_channels([12])  # dropping that zero channel restores the contiguous layout
    assert layer.path == "pad" and layer(x).shape == (1, 31, 2, 2)


def test_dropping_a_fed_output_uses_gather_path():
    layer = ZeroPadShortcut(4, 8, 1)
    layer.prune_out_channels([3])  # output fed by input 1 goes; input 1 is now unused
    assert layer.path == "gather" and layer.src.tolist() == [-1, -1, 0, 2, 3, -1, -1]
    x = torch.randn(1, 4, 3, 3)
    assert torch.equal(layer(x), F.pad(x, (0, 0, 0, 0, 2, 2))[:, [0, 1, 2, 4, 5, 6, 7]])


def test_all_inputs_pruned_gives_zeros():
    layer = ZeroPadShortcut(4, 8, 2)
    layer.prune_in_channels(range(4))
    out = layer(torch.randn(2, 0, 4, 4))
    assert out.shape == (2, 8, 2, 2) and out.abs().sum() == 0


def test_out_of_range_index_is_rejected():
    layer = ZeroPadShortcut(4, 8, 2)
    with pytest.raises(IndexError):
        layer.prune_in_channels([4])
    with pytest.raises(IndexError):
        layer.prune_out_channels([-1])


def test_invalid_construction():
    with pytest.raises(ValueError):
        ZeroPadShortcut(32, 16, 2)
