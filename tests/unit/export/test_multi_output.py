"""Models with several outputs: one named ONNX output per tensor, in the documented order, parity per output."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn as nn

from compressor.export import check_parity, export_onnx
from compressor.export.artifacts import Images, export_artifact
from compressor.export.onnx import Parity
from compressor.outputs import named


class Heads(nn.Module):
    """``kind`` picks the output structure: a dict, a tuple, or a dict holding a list."""

    def __init__(self, kind: str = "dict"):
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.seg, self.cls = nn.Conv2d(6, 2, 1), nn.Linear(6, 4)

    def forward(self, x):
        h = self.body(x)
        seg, cls = self.seg(h), self.cls(h.mean((2, 3))) * 100.0  # very different scales
        if self.kind == "tuple":
            return seg, cls
        if self.kind == "nested":
            return {"cls": cls, "levels": [seg, seg[:, :1] * 2]}
        return {"seg": seg, "cls": cls}


def test_names_follow_the_structure():
    t = torch.zeros(1)
    assert [n for n, _ in named(t)] == ["logits"]
    assert [n for n, _ in named((t, t))] == ["output_0", "output_1"]
    assert [n for n, _ in named({"b": t, "a": [t, (t,)]})] == ["b", "a.0", "a.1.0"]


@pytest.mark.parametrize("kind,names", [("dict", ["seg", "cls"]), ("tuple", ["output_0", "output_1"]),
                                        ("nested", ["cls", "levels.0", "levels.1"])])
def test_every_output_is_exported_with_its_name_and_checked(tmp_path, kind, names):
    torch.manual_seed(0)
    model = Heads(kind).eval()
    path = export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == names
    parity = check_parity(model, path, torch.randn(5, 3, 8, 8))
    assert [name for name, _, _ in parity.outputs] == names
    assert all(diff < 1e-3 for _, diff, _ in parity.outputs) and parity.passed(1e-4, 1e-3)


def test_each_output_is_judged_at_its_own_scale():
    """cls is ~100x larger than seg: a difference that is small for cls must still fail seg."""
    fine = Parity(max_abs_diff=0.05, reference_max_abs=100.0, outputs=(("seg", 1e-6, 1.0), ("cls", 0.05, 100.0)))
    assert fine.passed(1e-4, 1e-3)
    bad = Parity(max_abs_diff=0.05, reference_max_abs=100.0, outputs=(("seg", 0.05, 1.0), ("cls", 1e-6, 100.0)))
    assert not bad.passed(1e-4, 1e-3)


def test_a_wrong_output_fails_its_own_parity(tmp_path):
    torch.manual_seed(0)
    model = Heads("dict").eval()
    path = export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "m.onnx")
    with torch.no_grad():
        model.seg.bias.add_(0.5)
    parity = check_parity(model, path, torch.randn(4, 3, 8, 8))
    per_output = {name: diff for name, diff, _ in parity.outputs}
    assert per_output["seg"] == pytest.approx(0.5, abs=1e-4) and per_output["cls"] < 1e-3
    assert not parity.passed(1e-4, 1e-3)


def test_the_artifact_records_every_output(tmp_path):
    torch.manual_seed(0)
    images = Images(parity=torch.randn(4, 3, 8, 8), calibration=lambda: iter(()), atol=1e-4, rtol=1e-3)
    art = export_artifact(Heads("tuple"), tmp_path / "m.onnx", images, 18)
    assert [name for name, _, _ in art.outputs] == ["output_0", "output_1"] and art.exporter == "dynamo"
