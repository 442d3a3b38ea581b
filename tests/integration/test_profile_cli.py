"""`compress profile`: a table, latency.json and latency.png for a real ONNX file; bad input exits 2 with one line."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app
from compressor.export import export_onnx
from compressor.profiling.backends import backend_problem

from ..unit.export.nets import PlainNet, TinyResNet

QUICK = ["--warmup", "1", "--iterations", "3", "--repeats", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("profile_cli")
    plain = export_onnx(PlainNet(), torch.randn(1, 3, 16, 16), folder / "plain.onnx")
    export_onnx(TinyResNet(), torch.randn(1, 3, 16, 16), folder / "tiny.onnx")
    proto = onnx.load(str(plain))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(proto, str(folder / "fixed.onnx"))
    (folder / "junk.onnx").write_text("this is not a protobuf\n")
    (folder / "model.engine").write_bytes(b"not an engine")
    return {p.stem: p for p in folder.iterdir()}


def test_profile_writes_table_json_and_png(models, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["profile", str(models["plain"]), "--batch", "1", "4", *QUICK, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime-cpu" in result.output and "p50 ms" in result.output and "img/s" in result.output
    data = json.loads((out / "latency.json").read_text())
    assert [(s["artifact"], s["backend"], s["batch"]) for s in data["stats"]] == [
        ("plain", "onnxruntime-cpu", 1), ("plain", "onnxruntime-cpu", 4)]
    assert all(0 < s["p50_ms"] <= s["p99_ms"] and s["iterations"] == 3 and s["repeats"] == 2 for s in data["stats"])
    env = data["environment"]
    assert env["cpu"] and env["cores_available"] >= 1 and env["threads"] and env["versions"]["onnxruntime"]
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_artifacts_side_by_side_default_out(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["profile", str(models["plain"]), str(models["tiny"]), "--batch", "1,2", *QUICK]  # 1 thread by default
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "vs first" in result.output and "tiny" in result.output
    data = json.loads((tmp_path / "profile-plain-tiny" / "latency.json").read_text())
    assert {s["artifact"] for s in data["stats"]} == {"plain", "tiny"} and {s["threads"] for s in data["stats"]} == {1}
    assert [(r["artifact"], r["reference"], r["batch"]) for r in data["ratios"]] == [("tiny", "plain", 1), ("tiny", "plain", 2)]


@pytest.mark.skipif(backend_problem("openvino-cpu") is not None, reason="openvino is not installed")
def test_openvino_next_to_onnxruntime(models, tmp_path):
    out = tmp_path / "out"
    args = ["profile", str(models["plain"]), "-b", "onnxruntime-cpu,openvino-cpu", "--batch", "1", "2", "--threads", "1",
            *QUICK, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "openvino-cpu" in result.output
    data = json.loads((out / "latency.json").read_text())
    assert [(s["backend"], s["batch"]) for s in data["stats"]] == [
        ("onnxruntime-cpu", 1), ("onnxruntime-cpu", 2), ("openvino-cpu", 1), ("openvino-cpu", 2)]
    assert data["environment"]["versions"]["openvino"] and data["stats"][2]["versions"]["openvino_config"][
        "INFERENCE_PRECISION_HINT"] == "f32"


def test_fixed_batch_file_at_its_batch(models, tmp_path):
    result = CliRunner().invoke(app, ["profile", str(models["fixed"]), "--batch", "2", *QUICK, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output


BAD = {
    "missing file": (lambda m, t: [str(t / "nope.onnx")], "artifact not found"),
    "not onnx": (lambda m, t: [str(m["junk"])], "is not a readable ONNX model"),
    "fixed batch": (lambda m, t: [str(m["fixed"])], "fixed batch of 2: profile it with --batch 2"),
    "unknown backend": (lambda m, t: [str(m["plain"]), "--backend", "onnxruntime-gpu"], "did you mean"),
    "bad batch": (lambda m, t: [str(m["plain"]), "--batch", "0"], "--batch takes positive whole numbers"),
    "stray number": (lambda m, t: [str(m["plain"]), "8"], "use --batch 8"),
    "out is a file": (lambda m, t: [str(m["plain"]), "--out", str(m["junk"])], "exists and is not a folder"),
}
if backend_problem("onnxruntime-cuda"):
    BAD["unavailable backend"] = (lambda m, t: [str(m["plain"]), "-b", "onnxruntime-cuda"], "compressor[gpu]")
if backend_problem("tensorrt"):
    BAD["engine without tensorrt"] = (lambda m, t: [str(m["model"])], "compressor[trt]")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line_and_no_folder(models, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    make, message = BAD[case]
    result = CliRunner().invoke(app, ["profile", *make(models, tmp_path), *QUICK])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not list(tmp_path.glob("profile-*"))


def test_batches_after_flag_are_not_files(models, tmp_path):
    """`--batch 1 8 32` as in the docs: the bare numbers are batch sizes, not artifact files."""
    result = CliRunner().invoke(app, ["profile", str(models["plain"]), "--batch", "1", "2", "3", *QUICK,
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    batches = [s["batch"] for s in json.loads((tmp_path / "o" / "latency.json").read_text())["stats"]]
    assert batches == [1, 2, 3]
