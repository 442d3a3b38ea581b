"""Typed results <-> JSON: exact round trips, refusals for anything that does not fit."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from compressor.codec import RecordMismatch, decode, encode


@dataclass(frozen=True)
class Inner:
    name: str
    ms: float | None


@dataclass(frozen=True)
class Outer:
    count: int
    ratio: float
    rows: tuple[Inner, ...]
    table: dict[str, Inner]
    files: dict[str, Path]
    raw: dict
    pair: tuple[int, str]
    maybe: Inner | None = None


def sample(root: Path) -> Outer:
    return Outer(count=3, ratio=0.1 + 0.2, rows=(Inner("a", 1 / 3), Inner("b", None)), table={"x": Inner("x", math.inf)},
                 files={"in": root / "export" / "model.onnx", "out": Path("/elsewhere/file")},
                 raw={"nested": [1, 2.5, "s"], "n": None}, pair=(7, "q"))


def test_round_trip_is_exact_through_json_text(tmp_path):
    value = sample(tmp_path)
    text = json.dumps(encode(value, tmp_path))
    assert json.loads(text)["files"] == {"in": "export/model.onnx", "out": "/elsewhere/file"}
    back = decode(Outer, json.loads(text), tmp_path)
    assert back == value and back.ratio == 0.1 + 0.2 and isinstance(back.rows, tuple)


def test_ints_and_floats_keep_their_json_type():
    assert decode(float, 1) == 1 and isinstance(decode(float, 1), int)  # written as 1, read as 1 (not 1.0)
    assert isinstance(decode(float, 1.0), float)


def test_numpy_and_torch_values_become_plain_json():
    assert encode({"a": np.float32(0.5), "b": np.arange(3), "c": torch.tensor([1, 2])}) == {"a": 0.5, "b": [0, 1, 2],
                                                                                          "c": [1, 2]}
    with pytest.raises(TypeError, match="cannot record a object"):
        encode(object())


@pytest.mark.parametrize("data,match", [
    ({"name": "a"}, r"Inner fields differ \(missing \['ms'\], unknown \[\]\)"),
    ({"name": "a", "ms": 1.0, "extra": 1}, r"unknown \['extra'\]"),
    ({"name": 3, "ms": 1.0}, r"result.name: expected str, got int"),
    ({"name": "a", "ms": True}, r"result.ms: expected"),
    ([1, 2], r"result: expected dict, got list"),
])
def test_data_that_does_not_fit_the_type_is_refused(data, match):
    with pytest.raises(RecordMismatch, match=match):
        decode(Inner, data)


def test_fixed_length_tuples_check_their_length():
    with pytest.raises(RecordMismatch, match="expected 2 values, got 3"):
        decode(tuple[int, str], [1, "a", 2])
