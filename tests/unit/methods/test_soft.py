"""SFP / HFP / GHFP: schedules, group-consistent masks, frozen hard filters, regrowth, masked == pruned."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compressor.config import FinetuneConfig, PruningConfig
from compressor.methods.soft import (
    GHFP,
    HFP,
    SFP,
    GHFPOptions,
    HFPOptions,
    SFPOptions,
    decay_factor,
    hard_fraction,
    keep_fraction,
)
from compressor.models.cifar_resnet import resnet20
from compressor.models.layers import ZeroPadShortcut
from compressor.surgery import prune
from compressor.surgery.graph import example_input
from compressor.surgery.plan import Rounding
from compressor.surgery.prune import analyse, plan_counts
from compressor.training import LoopOptions, finetune
from compressor.training.finetune import _block_gradients, _refreeze

SHAPE = (3, 32, 32)


def test_hard_fraction_is_the_cubic_ramp():
    assert [round(hard_fraction(e, 10, 3.0), 6) for e in (-1, 0, 4, 9)] == [0.0, round(1 - 0.9**3, 6),
                                                                              round(1 - 0.5**3, 6), 1.0]
    assert hard_fraction(3, 10, None) == 0.0 and hard_fraction(3, 10, 0.0) == 1.0  # SFP and HFP ends
    assert hard_fraction(4, 10, 1.0) == pytest.approx(0.5)  # a custom exponent


def test_keep_schedules_follow_their_formulas():
    r, total = 0.6, 20
    for e in range(-1, total):
        poly = 1 - (1 - r) * (1 - (1 - (e + 1) / total) ** 3)
        exp = r + (1 - r) * math.exp(-math.log(4) / (total / 8) * e)
        late = e >= 0.95 * total
        assert keep_fraction(e, total, r, "poly") == pytest.approx(r if late else poly)
        assert keep_fraction(e, total, r, "exp") == pytest.approx(r if late else min(1.0, exp))
        assert keep_fraction(e, total, r, "constant") == r
    assert keep_fraction(-1, total, r, "poly") == pytest.approx(1.0)


def test_decay_schedule():
    start, floor, total = 1.0, 1e-5, 20
    alpha = -math.log(floor / (start + 0.01 * floor)) / total
    assert decay_factor(5, total, start, floor) == pytest.approx(math.exp(-alpha * 5))
    assert decay_factor(18, total, start, floor) == 0.0  # last 10%: zero
    assert decay_factor(5, total, 0.0, floor) == 0.0  # SFP: zeroed


def begin(method, model, cfg: PruningConfig):
    layout = analyse(model, example_input(SHAPE), cfg)
    plan = plan_counts(layout, cfg)
    method.begin(model, [info for info, _ in layout.groups], plan.kept, Rounding.of(cfg))
    return layout


def test_coupled_masks_cover_every_member_of_a_residual_stream():
    model = resnet20().eval()
    method = HFP(HFPOptions(name="hfp", epochs=4))
    layout = begin(method, model, PruningConfig(ratio=0.4, residual="coupled"))
    stream = next(info for info, _ in layout.groups if "layer2.0.shortcut" in info.custom_slots)
    hard = sorted(method.masks.hard[stream.key])
    assert len(hard) == math.floor(0.4 * 32)
    for layer in stream.producers:
        module = model.get_submodule(layer)
        if isinstance(module, ZeroPadShortcut):
            assert torch.all(method.masks._hooks[layer][0].keep[hard] == 0)
        else:
            assert torch.all(module.weight[hard] == 0)
    for norm in stream.norm_slots:
        assert torch.all(model.get_submodule(norm).weight[hard] == 0)
        assert torch.all(model.get_submodule(norm).bias[hard] == 0)
    for layer in stream.consumer_slots:
        assert torch.all(model.get_submodule(layer).weight[:, hard] == 0)


def test_hard_elements_stay_exactly_zero_through_momentum_and_weight_decay():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 4))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(5):  # build up momentum while everything is trainable
        optimizer.zero_grad()
        (weight ** 2).sum().backward()
        optimizer.step()
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[:2] = True
    with torch.no_grad():
        weight[mask] = 0
    for _ in range(50):
        optimizer.zero_grad()
        ((weight - 3) ** 2).sum().backward()
        _block_gradients([(weight, mask)])
        optimizer.step()
        _refreeze([(weight, mask)], optimizer)
        assert torch.all(weight[mask] == 0) and torch.all(optimizer.state[weight]["momentum_buffer"][mask] == 0)
    assert torch.all(weight[~mask] != 0)


def data(n: int = 64) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, *SHAPE, generator=gen), torch.randint(0, 10, (n,), generator=gen)),
                      batch_size=16)


def test_hard_filters_stay_zero_while_training_and_soft_filters_grow_back():
    torch.manual_seed(0)
    model = resnet20()
    with torch.no_grad():  # a zeroed filter's channel outputs the BN shift: it gets gradient only if that opens the ReLU
        model.layer1[0].bn1.bias.fill_(0.1)
    ghfp = GHFP(GHFPOptions(name="ghfp", epochs=3))
    layout = begin(ghfp, model, PruningConfig(ratio=0.5, residual="internal"))
    info = next(info for info, _ in layout.groups if info.key == "layer1.0.conv1")
    soft = [c for c in ghfp.masks.pruned[info.key] if c not in ghfp.masks.hard[info.key]]
    assert soft and torch.all(model.layer1[0].conv1.weight[soft] == 0)  # GHFP starts soft: zeroed
    grown = {}
    original = ghfp.end_epoch

    def watch(model_, epoch):
        grown[epoch] = (model_.layer1[0].conv1.weight[soft].norm().item(),
                        {k: sorted(v) for k, v in ghfp.masks.hard.items()})
        original(model_, epoch)
        for key, hard in ghfp.masks.hard.items():
            layer = model_.get_submodule(key)
            assert torch.all(layer.weight[sorted(hard)] == 0)

    ghfp.end_epoch = watch
    finetune(model, data(), data(32), FinetuneConfig(epochs=3, lr=0.05), torch.device("cpu"), hooks=ghfp,
             keep_best=False)
    assert grown[1][0] > 0  # zeroed soft filters trained during the epoch: they can come back
    final_hard = sum(map(len, ghfp.masks.hard.values()))
    assert final_hard == sum(map(len, ghfp.masks.pruned.values()))  # the last epoch makes them all hard


@pytest.mark.parametrize("cls,options,residual", [(SFP, SFPOptions, "coupled"), (HFP, HFPOptions, "internal"),
                                                  (GHFP, GHFPOptions, "coupled")])
def test_masked_network_equals_the_physically_pruned_one(cls, options, residual):
    torch.manual_seed(0)
    model = resnet20()
    method = cls(options(name=cls.name, epochs=2))
    cfg = PruningConfig(ratio=0.4, residual=residual)
    begin(method, model, cfg)
    finetune(model, data(), data(32), FinetuneConfig(epochs=2, lr=0.05), torch.device("cpu"), hooks=method,
             keep_best=False)
    method.finish(model)
    masked = copy.deepcopy(model).eval()
    method.release()
    surgery = prune(model, SHAPE, method, cfg)
    assert surgery.macs_after < surgery.macs_before
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        assert (masked(x) - model.eval()(x)).abs().max().item() < 1e-4


def _train_ghfp(tmp_path, stop_at=None):
    torch.manual_seed(0)
    model = resnet20()
    method = GHFP(GHFPOptions(name="ghfp", epochs=3))
    begin(method, model, PruningConfig(ratio=0.5, residual="coupled"))
    if stop_at is not None:
        original = method.end_epoch

        def end_epoch(model_, epoch):
            original(model_, epoch)
            if epoch == stop_at:
                raise KeyboardInterrupt  # killed after the steps of epoch stop_at, before its checkpoint

        method.end_epoch = end_epoch
    cfg = FinetuneConfig(epochs=3, lr=0.05, momentum=0.9)
    options = LoopOptions(checkpoint=tmp_path / "method.ckpt.pt", seed=1, name="ghfp training")
    result = finetune(model, data(), data(32), cfg, torch.device("cpu"), hooks=method, keep_best=False, options=options)
    method.finish(model)
    return model, method, result.resumed_from


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_mask_training_resumes_from_its_epoch_checkpoint_exactly(tmp_path):
    straight, straight_method, _ = _train_ghfp(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _train_ghfp(tmp_path / "b", stop_at=3)
    resumed, resumed_method, resumed_from = _train_ghfp(tmp_path / "b")  # fresh model and masks, then resume
    assert resumed_from == 2
    assert resumed_method.masks.pruned == straight_method.masks.pruned
    assert resumed_method.history == straight_method.history
    assert resumed_method.masks.hard == straight_method.masks.hard
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
