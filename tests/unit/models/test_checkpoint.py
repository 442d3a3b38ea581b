"""load_checkpoint: where state_dicts hide, prefixes, filled BN counters, and one-line errors for bad files."""

from __future__ import annotations

import collections
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from compressor.errors import CheckpointError
from compressor.models import CheckpointInfo, load_checkpoint
from compressor.models.cifar_resnet import quicknet, resnet20, resnet56


class Opaque:
    """A custom class: pickling it makes a file that weights_only loading refuses."""

    def __init__(self):
        self.lr = 0.1


@pytest.fixture()
def source() -> nn.Module:
    torch.manual_seed(1)
    model = quicknet()
    with torch.no_grad():
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
    return model


def fresh() -> nn.Module:
    torch.manual_seed(2)
    return quicknet()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


def error(model: nn.Module, path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg
    return msg


# ----------------------------------------------------------------------------------- layouts
def test_raw_state_dict(source, tmp_path):
    model = fresh()
    info = load_checkpoint(model, save(source.state_dict(), tmp_path / "raw.pt"))
    assert isinstance(info, CheckpointInfo) and info.key is None and info.stripped_prefix == ""
    assert info.filled == [] and info.metadata == {} and same_weights(model, source)


@pytest.mark.parametrize("key", ["state_dict", "model", "net"])
def test_nested_state_dict(source, tmp_path, key):
    ckpt = {"epoch": 7, "best_acc": 93.1, "arch": "quicknet", "optimizer": {"state": {}}, key: source.state_dict()}
    path = save(ckpt, tmp_path / "nested.pth")
    model = fresh()
    info = load_checkpoint(model, path)
    assert info.key == key and info.metadata == {"epoch": 7, "best_acc": 93.1, "arch": "quicknet"}
    assert same_weights(model, source)


def test_explicit_key(source, tmp_path):
    path = save({"ema": source.state_dict(), "state_dict": fresh().state_dict()}, tmp_path / "ema.pt")
    model = fresh()
    assert load_checkpoint(model, path, key="ema").key == "ema" and same_weights(model, source)
    msg = error(fresh(), path, key="teacher")
    assert msg.startswith("model.checkpoint_key 'teacher'") and "top-level keys: ema, state_dict" in msg
    msg = error(fresh(), save({"cfg": {"lr": 0.1}}, tmp_path / "cfg.pt"), key="cfg")
    assert "not a state_dict" in msg


def test_wrapper_prefixes_are_stripped(source, tmp_path):
    dp = collections.OrderedDict((f"module.{k}", v) for k, v in source.state_dict().items())
    model = fresh()
    info = load_checkpoint(model, save({"state_dict": dp}, tmp_path / "dp.th"))
    assert info.stripped_prefix == "module." and same_weights(model, source)
    both = {f"_orig_mod.module.{k}": v for k, v in source.state_dict().items()}
    info = load_checkpoint(fresh(), save(both, tmp_path / "compiled.pt"))
    assert info.stripped_prefix == "_orig_mod.module."


def test_foreign_prefix_stripped_only_on_exact_match(source, tmp_path):
    lightning = {f"model.{k}": v for k, v in source.state_dict().items()}
    model = fresh()
    info = load_checkpoint(model, save({"state_dict": lightning}, tmp_path / "pl.ckpt"))
    assert info.stripped_prefix == "model." and same_weights(model, source)
    partial = {f"model.{k}": v for k, v in source.state_dict().items() if not k.startswith("linear")}
    assert "missing keys" in error(fresh(), save(partial, tmp_path / "partial.pt"))


def test_missing_num_batches_tracked_is_filled(source, tmp_path):
    old = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = fresh()
    info = load_checkpoint(model, save(old, tmp_path / "old.th"))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(info.filled) == n_bn and "bn1.num_batches_tracked" in info.filled
    assert torch.equal(model.bn1.running_var, source.bn1.running_var)


def test_pickled_module_is_loaded_when_trusted(source, tmp_path):
    path = save({"model": source, "opt": Opaque()}, tmp_path / "whole.pt")
    model = fresh()
    assert load_checkpoint(model, path, trust=True).key == "model" and same_weights(model, source)


# -------------------------------------------------------------------------------- mismatches
def test_mismatch_message_lists_every_kind(tmp_path):
    sd = resnet56(num_classes=100).state_dict()
    del sd["layer3.8.bn2.weight"], sd["layer3.8.bn2.bias"]
    sd["fc.weight"] = torch.zeros(3)
    msg = error(resnet56(), save(sd, tmp_path / "r56.th"), model_name="resnet56")
    assert msg.startswith("model.checkpoint r56.th does not match model 'resnet56': ")
    assert "2 missing keys (layer3.8.bn2.weight, layer3.8.bn2.bias)" in msg
    assert "1 unexpected (fc.weight)" in msg
    assert "2 shape mismatches (linear.weight: file (100, 64) vs model (10, 64), linear.bias: file (100,) vs " \
           "model (10,))" in msg
    assert msg.endswith("check model.arch / model.kwargs / data.num_classes")


def test_long_lists_are_shortened(source, tmp_path):
    msg = error(resnet56(), save(source.state_dict(), tmp_path / "q.pt"))
    assert "model 'CifarResNet'" in msg and ", ...)" in msg and len(msg) < 600


# ------------------------------------------------------------------------------ unreadable files
def test_missing_file_and_directory(tmp_path):
    assert error(fresh(), tmp_path / "nope.pt") == f"model.checkpoint: file not found: {tmp_path / 'nope.pt'}"
    assert "is a directory" in error(fresh(), tmp_path)


def test_weights_only_refuses_pickled_objects(source, tmp_path):
    path = save({"state_dict": source.state_dict(), "args": Opaque()}, tmp_path / "opaque.pt")
    msg = error(fresh(), path)
    assert "pickled Python objects" in msg and "Opaque" in msg and "weights_only" in msg
    assert "model.trust_checkpoint: true" in msg
    model = fresh()
    info = load_checkpoint(model, path, trust=True)
    assert info.key == "state_dict" and same_weights(model, source)


def test_trusted_pickle_of_unimportable_class(source, tmp_path, monkeypatch):
    (tmp_path / "gone_module_ck.py").write_text("class Args:\n    lr = 0.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_module_ck

    path = save({"state_dict": source.state_dict(), "args": gone_module_ck.Args()}, tmp_path / "args.pt")
    (tmp_path / "gone_module_ck.py").unlink()
    monkeypatch.delitem(sys.modules, "gone_module_ck")
    msg = error(fresh(), path, trust=True)
    assert "not importable here" in msg and "gone_module_ck" in msg


@pytest.mark.parametrize("kind", ["random", "empty", "truncated_zip", "truncated_legacy", "yaml", "npz"])
def test_corrupt_files(source, tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "yaml":
        path.write_text("model:\n  arch: resnet56\n")
    elif kind == "npz":
        np.savez(path.with_suffix(".npz"), a=np.zeros(3))
        path = path.with_suffix(".npz")
    else:
        full = tmp_path / "full.pt"
        torch.save(source.state_dict(), full, _use_new_zipfile_serialization=kind == "truncated_zip")
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    msg = error(fresh(), path)
    assert str(path) in msg and msg.startswith("model.checkpoint")
    assert "trust_checkpoint" not in msg  # corrupt files must not be blamed on weights_only


def test_not_a_state_dict(tmp_path):
    msg = error(fresh(), save([torch.zeros(2)], tmp_path / "list.pt"))
    assert "holds a list" in msg
    msg = error(fresh(), save({"epoch": 3, "cfg": {"lr": 0.1}}, tmp_path / "meta.pt"))
    assert "no state_dict found" in msg and "top-level keys: epoch, cfg" in msg and "model.checkpoint_key" in msg


def test_zip_that_is_not_torch(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert "not a readable PyTorch checkpoint" in error(fresh(), path)


# ------------------------------------------------------------------------------- real weights
@pytest.mark.slow
def test_akamaster_resnet56_accuracy(akamaster_resnet56, shared_data):
    model = resnet56(shortcut="A").eval()
    info = load_checkpoint(model, akamaster_resnet56, model_name="resnet56")
    assert info.key == "state_dict" and info.stripped_prefix == "module." and len(info.filled) == 55
    assert "best_prec1" in info.metadata
    npz = np.load(shared_data / "cifar10-exact" / "test_first1017.npz")
    images = torch.from_numpy(npz["data"]).float().div_(255)
    labels = torch.from_numpy(npz["labels_all10000"][:1017].astype(np.int64))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images = (images - mean) / std
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), 256):
            correct += (model(images[i:i + 256]).argmax(1) == labels[i:i + 256]).sum().item()
    assert len(images) == 1017
    assert abs(100 * correct / len(images) - 92.72) < 0.05


def test_numpy_scalars_beside_the_weights_load_without_trust(tmp_path):
    model = resnet20()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "best_acc": np.float64(93.1), "dtype": np.dtype("float32")}, path)
    info = load_checkpoint(resnet20(), path)
    assert info.key == "state_dict" and info.metadata["best_acc"] == pytest.approx(93.1)


def test_prefix_on_only_some_keys_is_stripped_where_present(tmp_path):
    model = resnet20()
    state = {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(model.state_dict().items())}
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    fresh = resnet20()
    info = load_checkpoint(fresh, path)
    assert info.stripped_prefix == "module."
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
