"""Atomic writes: the destination holds the old or the new content, never a mix, and no temporary remains."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path

import pytest

from aoi_pipeline.core import files
from aoi_pipeline.core.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    directory_flock,
    sha256_file,
)


def test_write_bytes_creates_the_file_with_exactly_the_bytes(tmp_path: Path) -> None:
    target = tmp_path / "blob.bin"
    payload = bytes(range(256)) * 3
    atomic_write_bytes(target, payload)
    assert target.read_bytes() == payload
    assert sorted(os.listdir(tmp_path)) == ["blob.bin"]


def test_write_text_replaces_old_content_and_keeps_line_endings(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("old content that is longer than the new one\n")
    atomic_write_text(target, "a\r\nb\n")
    assert target.read_bytes() == b"a\r\nb\n"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_write_json_keeps_insertion_order_indent_two_and_a_trailing_newline(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"zeta": 1, "alpha": ["é", 2.5]})
    assert target.read_text(encoding="utf-8") == '{\n  "zeta": 1,\n  "alpha": [\n    "é",\n    2.5\n  ]\n}\n'


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {"x": object()}])
def test_write_json_refuses_what_json_cannot_hold_without_touching_the_file(tmp_path: Path, bad) -> None:
    target = tmp_path / "doc.json"
    target.write_text('{"kept": true}\n')
    with pytest.raises((ValueError, TypeError)):
        atomic_write_json(target, bad)
    assert json.loads(target.read_text()) == {"kept": True}
    assert sorted(os.listdir(tmp_path)) == ["doc.json"]


def test_a_crash_before_the_rename_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def crash(*_args, **_kwargs):
        raise OSError("simulated power cut before rename")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="simulated power cut"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_failing_fsync_removes_the_temporary_and_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def broken_fsync(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_the_data_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write_bytes(tmp_path / "x", b"data")
    # file fsync, rename, then the directory fsync that makes the rename durable
    assert calls == ["fsync", "replace", "fsync"]


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "private.json"
    target.write_text("{}")
    target.chmod(0o600)
    atomic_write_json(target, {"a": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_missing_directory_is_an_error_not_a_silent_mkdir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "absent" / "f.txt", "x")
    assert os.listdir(tmp_path) == []


def test_sha256_file_matches_hashlib_over_the_whole_content(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    target.write_bytes(payload)
    assert sha256_file(target) == hashlib.sha256(payload).hexdigest()


def test_sha256_of_an_empty_file_is_the_known_empty_digest(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.write_bytes(b"")
    assert sha256_file(target) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_directory_flock_excludes_a_second_holder(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    with directory_flock(tmp_path):
        probe = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    probe = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(probe)
