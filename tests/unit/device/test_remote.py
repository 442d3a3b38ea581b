"""The ssh side of ``compress deploy --remote`` that needs no server: arguments, messages, staging."""

from __future__ import annotations

import json

import pytest

from compressor.artifacts import RunLayout
from compressor.device import DeployOptions
from compressor.device.folder import FinishedRun, check_device_name, default_device_name
from compressor.device.remote import Remote, Ssh, _adopt, _ssh_problem, remote_arguments, stage_files
from compressor.errors import DeviceError, UsageError


def test_remote_arguments_forward_every_device_option_in_order():
    options = DeployOptions(backends=("onnxruntime-cpu", "openvino-cpu"), name="orin",
                            overrides=("profile.threads=4", "gates.max_latency_ms=[{batch: 1, p50_ms: 2}]"))
    assert remote_arguments(options) == ["--name", "orin", "--backend", "onnxruntime-cpu", "--backend", "openvino-cpu",
                                         "--set", "profile.threads=4", "--set", "gates.max_latency_ms=[{batch: 1, p50_ms: 2}]"]
    assert remote_arguments(DeployOptions()) == []


@pytest.mark.parametrize("stderr, says", [
    ("ssh: Could not resolve hostname orin.local: Name or service not known", "cannot resolve the host name"),
    ("root@127.0.0.1: Permission denied (publickey).", "refused the login"),
    ("Host key verification failed.", "host key is unknown or changed"),
    ("ssh: connect to host 10.0.0.9 port 22: Connection refused", "nothing listens for ssh"),
    ("ssh: connect to host 10.0.0.9 port 22: Connection timed out", "timed out"),
    ("kex_exchange_identification: read: Connection reset by peer", "Connection reset by peer"),
    ("", "no message from ssh"),
])
def test_ssh_failures_become_one_line_with_the_fix(stderr, says):
    line = _ssh_problem("orin", stderr)
    assert line.startswith("ssh orin: ") and says in line and "\n" not in line


def test_ssh_options_are_non_interactive_and_bounded(tmp_path):
    ssh = Ssh(Remote(host="orin", compress="python3 -m compressor", ssh_config=tmp_path / "cfg", connect_timeout=7))
    assert ssh.options[:2] == ["-F", str(tmp_path / "cfg")]
    assert "BatchMode=yes" in ssh.options and "ConnectTimeout=7" in ssh.options
    assert ssh.compress == "python3 -m compressor"  # several words stay several words, each quoted


def test_missing_ssh_client_is_a_device_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeviceError, match="install OpenSSH's client"):
        Ssh(Remote(host="orin")).check_compressor()


def _run(tmp_path) -> FinishedRun:
    layout = RunLayout(tmp_path / "run")
    for path in (layout.report_json, layout.resolved_recipe, layout.env, layout.baseline_onnx, layout.pruned_onnx,
                 layout.root / "pruned" / "model.pt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    files = {"baseline_onnx": layout.baseline_onnx, "pruned_onnx": layout.pruned_onnx}
    return FinishedRun(layout=layout, recipe=None, report={}, files=files)


def test_staging_sends_the_report_recipe_and_onnx_files_only(tmp_path):
    staged = stage_files(_run(tmp_path), tmp_path / "stage")
    sent = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert sent == ["baseline/model.onnx", "env.json", "export/model.onnx", "recipe.resolved.yaml", "report.json"]


def test_adopting_the_fetched_device_folder_replaces_an_older_one(tmp_path):
    run = _run(tmp_path)
    old = run.layout.device("orin")
    old.mkdir(parents=True)
    (old / "stale.txt").write_text("old")
    fetched = tmp_path / "back" / "orin"
    fetched.mkdir(parents=True)
    (fetched / "device.json").write_text(json.dumps({"name": "orin", "passed": True}))
    summary, folder = _adopt(run, tmp_path / "back")
    assert summary["name"] == "orin" and folder == old and sorted(p.name for p in folder.iterdir()) == ["device.json"]
    assert not list(run.layout.devices.glob(".*"))
    with pytest.raises(DeviceError, match="no finished device folder"):
        _adopt(run, tmp_path / "nothing")


def test_device_names_are_folder_names():
    assert check_device_name("jetson-orin_1.2") == "jetson-orin_1.2"
    for bad in ("", "../x", "a b", "-x"):
        with pytest.raises(UsageError, match="--name"):
            check_device_name(bad)
    assert check_device_name(default_device_name())
