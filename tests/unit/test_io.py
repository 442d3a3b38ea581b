"""Atomic writes: no partial file under the final name, permissions follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from compressor._io import write_atomic, write_json, write_text


def test_write_text_and_json(tmp_path):
    import json

    import numpy as np

    assert write_text(tmp_path / "a" / "x.txt", "hello") == tmp_path / "a" / "x.txt"  # parent folders are made
    write_json(tmp_path / "y.json", {"p": tmp_path / "sub", "n": 1, "f": np.float32(0.5), "a": np.arange(2)})
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert json.loads((tmp_path / "y.json").read_text()) == {"p": str(tmp_path / "sub"), "n": 1, "f": 0.5, "a": [0, 1]}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(tmp_path / "z.json", {"x": object()})
    assert not (tmp_path / "z.json").exists()


def test_failed_write_leaves_nothing(tmp_path):
    def boom(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "out.bin", boom)
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
