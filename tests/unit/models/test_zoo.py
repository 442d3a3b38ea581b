"""Zoo architectures (shapes, parameter counts, checkpoint key names) and build_model errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from compressor.config import ModelConfig
from compressor.errors import ModelError
from compressor.models import ModelSpec, build_model, get_model_spec, list_models, register_model, registry
from compressor.models.cifar_resnet import cifar_resnet, quicknet, resnet20, resnet56, resnet110
from compressor.models.layers import ZeroPadShortcut
from compressor.models.mobilenet import mobilenet_v2
from compressor.models.resnet import resnet18, resnet34, resnet50
from compressor.models.vgg import vgg16_bn, vgg19_bn

ZOO = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16_bn", "vgg19_bn",
       "resnet18", "resnet34", "resnet50", "mobilenet_v2", "quicknet"]
IMAGENET = {"resnet18", "resnet34", "resnet50", "mobilenet_v2"}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ registry
def test_registered_names():
    assert list_models() == ZOO


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_builds_and_runs(name):
    spec = get_model_spec(name)
    assert isinstance(spec, ModelSpec) and spec.name == name
    assert spec.input_shape == ((3, 224, 224) if name in IMAGENET else (3, 32, 32))
    assert spec.num_classes == (1000 if name in IMAGENET else 10)
    assert spec.description and "\n" not in spec.description and spec.checkpoint_layout
    model = spec.factory(num_classes=7).eval()
    c, h, w = spec.input_shape
    side = 64 if name in IMAGENET else h  # ImageNet models are fully convolutional: keep the test fast
    with torch.no_grad():
        out = model(torch.randn(2, c, side, side))
    assert out.shape == (2, 7)


# --------------------------------------------------------------------------------- CIFAR ResNets
@pytest.mark.parametrize(("factory", "params"), [(resnet20, 269_722), (resnet56, 853_018)])
def test_cifar_resnet_parameter_counts(factory, params):
    assert n_params(factory()) == params  # akamaster README: 0.27 M, 0.85 M


def test_cifar_resnet_akamaster_key_names():
    keys = set(resnet56().state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer3.8.bn2.running_mean",
            "linear.weight", "linear.bias"} <= keys
    assert not any("shortcut" in k for k in keys)
    assert len([k for k in keys if not k.endswith("num_batches_tracked")]) == 277  # as in the public file


def test_cifar_resnet_blocks_and_shortcuts():
    model = resnet56()
    assert [len(getattr(model, f"layer{k}")) for k in (1, 2, 3)] == [9, 9, 9]
    assert isinstance(model.layer2[0].shortcut, ZeroPadShortcut)
    assert isinstance(model.layer1[0].shortcut, nn.Identity) and isinstance(model.layer2[1].shortcut, nn.Identity)
    b = resnet20(shortcut="B")
    keys = set(b.state_dict())
    assert {"layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_mean", "layer3.0.shortcut.1.weight"} <= keys
    assert not any(k.startswith("layer1.") and "shortcut" in k for k in keys)
    assert b.layer2[0].shortcut[0].weight.shape == (32, 16, 1, 1)


def test_cifar_resnet_depth_and_kaiming_init():
    assert len(cifar_resnet(110).layer3) == 18
    with pytest.raises(ValueError, match="6n"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match="shortcut"):
        resnet20(shortcut="C")
    w = resnet110().layer3[0].conv2.weight  # fan_in 576: std sqrt(2/576) = 0.059
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.005


def test_quicknet_structure():
    model = quicknet()
    assert isinstance(model.pool, nn.MaxPool2d)
    assert [len(getattr(model, f"layer{k}")) for k in (1, 2, 3)] == [1, 1, 1]
    assert isinstance(model.layer2[0].shortcut, ZeroPadShortcut) and model.linear.in_features == 64
    wide = quicknet(num_classes=3, widths=(8, 16, 32), blocks=(2, 1, 1))
    assert len(wide.layer1) == 2 and wide(torch.randn(1, 3, 32, 32)).shape == (1, 3)


# ---------------------------------------------------------------------------------------- VGG
def test_vgg_kuangliu_layout():
    model = vgg16_bn()
    assert len(model.features) == 13 * 3 + 5 and len(vgg19_bn().features) == 16 * 3 + 5
    keys = set(model.state_dict())
    assert {"features.0.weight", "features.0.bias", "features.1.running_mean", "features.3.weight",
            "features.40.weight", "features.41.running_var", "classifier.weight"} <= keys
    assert isinstance(model.features[6], nn.MaxPool2d) and isinstance(model.features[43], nn.MaxPool2d)
    assert model.classifier.in_features == 512
    assert n_params(model) == 14_728_266 and n_params(vgg19_bn()) == 20_040_522


# ------------------------------------------------------------------------------ ImageNet models
@pytest.mark.parametrize(("factory", "params"), [(resnet18, 11_689_512), (resnet34, 21_797_672),
                                                 (resnet50, 25_557_032), (mobilenet_v2, 3_504_872)])
def test_torchvision_parameter_counts(factory, params):
    assert n_params(factory()) == params


def test_resnet_torchvision_key_names():
    keys50 = set(resnet50().state_dict())
    assert {"conv1.weight", "bn1.num_batches_tracked", "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.running_var", "layer4.2.conv3.weight", "layer4.2.bn3.bias", "fc.weight"} <= keys50
    assert resnet50().layer2[0].conv2.stride == (2, 2)  # v1.5
    keys18 = set(resnet18().state_dict())
    assert "layer2.0.downsample.0.weight" in keys18 and "layer1.0.downsample.0.weight" not in keys18
    assert "layer1.0.conv3.weight" not in keys18


def test_mobilenet_torchvision_key_names():
    model = mobilenet_v2()
    keys = set(model.state_dict())
    assert {"features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
            "features.1.conv.1.weight", "features.1.conv.2.running_var", "features.2.conv.0.0.weight",
            "features.2.conv.1.0.weight", "features.2.conv.2.weight", "features.2.conv.3.bias",
            "features.18.0.weight", "classifier.1.weight"} <= keys
    assert model.features[18][0].out_channels == 1280 and isinstance(model.classifier[0], nn.Dropout)
    assert [m.use_res_connect for m in model.features[1:4]] == [False, False, True]
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_mobilenet_cifar_stem():
    model = mobilenet_v2(num_classes=10, stem_stride=1).eval()
    assert model.features[0][0].stride == (1, 1)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_register_model_as_decorator(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("tiny_test_net", input_shape=(1, 8, 8), description="a test net")
    def tiny(num_classes: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    spec = get_model_spec("tiny_test_net")
    assert spec.factory is tiny and spec.num_classes == 4 and spec.input_shape == (1, 8, 8)
    assert "tiny_test_net" in list_models()
    model, shape = build_model(ModelConfig(arch="tiny_test_net"), num_classes=3)
    assert shape == (1, 8, 8) and model[1].out_features == 3
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_test_net", resnet20, input_shape=(3, 32, 32), description="clash")


@pytest.mark.slow  # seconds: runs in make test-all, not in the quick loop
def test_package_import_stays_light():
    code = "import sys, compressor.models; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('torch_pruning', 'onnx', 'onnxruntime', 'torchvision')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -------------------------------------------------------------------------------- build_model
def test_build_zoo_model():
    model, shape = build_model(ModelConfig(arch="resnet20"), num_classes=100)
    assert shape == (3, 32, 32) and not model.training
    assert model.linear.out_features == 100 and next(model.parameters()).device.type == "cpu"
    model, _ = build_model(ModelConfig(arch="resnet20", kwargs={"num_classes": 10, "shortcut": "B"}), 10)
    assert isinstance(model.layer2[0].shortcut, nn.Sequential)


def one_line_error(config: ModelConfig, num_classes: int = 10) -> str:
    with pytest.raises(ModelError) as info:
        build_model(config, num_classes)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_arch_suggests():
    msg = one_line_error(ModelConfig(arch="resnet57"))
    assert msg.startswith("model.arch") and "did you mean 'resnet56'" in msg and "package.module:factory" in msg


def test_bad_kwargs_list_accepted_parameters():
    msg = one_line_error(ModelConfig(arch="resnet20", kwargs={"depth": 3}))
    assert msg.startswith("model.kwargs") and "depth" in msg and "num_classes, shortcut" in msg
    msg = one_line_error(ModelConfig(arch="resnet20", kwargs={"shortcut": "C"}))
    assert msg.startswith("model.kwargs") and "'A'" in msg


def test_num_classes_conflict():
    msg = one_line_error(ModelConfig(arch="vgg16_bn", kwargs={"num_classes": 100}), num_classes=10)
    assert "model.kwargs.num_classes=100" in msg and "data.num_classes=10" in msg


def test_bad_input_shape():
    msg = one_line_error(ModelConfig(arch="resnet20", input_shape=(1, 32, 32)))
    assert msg.startswith("model.input_shape [1, 32, 32]: forward of a (1,1,32,32) input failed: RuntimeError")


USER_MODULE = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes=10, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def build(num_classes=10, width=4):
    return Tiny(num_classes, width)


def fixed():
    return Tiny(10)


def not_a_model(num_classes=10):
    return {"num_classes": num_classes}


def broken(num_classes=10):
    raise RuntimeError("weights are on the moon")
"""


@pytest.fixture()
def user_module(tmp_path, monkeypatch, request):
    """A user model file in tmp_path with a per-test module name, importable from the current directory."""
    name = f"usernets_{request.node.name.replace('[', '_').replace(']', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def test_user_factory_from_current_directory(user_module):
    path_before = list(sys.path)
    cfg = ModelConfig(arch=f"{user_module}:build", kwargs={"width": 6}, input_shape=(3, 16, 16))
    model, shape = build_model(cfg, num_classes=5)
    assert shape == (3, 16, 16) and model.fc.out_features == 5 and model.conv.out_channels == 6
    assert sys.path == path_before  # the current directory was on sys.path only while importing
    model, _ = build_model(ModelConfig(arch=f"{user_module}:Tiny", input_shape=(3, 8, 8)), num_classes=3)
    assert model.fc.out_features == 3


def test_user_factory_on_sys_path(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg_zoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = build_model(ModelConfig(arch="mypkg_zoo.nets:build", input_shape=(3, 8, 8)), num_classes=4)
    assert model.fc.out_features == 4
    for mod in ("mypkg_zoo.nets", "mypkg_zoo"):
        sys.modules.pop(mod, None)


def test_user_model_needs_input_shape(user_module):
    msg = one_line_error(ModelConfig(arch=f"{user_module}:build"))
    assert msg.startswith("model.input_shape is required") and "[3, 32, 32]" in msg


def test_user_factory_errors(user_module):
    shape = (3, 8, 8)
    msg = one_line_error(ModelConfig(arch="no_such_module_xyz:build", input_shape=shape))
    assert msg.startswith("model.arch") and "No module named 'no_such_module_xyz'" in msg
    msg = one_line_error(ModelConfig(arch=f"{user_module}:buidl", input_shape=shape))
    assert "has no attribute 'buidl'" in msg and "did you mean 'build'" in msg
    msg = one_line_error(ModelConfig(arch=f"{user_module}:build", kwargs={"depth": 3}, input_shape=shape))
    assert msg.startswith("model.kwargs") and "accepted parameters: num_classes, width" in msg
    msg = one_line_error(ModelConfig(arch=f"{user_module}:not_a_model", input_shape=shape))
    assert "returned a dict, not a torch.nn.Module" in msg
    msg = one_line_error(ModelConfig(arch=f"{user_module}:broken", input_shape=shape))
    assert msg.startswith("model.arch") and "RuntimeError: weights are on the moon" in msg
    msg = one_line_error(ModelConfig(arch="nocolon:", input_shape=shape))
    assert "package.module:factory" in msg


def test_user_factory_without_num_classes(user_module):
    model, _ = build_model(ModelConfig(arch=f"{user_module}:fixed", input_shape=(3, 8, 8)), num_classes=10)
    assert model.fc.out_features == 10
    msg = one_line_error(ModelConfig(arch=f"{user_module}:fixed", input_shape=(3, 8, 8)), num_classes=4)
    assert "returns (1, 10)" in msg and "data.num_classes=4" in msg
