"""Epoch checkpoints: exact resume, NaN stop keeping the last good epoch, distillation loss, seeds (the stage
records: tests/unit/test_ledger.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from compressor.config import DistillConfig, FinetuneConfig
from compressor.training import LoopOptions, TrainingDiverged, TrainingHooks, finetune
from compressor.training.checkpoint import derive_seed, load_checkpoint
from compressor.training.finetune import training_loss

CPU = torch.device("cpu")


class Augmented(Dataset):
    """Random tensors with a seeded, per-read random flip: the augmentation stream must resume exactly."""

    def __init__(self, n: int = 48, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)
        self.generator = torch.Generator().manual_seed(1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        flip = torch.rand((), generator=self.generator) < 0.5
        return (self.x[i].flip(-1) if flip else self.x[i]), self.y[i]

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def loaders():
    train = DataLoader(Augmented(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5))
    return train, DataLoader(Augmented(24, seed=1), batch_size=16)


CFG = FinetuneConfig(epochs=3, lr=0.1, momentum=0.9, schedule="cosine")


class StopAt(TrainingHooks):
    """Hooks that crash at the end of one epoch, as a kill would (after that epoch's steps, before its checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def end_epoch(self, model, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_resumed_training_ends_exactly_where_the_uninterrupted_one_does(tmp_path):
    straight = model()
    train, val = loaders()
    full = finetune(straight, train, val, CFG, CPU, options=LoopOptions(checkpoint=tmp_path / "a.pt", seed=3))

    interrupted = model()
    train, val = loaders()
    with pytest.raises(KeyboardInterrupt):
        finetune(interrupted, train, val, CFG, CPU, hooks=StopAt(3), options=LoopOptions(checkpoint=tmp_path / "b.pt", seed=3))
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 2
    resumed_model = model()  # a fresh process: new model, new loaders
    train, val = loaders()
    resumed = finetune(resumed_model, train, val, CFG, CPU, options=LoopOptions(checkpoint=tmp_path / "b.pt", seed=3))
    assert resumed.resumed_from == 2 and full.resumed_from == 0
    assert [vars(e) | {"seconds": 0} for e in resumed.epochs] == [vars(e) | {"seconds": 0} for e in full.epochs]
    assert resumed.best_epoch == full.best_epoch
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_a_different_seed_trains_differently(tmp_path):
    a, b = model(), model()
    finetune(a, *loaders(), CFG, CPU, options=LoopOptions(seed=3))
    finetune(b, *loaders(), CFG, CPU, options=LoopOptions(seed=4))
    assert not torch.equal(a[0].weight, b[0].weight)


def test_checkpoint_loads_with_weights_only_and_names_a_bad_file(tmp_path):
    finetune(model(), *loaders(), CFG.model_copy(update={"epochs": 1}), CPU,
             options=LoopOptions(checkpoint=tmp_path / "c.pt"))
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng", "logs", "best", "method"} <= set(state)
    (tmp_path / "bad.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:100])
    with pytest.raises(Exception, match="bad.pt: cannot read this training checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    net = model()
    calls = {"n": 0}

    def poison(module, inputs, output):  # the 5th training forward (epoch 2, step 2) returns NaN
        if module.training:
            calls["n"] += 1
            if calls["n"] == 5:
                return output * float("nan")
        return output

    net.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2; the last good checkpoint \(epoch 1\)"):
        finetune(net, *loaders(), CFG, CPU, options=LoopOptions(checkpoint=tmp_path / "n.pt"))
    kept = load_checkpoint(tmp_path / "n.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_distillation_blends_cross_entropy_and_softened_kl():
    torch.manual_seed(0)
    student, teacher_logits = torch.randn(6, 5), torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,))
    teacher = lambda images: teacher_logits  # noqa: E731
    plain = FinetuneConfig(epochs=1)
    distil = FinetuneConfig(epochs=1, distill=DistillConfig(weight=0.25, temperature=2.0))
    ce = F.cross_entropy(student, labels)
    p_t = F.softmax(teacher_logits / 2, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / 2, 1))).sum(1).mean() * 4
    assert torch.allclose(training_loss(student, None, labels, plain, None), ce)
    assert torch.allclose(training_loss(student, None, labels, distil, teacher), 0.75 * ce + 0.25 * kl, atol=1e-6)
    same = FinetuneConfig(epochs=1, distill=DistillConfig(weight=1.0))
    assert training_loss(student, None, labels, same, lambda images: student).abs() < 1e-6  # student == teacher


def test_distillation_without_a_teacher_is_refused():
    cfg = FinetuneConfig(epochs=1, distill=DistillConfig())
    with pytest.raises(ValueError, match="no teacher"):
        finetune(model(), *loaders(), cfg, CPU)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "finetune", 1, 0) == derive_seed(0, "finetune", 1, 0)
    seeds = {derive_seed(s, loop, e, r) for s in (0, 1) for loop in ("a", "b") for e in (1, 2) for r in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    class Poison(TrainingHooks):
        def end_epoch(self, model, epoch):
            if epoch == 2:
                with torch.no_grad():
                    model[0].weight[0, 0, 0, 0] = float("inf")  # as an overflowing last step would leave it

    with pytest.raises(TrainingDiverged, match=r"non-finite weights after epoch 2 \(first: 0.weight\); the last good"):
        finetune(model(), *loaders(), CFG, CPU, hooks=Poison(), options=LoopOptions(checkpoint=tmp_path / "w.pt"))
    assert load_checkpoint(tmp_path / "w.pt")["epoch"] == 1


def test_overwrite_drops_an_earlier_runs_records_and_checkpoints_but_resume_keeps_them(tmp_path):
    from compressor.environment import prepare_run_dir

    out = tmp_path / "run"
    for name in (".stages/prune.json", "pruned/finetune.ckpt.pt", "pruned/method.ckpt.pt", "report.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    prepare_run_dir(out, overwrite=False, resume=True)
    assert (out / ".stages" / "prune.json").exists() and (out / "pruned" / "finetune.ckpt.pt").exists()
    assert not (out / "report.json").exists()
    prepare_run_dir(out, overwrite=True)
    assert not (out / ".stages").exists() and not list((out / "pruned").glob("*.ckpt.pt"))
