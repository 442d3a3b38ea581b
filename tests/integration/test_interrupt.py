"""SIGINT and SIGTERM stop a real ``compress run`` in any stage: one line naming the stage and the resume command,
``status.json`` ``interrupted`` with the finished stages, exit 130 / 143; ``--resume`` goes on and finishes with
the metrics of the uninterrupted run, and re-running into the folder suggests ``--resume``.

The model is a user's own (``model.arch: pausing_net:build``) whose code waits in a chosen stage (read from
``compressor.progress.current_stage``) after writing a marker, so that the signal lands inside that stage and
not by the luck of timing. Two chains cover every stage with both signals: each process of a chain is
interrupted in the next stage and the following ``--resume`` goes on from there. A third chain (SIGINT first
only, to keep the time down) does the same with a custom task (``custom_tasks.py``: its own loaders, loss and
metric, a two-output network, lower is better)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import custom_tasks as ct

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SETS = ["model.arch=pausing_net:build", "model.input_shape=[3, 32, 32]", "model.checkpoint=null",
        "pruning.latency_target=null", "pruning={ratio: 0.5}", "data.train.num_images=256", "data.val_split=64",
        "data.test.num_images=64", "data.calibration_images=32", "data.batch_size=64", "finetune.epochs=2",
        "profile.enabled=false", "export.parity_images=8", "gates.max_accuracy_drop=null"]
STAGES = ["load", "baseline", "prune", "finetune", "export"]
# the forward call in the stage at which the model waits: fine-tuning is stopped in its second epoch (after
# the first epoch's checkpoint: 4 steps of 64 images and the validation pass; the custom task's: 10 steps of 32
# and 2 validation batches)
CALL = {"classification": {"finetune": 8}, "custom": {"finetune": 16}}
# the custom task's recipe: the tiny task of custom_tasks.py on a model that pauses (pausing_net:build_custom)
CUSTOM = ct.recipe(None, name="pausing_custom", model={"arch": "pausing_net:build_custom"}, pruning={"ratio": 0.5},
                   finetune={"epochs": 2}, gates={"max_accuracy_drop": None})

PAUSING_NET = """
import os, pathlib, time
import torch.nn as nn
from compressor.progress import current_stage

calls = {}


def pause():
    stage = os.environ.get("PAUSE_IN")
    if not stage or current_stage() != stage:
        return
    calls[stage] = calls.get(stage, 0) + 1
    if calls[stage] == int(os.environ.get("PAUSE_AT", "1")):
        pathlib.Path(os.environ["PAUSE_MARKER"]).write_text(stage)
        time.sleep(300)  # the test's signal ends it


class PausingNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        pause()
        return self.fc(self.features(x))


def build(num_classes=10):
    pause()
    return PausingNet(num_classes)


from tests.integration.custom_tasks import TwoHeads  # noqa: E402  (the repository is on PYTHONPATH)


class PausingTwoHeads(TwoHeads):
    def forward(self, x):
        pause()
        return super().forward(x)


def build_custom(width=16):
    pause()
    return PausingTwoHeads(width)
"""


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("code")
    (folder / "pausing_net.py").write_text(PAUSING_NET)
    ct.write_recipe(folder / "custom.yaml", data=CUSTOM)
    return folder


def run_args(task: str, code: Path, run: Path) -> list[str]:
    """``compress run`` of the shrunk quickstart on the pausing net, or of the custom task's recipe."""
    if task == "classification":
        return ["run", str(QUICKSTART), "--out", str(run), *[x for s in SETS for x in ("--set", s)]]
    return ["run", str(code / "custom.yaml"), "--out", str(run)]


def compress(code: Path, args: list[str], pause_in: str | None = None, marker: Path | None = None, call: int = 1):
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(code), str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("PAUSE_IN", None)
    if pause_in:
        env.update(PAUSE_IN=pause_in, PAUSE_AT=str(call), PAUSE_MARKER=str(marker))
    # a shell's background job starts with SIGINT ignored, which Python keeps: give the child the default
    return subprocess.Popen([sys.executable, "-m", "compressor", *args], cwd=code, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt(proc: subprocess.Popen, marker: Path, signum: int) -> str:
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the run never reached its pause: {proc.communicate(timeout=60)[0]}"
    marker.unlink()
    proc.send_signal(signum)
    return proc.communicate(timeout=120)[0]


def metrics(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    tune = json.loads((run / "pruned" / "finetune.json").read_text())
    epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in tune["epochs"]]
    return {"baseline": report["baseline"], "pruned": report["pruned"], "reduction": report["reduction"],
            "parity": report["parity"], "widths": report["widths"], "epochs": epochs}


@pytest.fixture(scope="module")
def straight(code, tmp_path_factory):
    """task -> the metrics of its uninterrupted run (each run once, when a test first asks)."""
    found = {}

    def of(task: str) -> dict:
        if task not in found:
            run = tmp_path_factory.mktemp(f"straight-{task}") / "run"
            proc = compress(code, run_args(task, code, run))
            output = proc.communicate(timeout=600)[0]
            assert proc.returncode == 0, output
            found[task] = metrics(run)
        return found[task]

    return of


@pytest.mark.slow
@pytest.mark.parametrize("task, first", [("classification", signal.SIGINT), ("classification", signal.SIGTERM),
                                         ("custom", signal.SIGINT)],
                         ids=["SIGINT-first", "SIGTERM-first", "custom-SIGINT-first"])
def test_every_stage_interrupted_then_resumed_ends_with_the_uninterrupted_metrics(code, straight, tmp_path, task, first):
    run, marker = tmp_path / "run", tmp_path / "paused"
    other = signal.SIGTERM if first == signal.SIGINT else signal.SIGINT
    args = run_args(task, code, run)
    for i, stage in enumerate(STAGES):
        signum = first if i % 2 == 0 else other
        proc = compress(code, args if i == 0 else ["run", "--resume", str(run), "--trust-model-code"], stage, marker,
                        CALL[task].get(stage, 1))
        output = interrupt(proc, marker, signum)
        assert proc.returncode == (130 if signum == signal.SIGINT else 143), output
        name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
        assert (f"interrupted ({name}) in stage {stage}; continue with `compress run --resume {run}`"
                in output), output
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "interrupted" and status["stage"] == stage and status["signal"] == name
        assert status["completed_stages"] == STAGES[1:i], status  # load is not a recorded stage
        assert not (run / "report.json").exists()
        if i == 0:  # the same command again points at --resume, not at --overwrite
            again = compress(code, args)
            hint = again.communicate(timeout=120)[0]
            assert again.returncode == 2 and f"continue it with `compress run --resume {run}`" in hint, hint
        if stage == "export":  # this process went on with fine-tuning after its first epoch
            assert "resumed after epoch 1" in output, output
    proc = compress(code, ["run", "--resume", str(run), "--trust-model-code"])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert metrics(run) == straight(task)
