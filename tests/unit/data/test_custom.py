"""A custom task's loaders: imported by name, called, their first batches checked; one line naming task.loaders."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compressor.data.custom import custom_loaders, import_callable
from compressor.errors import DataError

SHAPE = (3, 8, 8)


def parts(shape=SHAPE, n: int = 10, **changes) -> dict:
    data = TensorDataset(torch.randn(n, *shape), torch.randn(n, 2))
    found = {name: DataLoader(data, batch_size=4) for name in ("train", "val", "test", "calibration")}
    found.update(changes)
    return found


@pytest.fixture
def module(monkeypatch):
    """A user module ``usertask`` whose ``loaders`` returns what the test puts in ``module.value``."""
    mod = types.ModuleType("usertask")
    mod.value = parts()
    mod.loaders = lambda seed, batch_size: mod.value
    monkeypatch.setitem(sys.modules, "usertask", mod)
    return mod


def error(spec: str = "usertask:loaders") -> str:
    with pytest.raises(DataError) as info:
        custom_loaders(spec, 0, 4, SHAPE)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_four_parts_and_their_sizes(module):
    loaders = custom_loaders("usertask:loaders", 0, 4, SHAPE)
    assert (loaders.num_train, loaders.num_test, loaders.num_calibration) == (10, 10, 10)
    assert loaders.input_shape == SHAPE


def test_the_calibration_prefix_cuts_inside_a_batch(module):
    module.value = parts(calibration=DataLoader(TensorDataset(torch.randn(10, *SHAPE), torch.arange(10)), batch_size=4))
    loaders = custom_loaders("usertask:loaders", 0, 4, SHAPE)
    batches = list(loaders.calibration_loader(6))
    assert [len(x) for x, _ in batches] == [4, 2] and batches[1][1].tolist() == [4, 5]


def test_an_iterable_without_a_dataset_is_counted(module):
    module.value = parts(test=[(torch.randn(3, *SHAPE), {"y": torch.zeros(3)})] * 2)
    assert custom_loaders("usertask:loaders", 0, 4, SHAPE).num_test == 6


@pytest.mark.parametrize("value,expected", [
    ({"train": 1}, "returned ['train']; it must return a dict with the keys train, val, test, calibration"),
    ([1, 2], "returned list"),
])
def test_a_wrong_return_value(module, value, expected):
    module.value = value
    assert expected in error()


@pytest.mark.parametrize("change,expected", [
    ({"val": 5}, "task.loaders: the val part is a int, not an iterable"),
    ({"val": []}, "task.loaders: the val part yields no batch"),
    ({"test": [torch.randn(2, *SHAPE)]}, "the test part yields a Tensor; each batch must be a pair (inputs, targets)"),
    ({"train": [(torch.randn(2, 3, 9, 9), None)]}, "inputs are (2, 3, 9, 9), expected (N, 3, 8, 8) as model.input_shape"),
    ({"calibration": [(torch.zeros(2, *SHAPE, dtype=torch.uint8), None)]}, "inputs are torch.uint8"),
])
def test_a_wrong_batch_names_the_part(module, change, expected):
    module.value = parts(**change)
    assert expected in error()


def test_import_failures_name_the_field(module):
    missing = _import_error("nosuchpkg.x:f", "task.loss")
    assert "task.loss 'nosuchpkg.x:f': cannot import 'nosuchpkg.x': No module named 'nosuchpkg'" in missing
    assert "task.metric 'usertask:loadrs': module 'usertask' has no attribute 'loadrs'" in _import_error(
        "usertask:loadrs", "task.metric")
    assert "did you mean" in _import_error("usertask:loadrs", "task.metric")
    module.value_not_callable = 3
    assert "is a int, not a function" in _import_error("usertask:value_not_callable", "task.loss")


def test_a_factory_that_raises_is_one_line(module):
    module.loaders = lambda seed, batch_size: 1 / 0
    assert "task.loaders 'usertask:loaders' raised ZeroDivisionError" in error()


def _import_error(spec: str, field: str) -> str:
    with pytest.raises(DataError) as info:
        import_callable(spec, field)
    return str(info.value)
