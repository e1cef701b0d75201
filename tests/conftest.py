"""Shared fixtures of the top-level tests: a tiny DEFT workspace writer and a snapshot of a directory tree.

The core tests keep their own copies in tests/core/conftest.py; these serve the tests beside this file (the
command line, the pipeline configuration and the bad-input catalogue).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pytest

HEADER = ("input_path", "golden_path", "label", "object_name")


class TinyWorkspace:
    """Writes a DEFT workspace under `root`: images under images/, CSVs anywhere, rows as dicts."""

    TRAIN = "train/base/training_set.csv"
    VALIDATION = "train/base/validation_set.csv"
    KPI = "kpi/testing_set.csv"
    POOL = "augmentation/mining_pool/mining_pool.csv"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.images.mkdir(parents=True)

    def sample(
        self, board: str, tile: str, label: str = "PASS", *, ext: str = ".jpg", prefix: str = ""
    ) -> dict[str, str]:
        """Write the test and golden SolderLight images of one component; return its CSV row."""
        for side in ("test", "golden"):
            image = self.images / board / side / f"{tile}_SolderLight{ext}"
            image.parent.mkdir(parents=True, exist_ok=True)
            # Distinct bytes per file, so a mix-up of two files could never go unnoticed.
            image.write_bytes(f"{board}/{side}/{tile}".encode())
        return {
            "input_path": f"{prefix}{board}/test",
            "golden_path": f"{prefix}{board}/golden",
            "label": label,
            "object_name": tile,
        }

    def csv(self, relative: str, rows: Iterable[Mapping[str, str]], columns: Sequence[str] = HEADER) -> Path:
        lines = [",".join(columns)] + [",".join(row.get(column, "") for column in columns) for row in rows]
        return self.text(relative, "\n".join(lines) + "\n")

    def text(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def write_valid(self) -> None:
        """A workspace that passes the data check: four sets, both classes each, no shared sample."""
        self.csv(
            self.TRAIN,
            [self.sample("b1", "T00"), self.sample("b1", "T01", "open"), self.sample("b1", "T02", "open")],
        )
        self.csv(self.VALIDATION, [self.sample("b2", "T00"), self.sample("b2", "T01", "short")])
        self.csv(
            self.KPI,
            [
                self.sample("b3", "T00"),
                self.sample("b3", "T01", "open"),
                self.sample("b3", "T02", "short"),
                self.sample("b3", "T03"),
            ],
        )
        self.csv(self.POOL, [self.sample("b4", "T00"), self.sample("b4", "T01", "open")])


@pytest.fixture
def tiny_ws(tmp_path: Path) -> TinyWorkspace:
    return TinyWorkspace(tmp_path / "ws")


Snapshot = dict[str, tuple[str, int, str]]


def _snapshot(root: Path) -> Snapshot:
    entries: Snapshot = {".": ("dir", root.lstat().st_mtime_ns, "")}
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(directory, name)
            info = path.lstat()
            if path.is_symlink():
                entries[str(path.relative_to(root))] = ("link", info.st_mtime_ns, os.readlink(path))
            elif path.is_dir():
                entries[str(path.relative_to(root))] = ("dir", info.st_mtime_ns, "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entries[str(path.relative_to(root))] = ("file", info.st_mtime_ns, digest)
    return entries


@pytest.fixture
def snapshot_tree() -> Callable[[Path], Snapshot]:
    """A function: {relative path: (kind, mtime_ns, sha256)} of `root` and everything under it.

    Links are not followed. Comparing two snapshots catches a created, removed, renamed, rewritten or
    merely touched entry (a directory's mtime changes when an entry is added or removed in it).
    """
    return _snapshot
