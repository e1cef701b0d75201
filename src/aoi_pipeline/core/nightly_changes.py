"""What changed in a workspace since the last night, by content, and whether the deployed model drifted.

A row's content hash is the SHA-256 of its label and the bytes of every image file it names (test and golden),
so a renamed file is not new and a relabelled or re-shot row is. A snapshot keeps, per labelled set
(validation, KPI, confirm), each row's identity (its normalised paths and object name) with its content hash,
and for the mining pool the set of content hashes. Comparing tonight's snapshot with the last night's gives
the new pool rows, the rows appended to each labelled set, and the rows changed or removed there (which take
a night outside its approved policy). Drift: the deployed model's FAR on the newly labelled rows, at its own
threshold, against its recorded FAR plus the run-to-run spread. Pure apart from reading the files it hashes.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aoi_pipeline.core.dataset import PASS_LABEL, image_files, read_dataset_csv
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.mining_pool import ResolvedPool
from aoi_pipeline.errors import StateError

VALIDATION, KPI, CONFIRM, POOL = "validation", "kpi", "confirm", "pool"
LABELLED_SETS = (VALIDATION, KPI, CONFIRM)
SNAPSHOT_FILE = "seen.json"


def _norm(path: str) -> str:
    cleaned = posixpath.normpath(path.strip().replace("\\", "/"))
    return "" if cleaned == "." else cleaned


def row_key(row: Mapping[str, str]) -> str:
    """A labelled row's identity: test directory, golden directory and object name (not its content)."""
    return "|".join((_norm(row.get("input_path", "")), _norm(row.get("golden_path", "")), row.get("object_name", "")))


def content_hash(label: str, files: Iterable[Path]) -> str:
    """SHA-256 of the label and the bytes of each file (a missing file hashes as its absence)."""
    digest = hashlib.sha256(label.strip().encode("utf-8"))
    for path in files:
        digest.update(b"\0")
        try:
            digest.update(Path(path).read_bytes())
        except FileNotFoundError:
            digest.update(b"missing:" + str(path).encode("utf-8"))
    return digest.hexdigest()


def labelled_set_hashes(csv_path: Path, *, images_dir: Path, lights: Sequence[str], image_ext: str) -> dict[str, str]:
    """{row identity: content hash} of a labelled CSV; empty when the file does not exist."""
    if not Path(csv_path).is_file():
        return {}
    rows = read_dataset_csv(Path(csv_path)).rows
    return {
        row_key(row): content_hash(
            row["label"], image_files(row, images_dir=images_dir, lights=lights, image_ext=image_ext)
        )
        for row in rows
    }


def pool_row_hash(row: Mapping[str, str], images_root: Path) -> str:
    """The content hash of a resolved pool row (its test image, its golden image when it has one)."""
    files = [Path(images_root, row["filepath"])]
    if row.get("golden_filepath"):
        files.append(Path(images_root, row["golden_filepath"]))
    return content_hash(row.get("label", ""), files)


def pool_hashes(pool: ResolvedPool) -> list[str]:
    """Content hashes of the pool's rows, in row order."""
    return [pool_row_hash(row, pool.images_root) for row in pool.rows]


@dataclass(frozen=True)
class Snapshot:
    """What a night saw: the labelled sets by row identity, and the pool's content hashes."""

    labelled: Mapping[str, Mapping[str, str]]
    pool: frozenset[str]

    def to_dict(self) -> dict[str, Any]:
        return {"labelled": {name: dict(rows) for name, rows in self.labelled.items()}, "pool": sorted(self.pool)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Snapshot:
        return cls(
            labelled={str(name): {str(k): str(v) for k, v in rows.items()} for name, rows in raw["labelled"].items()},
            pool=frozenset(str(item) for item in raw["pool"]),
        )


@dataclass(frozen=True)
class Changes:
    """Tonight against the last night: new pool hashes, and per labelled set the appended/changed/removed rows."""

    new_pool: frozenset[str]
    appended: Mapping[str, tuple[str, ...]]
    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    removed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def nothing_new(self) -> bool:
        return not self.new_pool and not any(self.appended.values())

    def rows_added(self) -> dict[str, int]:
        """Rows added by source: the pool and each labelled set."""
        return {POOL: len(self.new_pool), **{name: len(self.appended.get(name, ())) for name in LABELLED_SETS}}

    def newly_labelled(self) -> frozenset[str]:
        """Identities of the rows appended to the KPI and confirm sets (where drift is measured)."""
        return frozenset(key for name in (KPI, CONFIRM) for key in self.appended.get(name, ()))

    def breaches(self) -> list[str]:
        """One line per labelled set with rows changed or removed (appended rows stay inside a policy)."""
        lines = []
        for name in LABELLED_SETS:
            changed, removed = self.changed.get(name, ()), self.removed.get(name, ())
            if changed or removed:
                example = (changed or removed)[0]
                lines.append(
                    f"rows changed or removed in the {name} set: {len(changed)} changed, {len(removed)} removed "
                    f"(first: {example})"
                )
        return lines


def compare(previous: Snapshot, current: Snapshot) -> Changes:
    """What is new, changed and removed in `current` since `previous`."""
    appended: dict[str, tuple[str, ...]] = {}
    changed: dict[str, tuple[str, ...]] = {}
    removed: dict[str, tuple[str, ...]] = {}
    for name in LABELLED_SETS:
        before, now = previous.labelled.get(name, {}), current.labelled.get(name, {})
        appended[name] = tuple(sorted(key for key in now if key not in before))
        changed[name] = tuple(sorted(key for key in now if key in before and now[key] != before[key]))
        removed[name] = tuple(sorted(key for key in before if key not in now))
    return Changes(new_pool=current.pool - previous.pool, appended=appended, changed=changed, removed=removed)


def read_snapshot(nightly_dir: Path) -> Snapshot | None:
    path = Path(nightly_dir) / SNAPSHOT_FILE
    if not path.is_file():
        return None
    try:
        return Snapshot.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise StateError.at(
            str(path),
            f"is not a snapshot of the workspace ({error!r})",
            "delete it: the next policy approval records a fresh one (every pool row then counts as seen)",
        ) from None


def write_snapshot(nightly_dir: Path, snapshot: Snapshot) -> None:
    Path(nightly_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(nightly_dir) / SNAPSHOT_FILE, snapshot.to_dict())


@dataclass(frozen=True)
class Drift:
    """The deployed model on the newly labelled rows, against its recorded figure."""

    far_pct: float | None
    recorded_far_pct: float | None
    spread: float
    pass_rows: int

    @property
    def drifted(self) -> bool:
        if self.far_pct is None or self.recorded_far_pct is None:
            return False
        return self.far_pct > self.recorded_far_pct + self.spread

    def describe(self) -> str:
        if self.far_pct is None:
            return "drift not measured: no newly labelled PASS rows"
        if self.recorded_far_pct is None:
            return f"FAR {self.far_pct:.4g}% on {self.pass_rows} new PASS rows; no recorded figure to compare"
        verdict = "drifted" if self.drifted else "no drift"
        return (
            f"{verdict}: FAR {self.far_pct:.4g}% on {self.pass_rows} new PASS rows against the recorded "
            f"{self.recorded_far_pct:.4g}% + spread {self.spread:.4g}"
        )


def drift_on_new_rows(
    scored: Iterable[tuple[str, str, float]],
    *,
    threshold: float | None,
    recorded_far_pct: float | None,
    spread: float,
) -> Drift:
    """`scored` = (label, row identity, score) of the newly labelled rows only: the share of their PASS rows the
    deployed model flags at its own threshold (score >= threshold) is its FAR on them."""
    pass_scores = [score for label, _key, score in scored if label.strip() == PASS_LABEL]
    if not pass_scores or threshold is None:
        return Drift(None, recorded_far_pct, spread, len(pass_scores))
    flagged = sum(1 for score in pass_scores if score >= threshold)
    return Drift(100.0 * flagged / len(pass_scores), recorded_far_pct, spread, len(pass_scores))
