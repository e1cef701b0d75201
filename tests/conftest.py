"""Shared fixtures of every test: the one tiny DEFT workspace builder and a snapshot of a directory tree.

`WorkspaceBuilder` writes workspace files (images under images/, CSVs anywhere, rows as dicts); the `ws` and
`tiny_ws` fixtures give one rooted at tmp_path/ws. The core tests, the command line, the pipeline
configuration and the bad-input catalogue all build their workspaces with it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

HEADER = ("input_path", "golden_path", "label", "object_name")
# Existence is what the validators check; the bytes of a 1x1 grey PNG keep the files realistic.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63600000000200015d0b6c1b0000000049454e44ae426082"
)


class WorkspaceBuilder:
    """Writes a DEFT workspace under `root`: images under images/, CSVs anywhere, rows as dicts."""

    TRAIN = "train/base/training_set.csv"
    VALIDATION = "train/base/validation_set.csv"
    KPI = "kpi/testing_set.csv"
    POOL = "augmentation/mining_pool/mining_pool.csv"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.images.mkdir(parents=True)

    def image(self, relative: str, data: bytes = PNG_1X1, *, under: Path | None = None) -> Path:
        path = (under or self.images) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def sample(
        self,
        board: str,
        tile: str,
        label: str = "PASS",
        *,
        lights: Sequence[str] = ("SolderLight",),
        ext: str = ".jpg",
        prefix: str = "",
        **extra: str,
    ) -> dict[str, str]:
        """Write the test and golden images of one component; return its CSV row (paths get `prefix`)."""
        for side in ("test", "golden"):
            for light in lights:
                # Distinct bytes per file, so a mix-up of two files could never go unnoticed.
                self.image(f"{board}/{side}/{tile}_{light}{ext}", data=f"{board}/{side}/{tile}/{light}".encode())
        row = {
            "input_path": f"{prefix}{board}/test",
            "golden_path": f"{prefix}{board}/golden",
            "label": label,
            "object_name": tile,
        }
        row.update(extra)
        return row

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
def ws(tmp_path: Path) -> WorkspaceBuilder:
    return WorkspaceBuilder(tmp_path / "ws")


@pytest.fixture
def tiny_ws(ws: WorkspaceBuilder) -> WorkspaceBuilder:
    """The same builder under the name the command-line and catalogue tests use."""
    return ws


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


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One Prefect test server for the session (flow and fault-injection tests); yields its API URL, which
    processes the tests start use to reach it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


FAKE_RUNTIME = Path(__file__).resolve().parent / "fake_runtime.py"


@pytest.fixture
def fake_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Route every job of an in-process flow to the millisecond fake runtime; returns the file listing its calls."""
    import sys

    import tasks.jobs
    from aoi_pipeline.jobs.gpu import GpuSlots
    from aoi_pipeline.jobs.local import LocalLauncher

    calls = tmp_path / "runtime_calls.jsonl"
    monkeypatch.setenv("FAKE_RUNTIME_CALLS", str(calls))
    launcher = LocalLauncher(
        gpu_slots=GpuSlots([]), command_resolver=lambda job: [sys.executable, str(FAKE_RUNTIME), job.action]
    )
    monkeypatch.setattr(tasks.jobs, "_LAUNCHER", launcher)
    return calls
