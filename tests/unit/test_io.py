"""Atomic writes: no partial file under the final name, permissions follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from compressor._io import write_atomic, write_json, write_text


def test_write_text_and_json(tmp_path):
    write_text(tmp_path / "a" / "x.txt", "hello")
    write_json(tmp_path / "y.json", {"p": tmp_path, "n": 1})
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert '"n": 1' in (tmp_path / "y.json").read_text()


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
