"""The method contract, for every registered method: registration, scores, allocation and a full prune.

Parametrised over the registry: a method without a case in ``CASES`` fails here until it gets one.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compressor.config import METHOD_OPTIONS, FinetuneConfig, PruningConfig
from compressor.config.methods import MethodOptions
from compressor.methods import (
    CalibrationContext,
    PruningMethod,
    TrainingHooks,
    TrainingMethod,
    build_method,
    get_method,
    list_methods,
    method_for,
)
from compressor.models.cifar_resnet import quicknet
from compressor.surgery import prune
from compressor.surgery.schedule import Trainer, train_with_masks

SHAPE = (3, 32, 32)
CASES = {  # method -> options that make it quick on quicknet
    "fpgm": {}, "l1": {}, "l2": {}, "random": {},
    "hrank": {"images": 8}, "pfp": {"sample_size": 8}, "functionality": {"images": 8},
    "sfp": {"epochs": 1}, "hfp": {"epochs": 1}, "ghfp": {"epochs": 1},
    "swp": {"epochs": 1, "alpha": 0.05, "threshold": 0.3},
}
METHODS = list_methods()


def calibration() -> CalibrationContext:
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, *SHAPE, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]
    return CalibrationContext(batches=lambda: batches, device=torch.device("cpu"), num_images=16)


def loader() -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(16, *SHAPE, generator=gen), torch.randint(0, 10, (16,), generator=gen))
    return DataLoader(data, batch_size=8)


def test_every_options_type_has_exactly_one_method():
    assert sorted(options.method_name() for options in METHOD_OPTIONS) == [cls.name for cls in METHODS]
    assert all(cls.Options in METHOD_OPTIONS for cls in METHODS)


@pytest.mark.parametrize("cls", METHODS, ids=lambda cls: cls.name)
def test_registration_and_documentation(cls: type[PruningMethod]):
    assert cls.name in CASES, f"method {cls.name} has no contract case: add its quick options to CASES"
    options = cls.Options(name=cls.name, **CASES[cls.name])
    assert isinstance(options, MethodOptions) and options.method_name() == cls.name
    assert method_for(options) is cls and get_method(cls.name) is cls and type(build_method(options)) is cls
    assert cls.summary and len(cls.summary.splitlines()) == 1
    module = (sys.modules[cls.__module__].__doc__ or "").lower()
    assert "arxiv" in module and ("depart" in module or "reconstruction" in module), f"{cls.__module__}: no paper"
    hooks = cls.finetune_hooks(quicknet())
    assert hooks is None or isinstance(hooks, TrainingHooks)


@pytest.mark.parametrize("cls", METHODS, ids=lambda cls: cls.name)
def test_a_method_prunes_quicknet_end_to_end(cls: type[PruningMethod]):
    """Through the same path as the pipeline: (mask training,) decide, allocate, choose, remove, check."""
    torch.manual_seed(0)
    model = quicknet().eval()
    reference = copy.deepcopy(model)
    method = build_method(cls.Options(name=cls.name, **CASES[cls.name]), seed=0)
    cfg = PruningConfig(ratio=None if cls.Options(name=cls.name, **CASES[cls.name]).allocates else 0.4,
                        residual="internal")
    masked = None
    if isinstance(method, TrainingMethod):
        assert method.epochs == CASES[cls.name]["epochs"]
        trainer = Trainer(loader(), loader(), FinetuneConfig(epochs=1, lr=0.01), torch.device("cpu"), seed=0)
        masked = train_with_masks(model, method, SHAPE, cfg, trainer, checkpoint=None)
    surgery = prune(model, SHAPE, method, cfg, calibration())
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert model(x).shape == reference(x).shape
        if masked is not None:  # what was trained with masks is what was removed
            assert (masked.eval()(x) - model(x)).abs().max() < 1e-4
    assert surgery.macs_after <= surgery.macs_before and surgery.history is not None
    assert all(g.kept <= g.channels for g in surgery.groups)
    # training-time methods decide the counts (their final masks); the others follow the recipe's ratio
    assert surgery.allocation == ("method" if isinstance(method, TrainingMethod) else "recipe")
    assert isinstance(method.details, dict)
