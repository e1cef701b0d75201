"""The run-level mining ledger, `RD/mining_history.json`: which pool files each improvement iteration mined.

`MiningLedger` is append-only: an iteration's selection is recorded once (a resumed stage re-records the same
files as a no-op), a file mined by an earlier iteration can never be recorded again, and an iteration that
skipped mining may be recorded as skipped or not at all, so later iterations keep working after a gap (the
reference's ledger breaks there). A pool file is identified by its resolved `filepath`, normalised by
`normalize_pool_key`. Every write replaces the file atomically under a directory lock, and every read checks
the whole document.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aoi_pipeline.core.files import atomic_write_json, directory_flock
from aoi_pipeline.errors import Problem, StateError

LEDGER_JSON = "mining_history.json"
LEDGER_VERSION = 1
LEDGER_IDENTITY = "filepath"


def normalize_pool_key(key: str) -> str:
    """The ledger identity of a pool file path: stripped, `/`-separated and normalised (`a/./b` -> `a/b`)."""
    return posixpath.normpath(key.strip().replace("\\", "/"))


class MiningLedger:
    """The run-level, append-only record of which pool files each iteration mined (`RD/mining_history.json`).

    Iterations are recorded in increasing order but need not be contiguous: an iteration that skipped mining
    may be recorded with `skipped=True` and no rows, or not at all (the reference requires contiguous entries
    from 1 and breaks after a skip). Recording an iteration again with the same files is a no-op, so a resumed
    stage can re-record safely; different files, or a file an earlier iteration selected, is a StateError.
    Every write replaces the file atomically under a directory lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> tuple[dict[str, Any], ...]:
        """The recorded iterations, oldest first (validated)."""
        return tuple(self._read()["iterations"])

    def mined_keys(self, *, before_iteration: int | None = None) -> set[str]:
        """Every pool key selected so far, or only by iterations before `before_iteration` (for a rerun)."""
        return {
            key
            for entry in self.entries()
            if before_iteration is None or entry["iteration"] < before_iteration
            for key in entry["selected_filepaths"]
        }

    def record(
        self,
        iteration: int,
        selected_keys: Sequence[str],
        *,
        skipped: bool = False,
        summary: Mapping[str, Any],
    ) -> None:
        """Append this iteration's selection; a no-op when the same selection is already recorded."""
        keys = [normalize_pool_key(key) for key in selected_keys]
        where = f"{self.path}: iteration {iteration}"
        self._check_request(iteration, keys, skipped, where)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with directory_flock(self.path.parent):
            ledger = self._read()
            entries = ledger["iterations"]
            same = next((entry for entry in entries if entry["iteration"] == iteration), None)
            if same is not None:
                if set(same["selected_filepaths"]) == set(keys) and same["skipped"] == skipped:
                    return
                raise StateError.at(
                    where,
                    f"is already recorded with {same['selected_count']} files (skipped={same['skipped']}); "
                    f"now {len(keys)} files (skipped={skipped}) differ",
                    "a mining rerun must select what it selected before; start a new run to mine differently",
                )
            if entries and iteration < entries[-1]["iteration"]:
                raise StateError.at(
                    where,
                    f"comes after iteration {entries[-1]['iteration']} in the ledger",
                    "record iterations in increasing order",
                )
            earlier = {key: entry["iteration"] for entry in entries for key in entry["selected_filepaths"]}
            again = [key for key in keys if key in earlier]
            if again:
                raise StateError(
                    [
                        Problem(where, f"'{key}' was already mined in iteration {earlier[key]}", _HISTORY_FIX)
                        for key in again[:20]
                    ],
                    summary=f"{where}: {len(again)} files were mined by an earlier iteration",
                )
            entries.append(
                {
                    "iteration": iteration,
                    "skipped": skipped,
                    "selected_count": len(keys),
                    "selected_filepaths": keys,
                    "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "summary": dict(summary),
                }
            )
            ledger["cumulative_unique_count"] = len(earlier) + len(keys)
            atomic_write_json(self.path, ledger)

    @staticmethod
    def _check_request(iteration: int, keys: Sequence[str], skipped: bool, where: str) -> None:
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 1:
            raise StateError.at(where, f"iteration {iteration!r} is not a positive integer", "pass N of iterN")
        if skipped and keys:
            raise StateError.at(where, f"is marked skipped but selects {len(keys)} files", "skip with no files")
        duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
        if duplicates:
            raise StateError.at(
                where, f"selects {', '.join(duplicates[:5])} more than once", "pass each selected file once"
            )

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {
                "version": LEDGER_VERSION,
                "identity": LEDGER_IDENTITY,
                "iterations": [],
                "cumulative_unique_count": 0,
            }
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise StateError.at(
                str(self.path),
                f"is not a readable JSON ledger ({error})",
                "only the mining stage writes it: restore the previous version or start a new run",
            ) from None
        problems = _ledger_problems(self.path, data)
        if problems:
            raise StateError(problems, summary=f"mining ledger {self.path} is inconsistent")
        return data


_HISTORY_FIX = "select from the pool minus MiningLedger.mined_keys(before_iteration=N)"


def _ledger_problems(path: Path, data: Any) -> list[Problem]:
    fix = "only the mining stage writes the ledger: restore the previous version or start a new run"
    if not isinstance(data, dict):
        return [Problem(str(path), f"holds {type(data).__name__}, not a JSON object", fix)]
    problems = []
    if data.get("version") != LEDGER_VERSION or data.get("identity") != LEDGER_IDENTITY:
        problems.append(
            Problem(
                str(path),
                f"version {data.get('version')!r} / identity {data.get('identity')!r} is not "
                f"{LEDGER_VERSION} / {LEDGER_IDENTITY!r}",
                fix,
            )
        )
    entries = data.get("iterations")
    if not isinstance(entries, list):
        return [*problems, Problem(f"{path}: iterations", "is not a list", fix)]
    seen: dict[str, int] = {}
    last = 0
    for position, entry in enumerate(entries):
        where = f"{path}: iterations[{position}]"
        if not isinstance(entry, dict):
            problems.append(Problem(where, "is not an object", fix))
            continue
        iteration, keys = entry.get("iteration"), entry.get("selected_filepaths")
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration <= last:
            problems.append(Problem(where, f"iteration {iteration!r} does not follow iteration {last}", fix))
        else:
            last = iteration
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            problems.append(Problem(where, "selected_filepaths is not a list of paths", fix))
            continue
        if entry.get("selected_count") != len(keys) or not isinstance(entry.get("skipped"), bool):
            problems.append(Problem(where, f"selected_count or skipped disagree with {len(keys)} files", fix))
        for key in keys:
            if key in seen:
                problems.append(Problem(where, f"'{key}' was already selected by iteration {seen[key]}", fix))
            seen[key] = iteration if isinstance(iteration, int) else -1
    if data.get("cumulative_unique_count") != len(seen):
        problems.append(
            Problem(str(path), f"cumulative_unique_count {data.get('cumulative_unique_count')!r} != {len(seen)}", fix)
        )
    return problems
