"""The KPI set split by board into a steer part and a confirm part.

The DEFT loop steers on the KPI set's failures (RCA, mining targets), so a figure measured on the rows it
steered on flatters it. The KPI set is therefore split once per run, by board, into a steer part (what RCA
and mining look at) and a confirm part (the KPI gate, the choice of the best iteration and every number the
report and the handoff state). A workspace may name its confirm part (`kpi/confirm_set.csv`); otherwise the
split is a deterministic hash of the board name, repaired so that every defect type has boards in both
parts. No board is ever in both. The split is plain data (`to_dict`/`from_dict`) so the run state keeps it
and a resumed or nightly run scores on the same boards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from aoi_pipeline.core.dataset import IMAGE_ROOT_PREFIXES, PASS_LABEL, normalize_label
from aoi_pipeline.errors import DatasetError, StateError

CONFIRM_SET_SOURCE = "confirm_set_csv"
BOARD_HASH_SOURCE = "board_hash"
# A run state written before the split existed scored every iteration on the whole KPI set; it keeps doing so.
WHOLE_SET_SOURCE = "whole_kpi_set"
SOURCES = (CONFIRM_SET_SOURCE, BOARD_HASH_SOURCE, WHOLE_SET_SOURCE)
DEFAULT_CONFIRM_SHARE = 0.5
STEER, CONFIRM = "steer", "confirm"
_SALT = "aoi-kpi-confirm-v1"


def board_of(row: Mapping[str, str]) -> str:
    """`boardname` when the row has one, else the first directory of input_path under the image root."""
    named = (row.get("boardname") or "").strip()
    if named:
        return named
    path = (row.get("input_path") or "").replace("\\", "/").lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    for prefix in IMAGE_ROOT_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    parts = PurePosixPath(path).parts
    return parts[0] if parts else ""


def board_hash(board: str) -> float:
    """A stable number in [0, 1) per board name (the same on every machine and every run)."""
    digest = hashlib.sha256(f"{_SALT}:{board}".encode()).hexdigest()
    return int(digest[:13], 16) / float(16**13)


@dataclass(frozen=True)
class KpiSplit:
    """Which boards of the KPI set steer the loop and which confirm it."""

    source: str
    steer_boards: tuple[str, ...]
    confirm_boards: tuple[str, ...]
    confirm_share: float = DEFAULT_CONFIRM_SHARE
    single_board_types: tuple[str, ...] = ()

    def part_of(self, row: Mapping[str, str]) -> str | None:
        """`steer`, `confirm`, or None for a row of a board the split does not know."""
        if self.source == WHOLE_SET_SOURCE:
            return CONFIRM
        board = board_of(row)
        if board in self._confirm:
            return CONFIRM
        return STEER if board in self._steer else None

    @property
    def _confirm(self) -> frozenset[str]:
        return frozenset(self.confirm_boards)

    @property
    def _steer(self) -> frozenset[str]:
        return frozenset(self.steer_boards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "confirm_share": self.confirm_share,
            "steer_boards": list(self.steer_boards),
            "confirm_boards": list(self.confirm_boards),
            "single_board_types": list(self.single_board_types),
        }

    @classmethod
    def from_dict(cls, raw: object, *, where: str = "deft_state.json: kpi_split") -> KpiSplit:
        fix = "restore the run directory from a backup, or start a fresh run (the split is chosen at the start)"
        if not isinstance(raw, Mapping) or raw.get("source") not in SOURCES:
            raise StateError.at(where, f"{raw!r:.80} is not a KPI split", fix)
        boards = {name: raw.get(name) for name in ("steer_boards", "confirm_boards")}
        if not all(isinstance(v, list) and all(isinstance(b, str) for b in v) for v in boards.values()):
            raise StateError.at(where, "steer_boards / confirm_boards are not lists of board names", fix)
        share = raw.get("confirm_share", DEFAULT_CONFIRM_SHARE)
        single = raw.get("single_board_types") or []
        steer, confirm = boards["steer_boards"] or [], boards["confirm_boards"] or []
        split = cls(
            str(raw["source"]),
            tuple(steer),
            tuple(confirm),
            float(share),
            tuple(str(kind) for kind in single),
        )
        both = set(split.steer_boards) & set(split.confirm_boards)
        if both:
            raise StateError.at(where, f"boards in both parts: {sorted(both)[:5]}", fix)
        return split


def whole_set_split() -> KpiSplit:
    """The split of a run started before splits existed: every KPI row confirms (and steers)."""
    return KpiSplit(WHOLE_SET_SOURCE, (), (), 1.0)


def _types_by_board(rows: Iterable[Mapping[str, str]]) -> dict[str, set[str]]:
    boards: dict[str, set[str]] = {}
    for row in rows:
        label = normalize_label(row.get("label") or "")
        kinds = boards.setdefault(board_of(row), set())
        if label and label != PASS_LABEL:
            kinds.add(label)
    return boards


def _missing_types(types: Mapping[str, set[str]], part: set[str]) -> list[str]:
    everywhere = set().union(*types.values()) if types else set()
    present = set().union(*(types[board] for board in part)) if part else set()
    return sorted(everywhere - present)


def _move_for(kind: str, source: set[str], types: Mapping[str, set[str]]) -> str | None:
    """The board carrying `kind` to move out of `source`: the one whose move costs `source` no type."""
    for board in sorted((b for b in source if kind in types[b]), key=board_hash):
        rest = source - {board}
        if all(any(k in types[b] for b in rest) for k in types[board]):
            return board
    return None


def _single_board_types(types: Mapping[str, set[str]]) -> tuple[str, ...]:
    """Defect types found on one board only: no split can put them in both parts."""
    counts: dict[str, int] = {}
    for kinds in types.values():
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    return tuple(sorted(kind for kind, count in counts.items() if count < 2))


def _repair(types: Mapping[str, set[str]], steer: set[str], confirm: set[str], single: tuple[str, ...]) -> None:
    """Move boards (lowest hash first) until every type on two or more boards is in both parts."""
    for _ in range(4 * len(types) + 1):
        lacking_confirm = [k for k in _missing_types(types, confirm) if k not in single]
        lacking_steer = [k for k in _missing_types(types, steer) if k not in single]
        source, target, lacking = (
            (steer, confirm, lacking_confirm) if lacking_confirm else (confirm, steer, lacking_steer)
        )
        if not lacking:
            return
        moved = _move_for(lacking[0], source, types)
        if moved is None:
            return
        source.discard(moved)
        target.add(moved)


def hash_split(
    rows: Sequence[Mapping[str, str]], *, confirm_share: float = DEFAULT_CONFIRM_SHARE, where: str = "KPI set"
) -> KpiSplit:
    """Split the rows' boards by hash; then move boards until every defect type is in both parts.

    A type on a single board cannot be in both; it stays where its board's hash puts it and the split names it
    (`single_board_types`). DatasetError when the boards cannot give two parts that each hold defects and PASS.
    """
    if not 0.0 < confirm_share < 1.0:
        raise DatasetError.at("deft.confirm_share", f"{confirm_share!r} is not in (0, 1)", "use e.g. 0.5")
    types = _types_by_board(rows)
    single = _single_board_types(types)
    confirm = {board for board in types if board_hash(board) < confirm_share}
    steer = set(types) - confirm
    if not confirm or not steer:  # too few boards for the hash to land on both sides
        ordered = sorted(types, key=board_hash)
        confirm, steer = set(ordered[: max(1, round(len(ordered) * confirm_share))]), set()
        steer = set(ordered) - confirm
    _repair(types, steer, confirm, single)
    lacking = sorted((set(_missing_types(types, confirm)) | set(_missing_types(types, steer))) - set(single))
    if (
        lacking
        or not steer
        or not confirm
        or not _has_pass_and_defect(rows, confirm)
        or not _has_pass_and_defect(rows, steer)
    ):
        raise DatasetError.at(
            where,
            f"cannot split {len(types)} boards into a steer and a confirm part that each hold PASS rows and every "
            f"defect type (types left on one side: {', '.join(lacking) or 'none'})",
            "add KPI boards, or give kpi/confirm_set.csv naming the confirm part",
        )
    return KpiSplit(BOARD_HASH_SOURCE, tuple(sorted(steer)), tuple(sorted(confirm)), confirm_share, single)


def _has_pass_and_defect(rows: Iterable[Mapping[str, str]], boards: set[str]) -> bool:
    labels = {normalize_label(row.get("label") or "") == PASS_LABEL for row in rows if board_of(row) in boards}
    return labels == {True, False}


def confirm_set_split(
    kpi_rows: Sequence[Mapping[str, str]], confirm_rows: Sequence[Mapping[str, str]], *, where: str
) -> KpiSplit:
    """The split a workspace names: its confirm set's boards confirm, every other KPI board steers."""
    confirm = {board_of(row) for row in confirm_rows}
    steer = {board_of(row) for row in kpi_rows} - confirm
    types_confirm = _missing_types(_types_by_board([*kpi_rows, *confirm_rows]), confirm)
    types_steer = _missing_types(_types_by_board([*kpi_rows, *confirm_rows]), steer)
    if not confirm or not steer or types_confirm or types_steer:
        raise DatasetError.at(
            where,
            f"the confirm set leaves a part without boards or types (confirm lacks {types_confirm or 'none'}, "
            f"steer lacks {types_steer or 'none'})",
            "name confirm boards that leave every defect type on some steer board too, or remove confirm_set.csv",
        )
    share = len(confirm) / (len(confirm) + len(steer))
    return KpiSplit(CONFIRM_SET_SOURCE, tuple(sorted(steer)), tuple(sorted(confirm)), round(share, 4))


def split_rows(
    rows: Iterable[Mapping[str, str]], split: KpiSplit
) -> tuple[list[Mapping[str, str]], list[Mapping[str, str]]]:
    """(steer rows, confirm rows) of scored or unscored KPI rows; rows of unknown boards are in neither."""
    steer: list[Mapping[str, str]] = []
    confirm: list[Mapping[str, str]] = []
    for row in rows:
        part = split.part_of(row)
        if part == CONFIRM:
            confirm.append(row)
        if part == STEER or split.source == WHOLE_SET_SOURCE:
            steer.append(row)
    return steer, confirm
