"""``compress deploy`` on a finished (shrunk) quickstart run: here, and over a real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app

from .sshd import start_sshd
from .test_cli import QUICKSTART

TINY = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}", "data.train.num_images=400",
        "data.test.num_images=100", "data.val_split=50", "data.calibration_images=32", "finetune.epochs=0",
        "profile.batch_sizes=[1, 4]", "profile.iterations=3", "profile.repeats=2", "profile.warmup=1",
        "export.parity_images=8", "gates.max_accuracy_drop=null", "gates.min_macs_reduction_pct=null",
        "gates.max_latency_ms=[{batch: 1, p50_ms: 500}]"]
TIGHT = "gates.max_latency_ms=[{batch: 1, p50_ms: 0.0001}]"  # a device budget no machine meets
COMPRESS = str(Path(sys.executable).parent / "compress")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "run"
    result = invoke("run", str(QUICKSTART), "--out", str(out), *[x for o in TINY for x in ("--set", o)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A copy per test, so each sees only its own devices."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


OPENVINO_GATE = "gates.max_latency_ms=[{backend: openvino-cpu, batch: 4, p50_ms: 500}]"


def test_deploy_here_on_onnxruntime_and_openvino_writes_the_device_folder_and_a_report_section(run_copy):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'compressor[openvino]')")
    result = invoke("deploy", str(run_copy), "--name", "edge-box", "--backend", "onnxruntime-cpu,openvino-cpu",
                    "--set", OPENVINO_GATE)
    assert result.exit_code == 0, result.output
    folder = run_copy / "device" / "edge-box"
    assert {p.name for p in folder.iterdir()} >= {"device.json", "latency.json", "env.json", "report.md"}
    assert not list((run_copy / "device").glob(".*")), "no staging folder is left behind"
    summary = json.loads((folder / "device.json").read_text())
    assert summary["passed"] and [g["name"] for g in summary["gates"]] == [
        "max_latency_ms[openvino-cpu, batch 4]", "parity:baseline_onnx@openvino-cpu", "parity:pruned_onnx@openvino-cpu"]
    rows = {(s["artifact"], s["backend"], s["batch"]) for s in summary["latency"]}
    assert rows == {(a, b, n) for a in ("baseline_onnx", "pruned_onnx") for b in ("onnxruntime-cpu", "openvino-cpu")
                    for n in (1, 4)}
    assert all(p["max_abs_diff"] <= p["limit"] for p in summary["parity"])
    report = json.loads((run_copy / "report.json").read_text())
    assert report["devices"]["edge-box"]["gates"] == summary["gates"] and report["passed"] is True
    text = (run_copy / "report.md").read_text()
    assert "## Devices" in text and "| run host | edge-box |" in text and "| pruned_onnx | openvino-cpu | 4 | - |" in text


def test_deploy_without_backends_uses_the_recipes_and_its_gates(run_copy):
    result = invoke("deploy", str(run_copy), "--name", "plain")
    assert result.exit_code == 0, result.output
    summary = json.loads((run_copy / "device" / "plain" / "device.json").read_text())
    assert summary["backends"] == ["onnxruntime-cpu"] and summary["parity"] == []
    assert [g["name"] for g in summary["gates"]] == ["max_latency_ms[onnxruntime-cpu, batch 1]"]


def test_a_latency_gate_missed_on_the_device_only_exits_one(run_copy):
    result = invoke("deploy", str(run_copy), "--name", "slow-box", "--set", TIGHT)
    assert result.exit_code == 1, result.output
    report = json.loads((run_copy / "report.json").read_text())
    assert all(g["passed"] for g in report["gates"]), "the run host met its gates"
    device = report["devices"]["slow-box"]
    assert not device["passed"] and not device["gates"][0]["passed"]
    assert "FAIL" in result.output and "**FAIL**" in (run_copy / "device" / "slow-box" / "report.md").read_text()


@pytest.mark.parametrize("args, says", [
    (["--name", "bad/name"], "--name"),
    (["--set", "model.arch=resnet20"], "only gates.*, profile.*"),
    (["--backend", "onnxruntime-gpuu"], "unknown latency backend"),
    (["--backend", "torch-cpu"], "PyTorch module stays with the run"),
    (["--backend", "onnxruntime-cuda"], "not available here"),
    (["--ssh-config", "x"], "go with --remote"),
])
def test_bad_deploy_inputs_exit_two_with_one_line_and_write_nothing(run_copy, args, says):
    result = invoke("deploy", str(run_copy), *args)
    assert result.exit_code == 2, result.output
    assert says in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (run_copy / "device").exists() or not any((run_copy / "device").iterdir())


def test_a_folder_that_is_not_a_finished_run_exits_two(tmp_path, run_copy):
    assert invoke("deploy", str(tmp_path / "nope")).exit_code == 2
    (run_copy / "report.json").unlink()
    result = invoke("deploy", str(run_copy))
    assert result.exit_code == 2 and "not a finished compressor run" in result.output


def test_an_interrupted_deploy_leaves_no_device_folder(run_copy, monkeypatch):
    import compressor.profiling.latency as latency

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(latency, "measure", interrupted)
    result = CliRunner().invoke(app, ["deploy", str(run_copy), "--name", "box"])  # click turns Ctrl-C into Abort
    assert result.exit_code != 0
    assert not (run_copy / "device" / "box").exists() and not list((run_copy / "device").glob(".*"))
    assert "devices" not in json.loads((run_copy / "report.json").read_text())


# ------------------------------------------------------------------------------------------------ --remote
def remote(run: Path, sshd, *args: str, compress: str = COMPRESS, config: Path | None = None):
    return invoke("deploy", str(run), "--remote", "127.0.0.1", "--ssh-config", str(config or sshd.config),
                  "--remote-compress", compress, *args)


def test_remote_deploy_through_real_sshd_gives_the_local_result(run_copy, sshd):
    result = remote(run_copy, sshd, "--name", "remote-box")
    assert result.exit_code == 0, result.output
    summary = json.loads((run_copy / "device" / "remote-box" / "device.json").read_text())
    assert summary["passed"] and [g["name"] for g in summary["gates"]] == ["max_latency_ms[onnxruntime-cpu, batch 1]"]
    assert (run_copy / "device" / "remote-box" / "latency.json").is_file()
    report = json.loads((run_copy / "report.json").read_text())
    assert report["devices"]["remote-box"]["gates"] == summary["gates"]
    assert "| run host | remote-box |" in (run_copy / "report.md").read_text()
    assert "[127.0.0.1]" in result.output  # the device's own lines, marked


def test_remote_gate_miss_exits_one(run_copy, sshd):
    result = remote(run_copy, sshd, "--name", "remote-slow", "--set", TIGHT)
    assert result.exit_code == 1, result.output
    assert not json.loads((run_copy / "report.json").read_text())["devices"]["remote-slow"]["passed"]


def test_remote_problems_exit_two_with_one_line(run_copy, sshd, tmp_path):
    fake = tmp_path / "old-compress"
    fake.write_text("#!/bin/sh\necho 'compressor 0.0.1'\n")
    fake.chmod(0o755)
    cases = [
        (invoke("deploy", str(run_copy), "--remote", "no-such-host.invalid"), "resolve"),
        (remote(run_copy, sshd, config=sshd.wrong_key), "refused the login"),
        (remote(run_copy, sshd, compress=str(tmp_path / "absent" / "compress")), "compressor is not installed"),
        (remote(run_copy, sshd, compress=str(fake)), "has compressor 0.0.1"),
        (remote(run_copy, sshd, "--set", "model.arch=x"), "only gates.*, profile.*"),
    ]
    for result, says in cases:
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], result.output
    assert not (run_copy / "device").exists()
