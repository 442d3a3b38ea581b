"""finetune.precision / channels_last / compile / threads: how they resolve, that the model comes back in the
default layout, and that resuming stays exact on the in-memory loader with every speed setting on."""

from __future__ import annotations

import pytest
import torch

from compressor.config import FinetuneConfig
from compressor.data import build_loaders
from compressor.errors import TrainingError
from compressor.training import LoopOptions, finetune, throughput
from compressor.training.throughput import Speed, Threads

from ..data.conftest import synthetic_config
from .test_resume import StopAt

CPU = torch.device("cpu")
NATIVE = throughput.native_bf16(CPU)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_exactly_where_the_device_has_it(monkeypatch, native):
    monkeypatch.setattr(throughput, "native_bf16", lambda device: native)
    speed = Speed.resolve(FinetuneConfig(epochs=1), CPU)
    assert speed.autocast == (torch.bfloat16 if native else None)
    assert Speed.resolve(FinetuneConfig(epochs=1, precision="fp32"), CPU).autocast is None
    assert speed.describe().startswith("bf16 autocast, channels-last" if native else "fp32, channels-last")


def test_bf16_where_the_device_lacks_it_is_refused_naming_the_field(monkeypatch):
    monkeypatch.setattr(throughput, "native_bf16", lambda device: False)
    with pytest.raises(TrainingError, match="finetune.precision: bf16, but cpu has no native bfloat16"):
        Speed.resolve(FinetuneConfig(epochs=1, precision="bf16"), CPU)


def test_threads_are_set_for_the_block_and_restored():
    before = torch.get_num_threads()
    with Threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def _loaders():
    cfg = synthetic_config(80, 20, val_split=16, batch_size=16, augment={"random_crop_padding": 2, "hflip": True})
    loaders = build_loaders(cfg, (3, 32, 32), seed=0)
    return loaders.train, loaders.val


CFG = FinetuneConfig(epochs=3, lr=0.05, precision="auto", channels_last=True)


def test_resume_is_exact_on_the_in_memory_loader_with_bf16_and_channels_last(tmp_path):
    straight = model()
    full = finetune(straight, *_loaders(), CFG, CPU, options=LoopOptions(checkpoint=tmp_path / "a.pt", seed=3))
    with pytest.raises(KeyboardInterrupt):
        finetune(model(), *_loaders(), CFG, CPU, hooks=StopAt(3), options=LoopOptions(checkpoint=tmp_path / "b.pt", seed=3))
    resumed_model = model()
    resumed = finetune(resumed_model, *_loaders(), CFG, CPU, options=LoopOptions(checkpoint=tmp_path / "b.pt", seed=3))
    assert resumed.resumed_from == 2
    assert [vars(e) | {"seconds": 0} for e in resumed.epochs] == [vars(e) | {"seconds": 0} for e in full.epochs]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    conv = straight[0].weight
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16 (AVX-512 BF16 / AMX)")
def test_bf16_and_fp32_steps_differ_but_both_train():
    results = {}
    for precision in ("fp32", "bf16"):
        net = model()
        finetune(net, *_loaders(), FinetuneConfig(epochs=1, lr=0.05, precision=precision), CPU, keep_best=False)
        results[precision] = net[0].weight.detach().clone()
    assert not torch.equal(results["fp32"], results["bf16"])
    assert torch.isfinite(results["bf16"]).all()
    assert (results["fp32"] - results["bf16"]).abs().max() < 0.05  # the same training, in another precision


@pytest.mark.slow
def test_compile_trains_full_batches_compiled_and_an_odd_last_one_eagerly(monkeypatch):
    calls = []
    real = torch.compile

    def counting(net, **kwargs):
        compiled = real(net, **kwargs)

        def forward(images):
            calls.append(images.shape[0])
            return compiled(images)
        return forward
    monkeypatch.setattr(torch, "compile", counting)
    train, val = _loaders()  # 64 images in batches of 16
    cfg = FinetuneConfig(epochs=1, lr=0.05, compile=True, max_steps_per_epoch=None)
    train.batch_size = 24  # 24 + 24 + 16: the last batch runs eagerly
    result = finetune(model(), train, val, cfg, CPU, keep_best=False)
    assert calls == [24, 24] and len(result.epochs) == 1
