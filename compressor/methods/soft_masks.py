"""Channel masks on dependency-graph groups, for the soft-to-hard methods (``soft.py``).

A group's channel is *pruned* (soft or hard) or kept. Soft: the producing filters are scaled by the decay
factor at re-selection and then train. Hard: every member of the group is zero for that channel (producing
filters and biases, BatchNorm scale and shift, consuming input slices, custom producers' outputs) and frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .calibration import per_channel


class _OutputMask:
    """Forward hook zeroing hard channels of a parameter-free producer (e.g. a zero-pad shortcut)."""

    def __init__(self, channels: int, device):
        self.keep = torch.ones(channels, device=device)

    def __call__(self, module, inputs, output):
        return output * self.keep.view(1, -1, *([1] * (output.dim() - 2)))


class GroupMasks:
    def __init__(self, model: nn.Module, groups: list, final_kept: dict[str, int], rounding):
        self.groups = {info.key: info for info in groups}
        self.final = {key: final_kept[key] / info.channels for key, info in self.groups.items()}
        self.rounding = rounding  # surgery's rules (methods.base.Rounding): every intermediate count follows them
        self.pruned: dict[str, list[int]] = {}
        self.hard: dict[str, set[int]] = {key: set() for key in self.groups}
        self._frozen: list = []
        self._hooks: dict[str, tuple[_OutputMask, object]] = {}

    # ------------------------------------------------------------------------------------- selection
    @torch.no_grad()
    def reselect(self, model: nn.Module, keep, hard_fraction: float, decay: float, criterion: str) -> dict:
        for key, info in self.groups.items():
            kept = self.rounding.for_ratio(info, 1 - keep(self.final[key]))
            scores = filter_scores(model, info, criterion)
            hard = self.hard[key]
            others = [c for c in torch.argsort(scores, stable=True).tolist() if c not in hard]
            pruned = sorted(hard) + others[: max(0, info.channels - kept - len(hard))]
            target = math.floor(len(pruned) * hard_fraction + 1e-9)
            new_hard = [c for c in pruned if c not in hard][: max(0, target - len(hard))]
            self.pruned[key] = sorted(pruned)
            self._soften(model, info, [c for c in pruned if c not in hard and c not in new_hard], decay)
            self._harden(model, info, new_hard)
        self._frozen = self._frozen_elements(model)
        return {"pruned": sum(map(len, self.pruned.values())), "hard": sum(map(len, self.hard.values()))}

    @torch.no_grad()
    def harden_all(self, model: nn.Module) -> None:
        for key, info in self.groups.items():
            self._harden(model, info, [c for c in self.pruned.get(key, []) if c not in self.hard[key]])
        self._frozen = self._frozen_elements(model)

    @torch.no_grad()
    def hardened_copy(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` in which every pruned channel is hard: what pruning now would give (the masks of
        the training run are left as they are)."""
        import copy

        clone = copy.deepcopy(model)
        masks = GroupMasks.__new__(GroupMasks)
        masks.groups, masks._hooks = self.groups, {}
        masks.hard = {key: set() for key in self.groups}
        for key, info in self.groups.items():
            masks._harden(clone, info, self.pruned.get(key, []))
        return clone

    @torch.no_grad()
    def restore(self, model: nn.Module, pruned: dict[str, list[int]], hard: dict[str, list[int]]) -> None:
        """Take over checkpointed masks: the same pruned lists, the hard channels zeroed and frozen again."""
        self.pruned = {key: list(channels) for key, channels in pruned.items()}
        self.hard = {key: set() for key in self.groups}
        for key, info in self.groups.items():
            self._harden(model, info, list(hard.get(key, [])))
        self._frozen = self._frozen_elements(model)

    def release(self) -> None:
        """Remove the output hooks (before surgery changes the layers' widths)."""
        for _, handle in self._hooks.values():
            handle.remove()
        self._hooks = {}

    def frozen(self) -> list:
        return self._frozen

    # --------------------------------------------------------------------------------------- masking
    def _soften(self, model: nn.Module, info, channels: list[int], decay: float) -> None:
        for layer, slot in info.producer_slots.items():
            module = model.get_submodule(layer)
            idx = layer_positions(slot, channels)
            module.weight[idx] *= decay
            if module.bias is not None:
                module.bias[idx] *= decay

    def _harden(self, model: nn.Module, info, channels: list[int]) -> None:
        if not channels:
            return
        self.hard[info.key].update(channels)
        for layer, slot in {**info.producer_slots, **info.norm_slots}.items():
            module = model.get_submodule(layer)
            idx = layer_positions(slot, channels)
            module.weight[idx] = 0
            if module.bias is not None:
                module.bias[idx] = 0
        for layer, slot in info.consumer_slots.items():
            model.get_submodule(layer).weight[:, layer_positions(slot, channels)] = 0
        for layer, slot in info.custom_slots.items():
            module = model.get_submodule(layer)
            if layer not in self._hooks:
                mask = _OutputMask(module.out_channels, slot.layer_idx.device)
                self._hooks[layer] = (mask, module.register_forward_hook(mask))
            self._hooks[layer][0].keep[layer_positions(slot, channels)] = 0

    def _frozen_elements(self, model: nn.Module) -> list:
        masks: dict[nn.Parameter, torch.Tensor] = {}

        def mark(param, index) -> None:
            if param is not None:
                mask = masks.setdefault(param, torch.zeros_like(param, dtype=torch.bool))
                mask[index] = True

        for key, info in self.groups.items():
            hard = sorted(self.hard[key])
            if not hard:
                continue
            for layer, slot in {**info.producer_slots, **info.norm_slots}.items():
                module = model.get_submodule(layer)
                mark(module.weight, layer_positions(slot, hard))
                mark(module.bias, layer_positions(slot, hard))
            for layer, slot in info.consumer_slots.items():
                mark(model.get_submodule(layer).weight, (slice(None), layer_positions(slot, hard)))
        return list(masks.items())


def layer_positions(slot, channels: list[int]) -> torch.Tensor:
    """The layer's own indices carrying the given group channels."""
    wanted = torch.tensor(sorted(channels), dtype=torch.long)
    return slot.layer_idx[torch.isin(slot.root_idx, wanted)]


def filter_scores(model: nn.Module, info, criterion: str) -> torch.Tensor:
    """Per group channel: the L2 norm of its producing filters, or their FPGM distance sum (mean over producers)."""
    values = {}
    for layer in info.producer_slots:
        weight = model.get_submodule(layer).weight.detach().flatten(1).float()
        if criterion == "fpgm":
            values[layer] = torch.cdist(weight.unsqueeze(0), weight.unsqueeze(0)).squeeze(0).sum(0)
        else:
            values[layer] = weight.norm(dim=1)
    return per_channel(values, info.producer_slots, info.channels).float()
