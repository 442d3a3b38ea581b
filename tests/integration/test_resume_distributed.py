"""Reliability end to end: a SIGKILLed run resumes to the same metrics; a 2-process torchrun (gloo) run holds
the same architecture on both ranks and lands within 1 point of the single-process run; runs are
deterministic."""

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


def test_sigkilled_run_resumes_to_identical_metrics(tmp_path):
    sets = [*FAST, "data.train.num_images=3000", "data.val_split=300", "data.test.num_images=500",
            "finetune.epochs=4", "data.batch_size=64"]
    straight = tmp_path / "straight"
    finish(compress("run", str(QUICKSTART), "--out", str(straight), sets=sets))

    killed = tmp_path / "killed"
    proc = compress("run", str(QUICKSTART), "--out", str(killed), sets=sets)
    checkpoint = killed / "pruned" / "finetune.ckpt.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert checkpoint.exists(), "the run ended before its first epoch checkpoint"
    assert not (killed / "report.json").exists()  # a killed run never looks complete
    assert json.loads((killed / "status.json").read_text())["status"] == "running"

    output = finish(compress("run", "--resume", str(killed)))
    assert "done before the resume" in output and "resumed after epoch" in output, output
    assert not checkpoint.exists()
    assert metrics(killed) == metrics(straight)


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    run = tmp_path / "done"
    finish(compress("run", str(QUICKSTART), "--out", str(run), sets=[*FAST, "data.train.num_images=600",
                                                                      "data.val_split=100", "finetune.epochs=1",
                                                                      "data.test.num_images=100"]))
    before = (run / "report.json").read_text()
    output = finish(compress("run", "--resume", str(run)))
    assert "had finished" in output and (run / "report.json").read_text() == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_matches_single_process(tmp_path):
    sets = [*FAST[:2], "profile.enabled=false", "export.parity_images=8"]
    probe = tmp_path / "probe.py"
    probe.write_text(RANK_PROBE)
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1", "RANK_PROBE_DIR": str(tmp_path)}
    single = tmp_path / "single"
    finish(compress("run", str(QUICKSTART), "--out", str(single), sets=sets))
    ddp = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), str(probe), "run", str(QUICKSTART), "--out", str(ddp),
               *[x for s in sets for x in ("--set", s)]]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["widths"] == rank1["widths"]  # pruning decided once, same architecture everywhere
    assert rank0["checksum"] == pytest.approx(rank1["checksum"], rel=1e-9)  # and the same weights after DDP
    a, b = (json.loads((run / "report.json").read_text()) for run in (single, ddp))
    assert a["pruned"]["macs"] == b["pruned"]["macs"]
    assert abs(a["pruned"]["accuracy"] - b["pruned"]["accuracy"]) <= 1.0, (a["pruned"], b["pruned"])
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())  # rank 0 wrote it all


def test_same_recipe_and_seed_give_identical_metrics(tmp_path):
    sets = [*FAST, "data.train.num_images=800", "data.val_split=100", "data.test.num_images=200",
            "finetune.epochs=2"]
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        finish(compress("run", str(QUICKSTART), "--out", str(run), sets=sets))
    assert metrics(runs[0]) == metrics(runs[1])
