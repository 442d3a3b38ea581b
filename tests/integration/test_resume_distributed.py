"""Reliability end to end: a SIGKILLed run resumes to the same metrics; a 2-process torchrun (gloo) run holds
the same architecture on both ranks and lands within 1 point of the single-process run; runs are
deterministic. Each test runs the (shrunk) quickstart classifier and the tiny custom task of ``custom_tasks.py``
(its own loaders, loss and metric, two outputs, lower is better)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import custom_tasks as ct

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
FAST = ["pruning.latency_target=null", "pruning={macs_reduction_pct: 50, round_to: 8}",
         "profile.enabled=false", "export.parity_images=8", "data.calibration_images=64", "gates={max_accuracy_drop: null}"]

# Runs the CLI like `python -m compressor`, and records the network each rank fine-tuned (test instrumentation).
RANK_PROBE = """
import json, os, sys
import compressor.stages as stages
from compressor.cli import main

original = stages.finetune

def probe(ctx, model, *args, **kwargs):
    result = original(ctx, model, *args, **kwargs)
    widths = {n: list(p.shape) for n, p in model.state_dict().items() if p.ndim > 1}
    checksum = sum(float(p.double().abs().sum()) for p in model.state_dict().values() if p.is_floating_point())
    out = os.environ["RANK_PROBE_DIR"]
    with open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
        json.dump({"widths": widths, "checksum": checksum}, f)
    return result

stages.finetune = probe
sys.argv[0] = "compress"
main()
"""


TASKS = ["classification", "custom"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """The tiny custom task's trained baseline, made when first asked for (and shared with the other modules'
    through the base temp folder)."""
    return lambda: ct.checkpoint(tmp_path_factory.getbasetemp() / "custom_task")


def job(task: str, folder: Path, checkpoint, sets: list[str], custom: dict) -> tuple[list[str], list[str]]:
    """(the `compress run` arguments before --out, the extra `--resume` arguments) of ``task``: the quickstart
    with ``sets``, or the tiny custom task's recipe with the ``custom`` sections, written into ``folder``
    (resuming it calls its own code, so it needs --trust-model-code)."""
    if task == "classification":
        return ["run", str(QUICKSTART), *[x for s in sets for x in ("--set", s)]], []
    sections = {"profile": {"enabled": False}, "gates": {"max_accuracy_drop": None}, **custom}
    recipe = ct.write_recipe(folder / "custom.yaml", checkpoint(), **sections)
    return ["run", str(recipe)], ["--trust-model-code"]


def compress(*args: str, sets=(), **kwargs) -> subprocess.Popen:
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "compressor", *args, *[x for s in sets for x in ("--set", s)]]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def finish(proc: subprocess.Popen, timeout: int = 600) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output
    return output


def metrics(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    tune = json.loads((run / "pruned" / "finetune.json").read_text())
    epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in tune["epochs"]]
    return {"baseline": report["baseline"], "pruned": report["pruned"], "reduction": report["reduction"],
            "parity": report["parity"], "epochs": epochs, "best_epoch": tune["best_epoch"]}


@pytest.mark.parametrize("task", TASKS)
def test_sigkilled_run_resumes_to_identical_metrics(task, tiny_checkpoint, tmp_path):
    sets = [*FAST, "data.train.num_images=3000", "data.val_split=300", "data.test.num_images=500",
            "finetune.epochs=4", "data.batch_size=64"]
    # the tiny task's epochs take a tenth of a second: enough of them that the kill lands inside fine-tuning
    args, trust = job(task, tmp_path, tiny_checkpoint, sets, {"finetune": {"epochs": 24}})
    straight = tmp_path / "straight"
    finish(compress(*args, "--out", str(straight)))

    killed = tmp_path / "killed"
    proc = compress(*args, "--out", str(killed))
    checkpoint = killed / "pruned" / "finetune.ckpt.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert checkpoint.exists(), "the run ended before its first epoch checkpoint"
    assert not (killed / "report.json").exists()  # a killed run never looks complete
    assert json.loads((killed / "status.json").read_text())["status"] == "running"

    output = finish(compress("run", "--resume", str(killed), *trust))
    assert "done before the resume" in output and "resumed after epoch" in output, output
    assert not checkpoint.exists()
    assert metrics(killed) == metrics(straight)


@pytest.mark.parametrize("task", TASKS)
def test_resume_of_a_finished_run_does_nothing(task, tiny_checkpoint, tmp_path):
    run = tmp_path / "done"
    args, trust = job(task, tmp_path, tiny_checkpoint, [*FAST, "data.train.num_images=600", "data.val_split=100",
                                                   "finetune.epochs=1", "data.test.num_images=100"],
                      {"finetune": {"epochs": 1}})
    finish(compress(*args, "--out", str(run)))
    before = (run / "report.json").read_text()
    output = finish(compress("run", "--resume", str(run), *trust))
    assert "had finished" in output and (run / "report.json").read_text() == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("task", TASKS)
def test_two_process_gloo_run_matches_single_process(task, tiny_checkpoint, tmp_path):
    sets = [*FAST[:2], "profile.enabled=false", "export.parity_images=8"]
    args, _ = job(task, tmp_path, tiny_checkpoint, sets, {"finetune": {"epochs": 3}, "gates": {"max_accuracy_drop": 5.0}})
    probe = tmp_path / "probe.py"
    probe.write_text(RANK_PROBE)
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1", "RANK_PROBE_DIR": str(tmp_path)}
    single = tmp_path / "single"
    finish(compress(*args, "--out", str(single)))
    ddp = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), str(probe), *args, "--out", str(ddp)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["widths"] == rank1["widths"]  # pruning decided once, same architecture everywhere
    assert rank0["checksum"] == pytest.approx(rank1["checksum"], rel=1e-9)  # and the same weights after DDP
    a, b = (json.loads((run / "report.json").read_text()) for run in (single, ddp))
    assert a["pruned"]["macs"] == b["pruned"]["macs"]
    assert abs(a["pruned"]["accuracy"] - b["pruned"]["accuracy"]) <= 1.0, (a["pruned"], b["pruned"])
    assert a["baseline"] == b["baseline"]  # measured by rank 0 alone, before any training
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())  # rank 0 wrote it all
    if task == "custom":
        assert b["task"] == a["task"] and b["task"]["direction"] == "lower"
        assert b["finetune"]["epochs"] == 3 and len(b["finetune"]["log"]) == 3


@pytest.mark.parametrize("task", TASKS)
def test_same_recipe_and_seed_give_identical_metrics(task, tiny_checkpoint, tmp_path):
    sets = [*FAST, "data.train.num_images=800", "data.val_split=100", "data.test.num_images=200",
            "finetune.epochs=2"]
    args, _ = job(task, tmp_path, tiny_checkpoint, sets, {"finetune": {"epochs": 2}})
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        finish(compress(*args, "--out", str(run)))
    assert metrics(runs[0]) == metrics(runs[1])
