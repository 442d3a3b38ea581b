"""Run records: versioned JSON per stage, plain state_dicts beside them, never a pickle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from compressor import __version__
from compressor.artifacts import RunLayout
from compressor.errors import OutputDirError
from compressor.ledger import Ledger

ORDER = ("baseline", "prune", "finetune", "export", "profile")


@dataclass(frozen=True)
class Result:
    value: float
    path: Path
    tags: tuple[str, ...]


def ledger(tmp_path, resume=True, write=True) -> Ledger:
    return Ledger(RunLayout(tmp_path), ORDER, resume=resume, write=write)


def record_all(tmp_path, names=ORDER) -> None:
    fresh = ledger(tmp_path, resume=False)
    for name in names:
        fresh.record(name, Result(1.5, tmp_path / "export" / "model.onnx", ("a",)), 2.0,
                     state={"w": torch.ones(2)} if name in ("prune", "finetune") else None)


def test_a_record_round_trips_with_paths_relative_to_the_run_folder(tmp_path):
    record_all(tmp_path, ["baseline", "prune"])
    data = json.loads((tmp_path / ".stages" / "prune.json").read_text())
    assert data["record"] == 1 and data["compressor"] == __version__ and data["stage"] == "prune"
    assert data["result"]["path"] == "export/model.onnx" and data["state_dict"] == ".stages/prune.state.pt"
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)  # a run folder can be moved (or downloaded as a CI artifact) and still resumed
    got = ledger(moved).recorded("prune", Result, network=True)
    assert got.result == Result(1.5, moved / "export" / "model.onnx", ("a",)) and got.seconds == 2.0
    assert torch.equal(got.state["w"], torch.ones(2))
    assert ledger(moved).recorded("baseline", Result).state is None


def test_ledger_ignores_records_after_a_stage_that_runs_again(tmp_path):
    record_all(tmp_path, ["baseline", "finetune"])  # prune's record is gone: finetune's describes another network
    resumed = ledger(tmp_path)
    assert resumed.recorded("baseline", Result) is not None
    assert resumed.recorded("prune", Result) is None and resumed.recorded("finetune", Result) is None
    assert not ledger(tmp_path, resume=False).has("baseline")


def test_a_stage_recorded_anew_drops_what_later_stages_left(tmp_path):
    record_all(tmp_path, ["baseline", "finetune", "export"])
    layout = RunLayout(tmp_path)
    layout.pruned.mkdir()
    for checkpoint in layout.checkpoints:
        checkpoint.write_text("x")
    resumed = ledger(tmp_path)
    assert resumed.recorded("baseline", Result) is not None and resumed.recorded("prune", Result) is None
    resumed.record("prune", Result(0.0, tmp_path, ()), 2.0)  # prune ran again: a different network from here on
    assert layout.record("prune").exists()
    assert not layout.record("finetune").exists() and not layout.state("finetune").exists()
    assert not layout.record("export").exists() and not any(c.exists() for c in layout.checkpoints)
    assert resumed.has("prune") and not resumed.has("finetune")
    status = json.loads(layout.status.read_text())
    assert status["status"] == "running" and status["completed_stages"] == ["baseline", "prune"]


def test_other_ranks_write_nothing(tmp_path):
    ledger(tmp_path, resume=False, write=False).record("baseline", Result(1.0, tmp_path, ()), 1.0)
    assert not (tmp_path / ".stages").exists()


@pytest.mark.parametrize("edit,match", [
    (lambda d: {**d, "compressor": "0.0.1"}, r"written by compressor 0.0.1, this is .*run again without --resume"),
    (lambda d: {**d, "record": 99}, r"not a compressor stage record of format 1; run again without --resume"),
    (lambda d: {**d, "result": {"value": 1.0}}, r"does not fit this compressor's prune result \(result: Result fields"),
    (lambda d: {**d, "result": {**d["result"], "value": "high"}}, r"result.value: expected"),
    (lambda d: {k: v for k, v in d.items() if k != "seconds"}, r"not a well-formed record of stage prune"),
    (lambda d: {**d, "seconds": "long"}, r"not a well-formed record of stage prune"),
    (lambda d: {**d, "stage": "export"}, r"not a well-formed record of stage prune"),
    (lambda d: {**d, "state_dict": "../elsewhere.pt"}, r"names the weights '../elsewhere.pt' where this stage's are"),
    (lambda d: {**d, "state_dict": None}, r"names the weights None where this stage's are '.stages/prune.state.pt'"),
])
def test_a_record_from_another_version_is_one_clear_line(tmp_path, edit, match):
    record_all(tmp_path, ["baseline", "prune"])
    path = RunLayout(tmp_path).record("prune")
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(OutputDirError, match=match):
        ledger(tmp_path).recorded("prune", Result, network=True)


def test_unreadable_records_and_foreign_state_files_are_refused(tmp_path):
    record_all(tmp_path, ["baseline", "prune"])
    layout = RunLayout(tmp_path)
    torch.save({"w": torch.ones(1), "extra": Path("x")}, layout.state("prune"))  # a Path: not a plain state_dict
    with pytest.raises(OutputDirError, match=r"prune.state.pt: cannot read these recorded weights as a plain state_dict"):
        ledger(tmp_path).recorded("prune", Result, network=True)
    layout.record("baseline").write_bytes(b"\x80\x04 not json")
    with pytest.raises(OutputDirError, match=r"baseline.json: cannot read this stage record"):
        ledger(tmp_path).recorded("baseline", Result)


def test_pickled_records_of_an_earlier_compressor_are_refused_not_loaded(tmp_path):
    (tmp_path / ".stages").mkdir()
    torch.save({"result": None}, tmp_path / ".stages" / "baseline.pt")
    with pytest.raises(OutputDirError, match=r"baseline.pt are pickled stage records of an earlier compressor"):
        ledger(tmp_path)
    assert ledger(tmp_path, resume=False).completed == []  # a new run (--overwrite) is not bothered
    assert ledger(tmp_path, write=False).completed == []  # the other torchrun ranks leave the check to rank 0
