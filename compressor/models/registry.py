"""The model zoo registry and ``build_model``: recipe ``model`` section -> network in eval mode on CPU.

A zoo entry (:class:`ModelSpec`) names a factory, its input shape, its default class count and which
public checkpoints load into it. ``model.arch`` is either a zoo name or ``package.module:factory`` for the
user's own network (imported with the current directory on ``sys.path``). Every failure is a one-line
:class:`~compressor.errors.ModelError` naming the recipe field to fix.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ModelError, did_you_mean
from . import cifar_resnet, mobilenet, resnet, vgg

if TYPE_CHECKING:
    from ..config import ModelConfig

Shape = tuple[int, int, int]
CIFAR_SHAPE: Shape = (3, 32, 32)
IMAGENET_SHAPE: Shape = (3, 224, 224)


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: Shape
    num_classes: int
    description: str
    checkpoint_layout: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, factory: Callable[..., nn.Module] | None = None, *, input_shape: Shape,
                   description: str, checkpoint_layout: str = "none (random initialisation only)",
                   num_classes: int | None = None) -> Any:
    """Add a zoo entry. Call it with the factory, or use it as a decorator: ``@register_model("x", ...)``.

    ``num_classes`` defaults to the default of the factory's ``num_classes`` parameter.
    """

    def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.factory is not fn:
            raise ValueError(f"model '{name}' is already registered (factory {existing.factory.__qualname__})")
        classes = num_classes if num_classes is not None else _default_num_classes(fn)
        if classes is None:
            raise ValueError(f"register_model('{name}'): give num_classes, the factory has no default for it")
        _REGISTRY[name] = ModelSpec(name, fn, tuple(input_shape), classes, description, checkpoint_layout)
        return fn

    return _register(factory) if factory is not None else _register


def _default_num_classes(fn: Callable[..., Any]) -> int | None:
    try:
        param = inspect.signature(fn).parameters.get("num_classes")
    except (TypeError, ValueError):
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return int(param.default)


def list_models() -> list[str]:
    """Zoo names in registration order (CIFAR models first, then ImageNet ones)."""
    return list(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name``; an unknown name is a ModelError listing the alternatives."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ModelError(f"model.arch: unknown model '{name}'{did_you_mean(name, _REGISTRY)}; "
                         "for your own network give 'package.module:factory'")
    return spec


# ------------------------------------------------------------------------------------------ build
def build_model(config: ModelConfig, num_classes: int | None) -> tuple[nn.Module, Shape]:
    """Build ``config.arch`` for ``num_classes`` classes; return it (eval mode, CPU) and its input shape (C, H, W).

    ``num_classes`` is passed as the factory's ``num_classes`` argument (when the factory takes one) unless
    ``model.kwargs`` sets it; a different value there is an error. The model must accept a (1, C, H, W)
    input and return (1, num_classes) logits. ``num_classes`` None (a custom task): nothing is passed, and the
    model may return any nesting of tensors.
    """
    factory, label, default_shape = _resolve_arch(config.arch)
    shape = tuple(config.input_shape) if config.input_shape is not None else default_shape
    if shape is None:
        raise ModelError(f"model.input_shape is required for your own model '{config.arch}': "
                         "set it to C, H, W of one input image, e.g. [3, 32, 32]")
    kwargs = dict(config.kwargs) if num_classes is None else _factory_kwargs(factory, dict(config.kwargs), num_classes)
    model = _call_factory(factory, label, kwargs, user=default_shape is None)
    model = model.to("cpu").eval()
    _check_forward(model, shape, num_classes, config.arch)
    return model, shape


def _resolve_arch(arch: str) -> tuple[Callable[..., Any], str, Shape | None]:
    """(factory, label for messages, zoo input shape or None for a user model)."""
    if ":" not in arch:
        spec = get_model_spec(arch)
        return spec.factory, f"zoo model '{arch}'", spec.input_shape
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model.arch '{arch}': expected 'package.module:factory' (e.g. 'mynets.small:build')")
    factory = import_callable(arch, "model.arch", ModelError, "a callable returning an nn.Module")
    return factory, f"factory '{arch}'", None


def import_callable(spec: str, field: str, error: type[Exception] = ModelError, kind: str = "a function") -> Callable:
    """What ``spec`` ('package.module:name') names, imported with the current directory on ``sys.path``; one
    ``error`` line naming ``field`` when the module does not import, lacks the name, or it is not callable
    (``kind`` says what it should be)."""
    module_name, _, attr = spec.partition(":")
    module = _import_user_module(module_name, spec, field, error)
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            raise error(f"{field} '{spec}': module '{module_name}' has no attribute '{attr}'"
                        f"{did_you_mean(attr, names)}")
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{field} '{spec}': '{attr}' is a {type(target).__name__}, not {kind}")
    return target


@contextlib.contextmanager
def cwd_on_path() -> Iterator[None]:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_user_module(module_name: str, spec: str, field: str, error: type[Exception]) -> Any:
    with cwd_on_path():
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:
            raise error(f"{field} '{spec}': cannot import '{module_name}': {_first_line(exc)} (run from "
                        "the folder that holds it, or add that folder to PYTHONPATH)") from exc
        except Exception as exc:  # the user's module raised while being imported
            raise error(f"{field} '{spec}': importing '{module_name}' failed: "
                        f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _accepted_params(factory: Callable[..., Any]) -> tuple[inspect.Signature | None, str]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None, "unknown"
    names = [p.name for p in sig.parameters.values()
             if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY)]
    return sig, ", ".join(names) or "none"


def _factory_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], num_classes: int) -> dict[str, Any]:
    if "num_classes" in kwargs:
        if kwargs["num_classes"] != num_classes:
            raise ModelError(f"model.kwargs.num_classes={kwargs['num_classes']!r} conflicts with "
                             f"data.num_classes={num_classes}; remove model.kwargs.num_classes or make them equal")
        return kwargs
    sig, _ = _accepted_params(factory)
    takes_it = sig is None or "num_classes" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return {**kwargs, "num_classes": num_classes} if takes_it else kwargs


def _call_factory(factory: Callable[..., Any], label: str, kwargs: dict[str, Any], user: bool) -> nn.Module:
    sig, accepted = _accepted_params(factory)
    given = ", ".join(sorted(kwargs)) or "none"
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as exc:
            raise ModelError(f"model.kwargs: {label} cannot take these arguments ({_first_line(exc)}); "
                             f"given: {given}; accepted parameters: {accepted}") from exc
    try:
        model = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model.kwargs: {label} rejected the arguments ({given}): {type(exc).__name__}: "
                         f"{_first_line(exc)}; accepted parameters: {accepted}") from exc
    except Exception as exc:
        if not user:
            raise
        raise ModelError(f"model.arch: {label} raised {type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.arch: {label} returned a {type(model).__name__}, not a torch.nn.Module; "
                         "the factory must return the network")
    return model


def _check_forward(model: nn.Module, shape: tuple[int, ...], num_classes: int | None, arch: str) -> None:
    c, h, w = shape
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, c, h, w))
    except Exception as exc:
        raise ModelError(f"model.input_shape {list(shape)}: forward of a (1,{c},{h},{w}) input failed: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from exc
    if num_classes is None:
        _check_outputs(out, arch, (1, c, h, w))
        return
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"model.arch '{arch}': the model returns {got} for a (1,{c},{h},{w}) input, expected "
                         f"(1, {num_classes}) logits (data.num_classes={num_classes}); check model.kwargs")


def _check_outputs(out: Any, arch: str, shape: tuple[int, ...]) -> None:
    """A custom task's model returns a tensor, or tuples, lists and dicts (string keys) of tensors."""
    if isinstance(out, torch.Tensor):
        return
    if isinstance(out, dict) and all(isinstance(k, str) for k in out):
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        raise ModelError(f"model.arch '{arch}': the model returns a {type(out).__name__} for a {shape} input; it must "
                         "return a tensor, or tuples, lists or dicts (string keys) of tensors")
    if not values:
        raise ModelError(f"model.arch '{arch}': the model returns an empty {type(out).__name__}")
    for value in values:
        _check_outputs(value, arch, shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def zoo_models_matching(state: dict[str, torch.Tensor], num_classes: int, input_shape: Shape) -> list[str]:
    """Zoo models for ``input_shape`` whose state_dict has exactly the keys and shapes of ``state`` (BatchNorm
    counters aside): the hint for a checkpoint that does not fit ``model.arch``. Builds each candidate once."""
    wanted = _signature(state)
    found = []
    for spec in _REGISTRY.values():
        if spec.input_shape != tuple(input_shape):
            continue
        try:
            model = spec.factory(num_classes=num_classes)
        except Exception:  # noqa: BLE001 - a zoo factory that cannot be built this way is simply no match
            continue
        if _signature(model.state_dict()) == wanted:
            found.append(spec.name)
    return found


def _signature(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()
            if isinstance(v, torch.Tensor) and not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------------------------------- the zoo
_AKAMASTER = "akamaster/pytorch_resnet_cifar10 (option A; shortcut='B' for 1x1-conv shortcuts)"
_TORCHVISION = "torchvision.models.{} state_dicts (e.g. the official ImageNet weights)"


def _register_zoo() -> None:
    for depth in (20, 32, 44, 56, 110):
        register_model(f"resnet{depth}", getattr(cifar_resnet, f"resnet{depth}"), input_shape=CIFAR_SHAPE,
                       description=f"CIFAR ResNet-{depth} (BasicBlock, 16/32/64 channels)",
                       checkpoint_layout=_AKAMASTER)
    for depth in (16, 19):
        register_model(f"vgg{depth}_bn", getattr(vgg, f"vgg{depth}_bn"), input_shape=CIFAR_SHAPE,
                       description=f"CIFAR VGG-{depth} with BatchNorm, global pool + one linear layer",
                       checkpoint_layout=f"kuangliu/pytorch-cifar VGG('VGG{depth}')")
    for depth in (18, 34, 50):
        register_model(f"resnet{depth}", getattr(resnet, f"resnet{depth}"), input_shape=IMAGENET_SHAPE,
                       description=f"ImageNet ResNet-{depth}" + (" v1.5 (Bottleneck)" if depth == 50 else ""),
                       checkpoint_layout=_TORCHVISION.format(f"resnet{depth}"))
    register_model("mobilenet_v2", mobilenet.mobilenet_v2, input_shape=IMAGENET_SHAPE,
                   description="MobileNetV2 (ImageNet; kwargs stem_stride=1 and input_shape [3, 32, 32] for CIFAR)",
                   checkpoint_layout=_TORCHVISION.format("mobilenet_v2"))
    register_model("quicknet", cifar_resnet.quicknet, input_shape=CIFAR_SHAPE,
                   description="Tiny quickstart CNN: conv + max-pool stem, BasicBlocks 16/32/64, option-A shortcuts",
                   checkpoint_layout="weights trained with compressor (e.g. the quickstart checkpoint)")


_register_zoo()
