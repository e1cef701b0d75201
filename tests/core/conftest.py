"""Fixtures for the core tests: tiny DEFT workspaces built in tmp_path and a snapshot of a directory tree."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pytest

HEADER = ("input_path", "golden_path", "label", "object_name")
# Existence is what the validators check; the bytes of a 1x1 grey PNG keep the files realistic.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63600000000200015d0b6c1b0000000049454e44ae426082"
)


class WorkspaceBuilder:
    """Writes DEFT workspace files: images under images/, CSVs anywhere, rows as dicts."""

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
        """Create the test and golden images of one component; return its CSV row (paths get `prefix`)."""
        for side in ("test", "golden"):
            for light in lights:
                self.image(f"{board}/{side}/{tile}_{light}{ext}", data=f"{board}{side}{tile}{light}".encode())
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


@pytest.fixture
def ws(tmp_path: Path) -> WorkspaceBuilder:
    return WorkspaceBuilder(tmp_path / "ws")


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[int, str]]]:
    """A function returning {relative path: (mtime_ns, sha256)} for every entry under a directory."""

    def take(root: Path) -> dict[str, tuple[int, str]]:
        result = {}
        for path in sorted(root.rglob("*")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            result[str(path.relative_to(root))] = (path.stat().st_mtime_ns, digest)
        return result

    return take
