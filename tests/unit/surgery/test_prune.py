"""Surgery on real zoo architectures and on small custom models.

The strongest check here: removing channels must give exactly the same outputs as keeping them but
zeroing everything that produces them (conv filters, BN scale and shift). That holds for block-internal
channels, for residual streams (coupled policy) and through option-A zero-pad shortcuts, whose pad
amounts/maps must follow the pruned widths.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.config import PruningConfig
from compressor.config.methods import L1Options
from compressor.errors import SurgeryError
from compressor.methods.l1 import L1
from compressor.models.cifar_resnet import quicknet, resnet20
from compressor.models.layers import ZeroPadShortcut
from compressor.models.mobilenet import mobilenet_v2
from compressor.surgery import apply_selection, build_graph, prune
from compressor.surgery.prune import prunable_groups

SHAPE = (3, 32, 32)


def l1() -> L1:
    return L1(L1Options(name="l1"))


def randomize_bn(model: nn.Module) -> nn.Module:
    """Trained-looking BN statistics, so that zeroed channels are a real test (fresh BN is near-identity)."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen) * 0.2
            m.running_mean = torch.randn(m.num_features, generator=gen) * 0.1
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    return model.eval()


def masked_copy(model: nn.Module, chosen: dict[str, list[int]]) -> nn.Module:
    """The original with every producer of the chosen channels zeroed (the function pruning must keep)."""
    import torch_pruning as tp

    masked = copy.deepcopy(model)
    graph = build_graph(masked, torch.randn(1, *SHAPE))
    for key, idxs in chosen.items():
        module = masked.get_submodule(key)
        group = graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels, idxs)
        for dep, dep_idxs in group:
            layer, fn = dep.target.module, dep.handler
            if isinstance(layer, ZeroPadShortcut) and graph.is_out_channel_pruning_fn(fn):
                layer.src[dep_idxs] = -1  # the shortcut no longer writes into removed stream channels
                layer._update_path()
            elif isinstance(layer, nn.BatchNorm2d) or fn in (tp.prune_conv_out_channels,
                                                          tp.prune_depthwise_conv_out_channels):
                with torch.no_grad():
                    layer.weight[dep_idxs] = 0
                    if layer.bias is not None:
                        layer.bias[dep_idxs] = 0
    return masked.eval()


def prune_and_compare(model: nn.Module, cfg: PruningConfig, shape=SHAPE) -> tuple[nn.Module, object]:
    original = copy.deepcopy(model).eval()
    result = prune(model, shape, l1(), cfg)
    # the chosen indices, from the recorded history (root layer, out side, indices)
    chosen = {name: idxs for name, is_out, idxs in result.history if is_out}
    reference = masked_copy(original, chosen)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        got, expected = model.eval()(x), reference(x)
    diff = (got - expected).abs().max().item() / expected.abs().max().item()
    assert diff < 1e-5, f"pruned model differs from the masked original by {diff:.2e} (relative to max |logit|)"
    return model, result


@pytest.mark.parametrize("residual", ["internal", "coupled"])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_pruning_equals_masking(residual, shortcut):
    model = randomize_bn(resnet20(shortcut=shortcut))
    model, result = prune_and_compare(model, PruningConfig(ratio=0.4, residual=residual))
    widths = {w["layer"]: w for w in result.widths}
    assert widths["linear"]["out_after"] == 10  # the head keeps its classes
    if residual == "internal":
        assert all(w["out_after"] == w["out_before"] for n, w in widths.items() if n.endswith("conv2"))
        assert widths["layer1.0.conv1"]["out_after"] < 16
    else:
        assert widths["conv1"]["out_after"] < 16
        stage3 = {w["out_after"] for n, w in widths.items() if n.startswith("layer3") and n.endswith("conv2")}
        assert len(stage3) == 1 and stage3 != {64}  # one residual stream: pruned together


def test_coupled_zero_pad_shortcut_follows_pruned_widths():
    """The torch-pruning 1.6.1 bug of the issue: coupled + option A gave a broken classifier input."""
    model = randomize_bn(resnet20(shortcut="A"))
    prune_and_compare(model, PruningConfig(ratio=0.5, residual="coupled"))
    shortcut = model.layer2[0].shortcut
    assert isinstance(shortcut, ZeroPadShortcut)
    assert shortcut.in_channels == model.layer1[0].conv2.out_channels
    assert shortcut.out_channels == model.layer2[0].conv2.out_channels
    assert model.linear.in_features == model.layer3[0].conv2.out_channels


def test_quicknet_and_mobilenet_pruning_equals_masking():
    prune_and_compare(randomize_bn(quicknet()), PruningConfig(ratio=0.5, residual="coupled"))
    small = randomize_bn(mobilenet_v2(num_classes=10, width_mult=0.35, stem_stride=1))
    model, result = prune_and_compare(small, PruningConfig(ratio=0.3, residual="coupled", round_to=8))
    for group in result.groups:
        assert group.kept % 8 == 0 or group.kept == group.channels
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_round_to_keeps_multiples():
    model = randomize_bn(resnet20())
    result = prune(model, SHAPE, l1(), PruningConfig(ratio=0.3, residual="coupled", round_to=8))
    assert all(g.kept % 8 == 0 for g in result.groups)


class Grouped(nn.Module):
    """A ResNeXt-like chain with a grouped (non-depthwise) conv, which torch-pruning's round_to skips."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_grouped_conv_prunes_same_positions_in_every_slice():
    model = randomize_bn(Grouped())
    model, result = prune_and_compare(model, PruningConfig(ratio=0.5))
    assert model.conv2.groups == 4 and model.conv2.in_channels % 4 == 0 and model.conv2.out_channels % 4 == 0
    assert all(g.kept % 4 == 0 for g in result.groups)


def test_macs_target_within_one_point_and_unreachable_target():
    model = randomize_bn(resnet20())
    result = prune(model, SHAPE, l1(), PruningConfig(macs_reduction_pct=40, residual="internal"))
    assert abs(result.macs_reduction_pct - 40) <= 1.0
    assert result.search and 0 < result.global_ratio < 1
    model = randomize_bn(resnet20())
    with pytest.raises(SurgeryError, match="out of reach"):
        prune(model, SHAPE, l1(), PruningConfig(macs_reduction_pct=99, residual="internal"))


def test_layer_rules_ignore_and_head_protection():
    model = randomize_bn(resnet20())
    cfg = PruningConfig(ratio=0.25, residual="internal",
                        layers=[{"match": "layer3.*.conv1", "ratio": 0.75}], ignore=["layer1.0.conv1"])
    result = prune(model, SHAPE, l1(), cfg)
    assert "layer1.0.conv1" in result.skipped and result.skipped["layer1.0.conv1"] == "pruning.ignore"
    assert model.layer1[0].conv1.out_channels == 16
    assert model.layer3[1].conv1.out_channels == 16  # 64 * (1 - 0.75)
    assert model.layer2[1].conv1.out_channels == 24  # 32 * (1 - 0.25)
    assert result.skipped["linear"] == "output head" and model.linear.out_features == 10


@pytest.mark.parametrize("cfg,match", [
    (PruningConfig(ratio=0.3, ignore=["layer9.*"]), "pruning.ignore\\[0\\]: 'layer9.\\*' matches no"),
    (PruningConfig(ratio=0.3, layers=[{"match": "re:[", "ratio": 0.5}]), "invalid regular expression"),
    (PruningConfig(ratio=0.3, residual="internal", layers=[{"match": "layer1.0.conv2", "ratio": 0.5}]),
     "matches no prunable group"),
])
def test_selector_errors(cfg, match):
    with pytest.raises(SurgeryError, match=match):
        prune(resnet20(), SHAPE, l1(), cfg)


def test_internal_policy_leaves_residual_groups_alone():
    model = resnet20()
    groups, skipped, _ = prunable_groups(model, torch.randn(1, *SHAPE), PruningConfig(ratio=0.5, residual="internal"))
    assert all(not info.residual for info, _ in groups)
    assert sum(v.startswith("residual stream") for v in skipped.values()) == 3  # one stream per stage


class HardCoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 32 * 32, 4)

    def forward(self, x):
        x = self.conv2(F.relu(self.conv(x)))
        return self.fc(x.view(x.shape[0], 8 * 32 * 32))


def test_hard_coded_view_protects_the_group_it_breaks_and_prunes_the_rest():
    model = HardCoded()
    surgery = prune(model, SHAPE, l1(), PruningConfig(ratio=0.5))
    assert set(surgery.protected) == {"conv2"} and "fails in forward" in surgery.protected["conv2"]
    assert model.conv.out_channels == 4 and model.conv2.out_channels == 8
    assert model(torch.randn(2, *SHAPE)).shape == (2, 4)


def test_apply_selection_refuses_to_empty_a_layer():
    model = resnet20()
    with pytest.raises(SurgeryError, match="every channel"):
        apply_selection(model, torch.randn(1, *SHAPE), {"layer1.0.conv1": list(range(16))})


def test_analysis_of_a_model_in_training_mode_leaves_its_batchnorm_statistics_alone():
    """Tracing and head finding run forward passes: in training mode they would move running statistics
    towards the random example input (the masked and the pruned SWP/SFP networks then differed)."""
    model = resnet20().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune(model, (3, 32, 32), L1(L1Options(name="l1")), PruningConfig(ratio=0.25, residual="internal"))
    assert model.training
    after = model.state_dict()
    moved = [k for k in before if "running" in k and after[k].shape == before[k].shape and not torch.equal(after[k], before[k])]
    assert not moved
