"""k-NN mining of the production pool: which real pool rows join the training set in an improvement iteration.

The current best model embeds the routed weak target rows and every resolved pool row (the reference
runtime's `embed` action writes `embeddings.npy` + `embeddings_index.csv`). `knn_topk` finds, for every
target, the `k` pool rows of highest cosine similarity, exactly, walking the pool in chunks so that a pool of a
million rows needs memory for one chunk of similarities, never the full target x pool matrix. `select` turns
the neighbours into unique candidates and drops, in this order and counting each, those below
`min_similarity`, those mined by an earlier iteration (the run-level `MiningLedger`) and those that are the
same sample as a validation or KPI row (`leak_exclusions`, by resolved file or by identical image bytes under
another name). `mined_rows` makes ChangeNet rows of the kept pool rows in workspace coordinates with their
pool labels, and `write_mining_outputs` writes the stage's evidence files. The reference has no cosine
retention script, breaks its ledger when an earlier iteration skipped mining and never checks mined rows
against the KPI set; all three are handled here.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import posixpath
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aoi_pipeline.core.dataset import (
    REQUIRED_COLUMNS,
    ProblemLog,
    normalize_image_ext,
    normalize_label,
    normalize_lights,
    read_csv_table,
    write_dataset_csv,
)
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text, directory_flock
from aoi_pipeline.core.leakage import CsvInRoot, FileKeys
from aoi_pipeline.core.mining_pool import POOL_PATH_COLUMNS, RESOLVED_COLUMNS, ResolvedPool
from aoi_pipeline.errors import ConfigError, DatasetError, Problem, StateError

DEFAULT_TOP_K = 5
DEFAULT_MIN_SIMILARITY = 0.9
DEFAULT_CHUNK_ROWS = 65536

ROW_INDEX_COLUMN = "row_index"
#: Columns of a pool row and of an embeddings index that identify the ChangeNet sample.
SAMPLE_COLUMNS = ("input_path", "golden_path", "object_name")

# What happened to a candidate, in the order `select` decides it.
KEPT = "kept"
BELOW_MIN_SIMILARITY = "below_min_similarity"
ALREADY_MINED = "already_mined"
EXCLUDED_LEAK = "excluded_leak"

#: Provenance columns `mined_rows` adds after the ChangeNet columns.
MINED_PROVENANCE_COLUMNS = ("pool_row", "pool_filepath", "target_row", "similarity")

KNN_SUMMARY_CSV = "knn_summary.csv"
CANDIDATES_CSV = "mined_candidates.csv"
MINED_CSV = "mined.csv"
HISTORY_SUMMARY_JSON = "mining_history_summary.json"
KNN_LOG = "nearest_neighbors.log"
LEDGER_JSON = "mining_history.json"

LEDGER_VERSION = 1
LEDGER_IDENTITY = "filepath"

_KNN_SUMMARY_COLUMNS = (
    "candidate_count",
    "kept_count",
    "rejected_count",
    "similarity_threshold",
    "already_mined",
    "excluded_leak",
)
_CANDIDATE_COLUMNS = ("pool_row", "pool_filepath", "label", "target_row", "similarity", "decision")
_NORMALISE_ROWS = 65536


# ------------------------------------------------------------------------------------------- embeddings


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Unit-length float32 vectors [N, D] and, per vector, its row of the embedded CSV (same order)."""

    source: Path
    vectors: np.ndarray
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def load_embeddings(
    npy: Path, index_csv: Path, *, expect_rows: Sequence[Mapping[str, str]] | None = None
) -> Embeddings:
    """Read the `embed` action's outputs, check they agree, and re-normalise every vector to unit length.

    `rows` holds the index CSV's columns without `row_index`, in vector order. With `expect_rows` (the rows of
    the CSV that was embedded, e.g. the pool rows), each row's input_path, golden_path and object_name must
    match, so a pool index always names the row its vector came from. Raises one DatasetError.
    """
    npy, index_csv = Path(npy), Path(index_csv)
    vectors = _read_vectors(npy)
    table = read_csv_table(index_csv, required_columns=(ROW_INDEX_COLUMN,), role="embeddings index CSV")
    if len(table.rows) != vectors.shape[0]:
        raise DatasetError.at(
            str(index_csv),
            f"has {len(table.rows)} data rows but {npy} holds {vectors.shape[0]} vectors",
            "use the embeddings.npy and embeddings_index.csv written together by one embed run",
        )
    log = ProblemLog(index_csv)
    for number, row in enumerate(table.rows, start=1):
        if row[ROW_INDEX_COLUMN].strip() != str(number - 1):
            log.add(
                "rows out of order",
                Problem(
                    f"{index_csv}: row {number}, column {ROW_INDEX_COLUMN}",
                    f"is '{row[ROW_INDEX_COLUMN]}', expected {number - 1}",
                    "use the index CSV the embed run wrote, unsorted and unfiltered",
                ),
            )
    _normalise_rows(vectors, npy, log)
    rows = tuple({key: value for key, value in row.items() if key != ROW_INDEX_COLUMN} for row in table.rows)
    if expect_rows is not None:
        _check_rows_match(rows, expect_rows, index_csv, log)
    log.raise_if_any(summary=f"embeddings {npy}: {log.total} problems")
    columns = tuple(column for column in table.columns if column != ROW_INDEX_COLUMN)
    return Embeddings(source=npy, vectors=vectors, columns=columns, rows=rows)


def _read_vectors(npy: Path) -> np.ndarray:
    try:
        loaded = np.load(npy, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError.at(str(npy), "embeddings file does not exist", "run the embed action first") from None
    except (OSError, ValueError) as error:
        raise DatasetError.at(
            str(npy), f"is not a readable .npy array ({error})", "re-run the embed action that writes it"
        ) from None
    if loaded.ndim != 2 or loaded.shape[0] == 0 or loaded.shape[1] == 0:
        raise DatasetError.at(
            str(npy),
            f"holds an array of shape {loaded.shape}, expected [rows, dim] with at least one row",
            "embed a CSV with at least one row",
        )
    if not np.issubdtype(loaded.dtype, np.floating):
        raise DatasetError.at(
            str(npy), f"holds {loaded.dtype} values, expected floating point", "re-run the embed action"
        )
    # np.load returns an array of its own, so a float32 one is normalised in place without a second copy.
    return loaded if loaded.dtype == np.float32 else loaded.astype(np.float32)


def _normalise_rows(vectors: np.ndarray, npy: Path, log: ProblemLog) -> None:
    """Scale every row to unit length in place, chunk by chunk; record rows that cannot be normalised."""
    for start in range(0, vectors.shape[0], _NORMALISE_ROWS):
        block = vectors[start : start + _NORMALISE_ROWS]
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(block, axis=1)
        bad = ~np.isfinite(norms) | (norms == 0)
        for offset in np.flatnonzero(bad):
            index = start + int(offset)
            what = "is all zeros" if norms[offset] == 0 else "holds NaN or infinite values"
            log.add(
                "vectors that cannot be normalised",
                Problem(
                    f"{npy}: vector {index} (row_index {index})",
                    f"{what}",
                    "re-run the embed action; check the checkpoint and the images of that row",
                ),
            )
        norms[bad] = 1.0
        block /= norms[:, None]


def _check_rows_match(
    rows: Sequence[Mapping[str, str]], expect_rows: Sequence[Mapping[str, str]], index_csv: Path, log: ProblemLog
) -> None:
    if len(rows) != len(expect_rows):
        log.add(
            "row count mismatches",
            Problem(
                str(index_csv),
                f"has {len(rows)} rows, the CSV it should describe has {len(expect_rows)}",
                "embed exactly the rows being mined, in their order",
            ),
        )
        return
    for number, (got, want) in enumerate(zip(rows, expect_rows, strict=True), start=1):
        differing = [
            column
            for column in SAMPLE_COLUMNS
            if column in got and column in want and got[column].strip() != want[column].strip()
        ]
        if differing:
            log.add(
                "rows describing another sample",
                Problem(
                    f"{index_csv}: row {number}",
                    ", ".join(f"{c} is '{got[c]}', expected '{want[c]}'" for c in differing),
                    "embed exactly the rows being mined, in their order",
                ),
            )


# ------------------------------------------------------------------------------------------------ k-NN


def knn_topk(
    targets: np.ndarray, pool: np.ndarray, *, k: int, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine neighbours in `pool` of every target (rows are unit vectors, so cosine = dot).

    Returns (indices [T, k'] int64, similarities [T, k'] float32), k' = min(k, pool rows), each row sorted by
    similarity descending with ties going to the lower pool index. The pool is scored `chunk_rows` rows at a
    time and only the running top-k is kept, so memory is O(chunk_rows * T + T * k) on top of the inputs.
    """
    if k < 1 or chunk_rows < 1:
        raise ValueError(f"k and chunk_rows must be >= 1, got k={k}, chunk_rows={chunk_rows}")
    targets = np.ascontiguousarray(targets, dtype=np.float32)
    pool = np.asarray(pool, dtype=np.float32)
    _check_knn_inputs(targets, pool)
    kept = min(k, pool.shape[0])
    best_index = np.empty((targets.shape[0], 0), dtype=np.int64)
    best_sim = np.empty((targets.shape[0], 0), dtype=np.float32)
    if targets.shape[0] == 0:
        return np.empty((0, kept), dtype=np.int64), np.empty((0, kept), dtype=np.float32)
    for start in range(0, pool.shape[0], chunk_rows):
        chunk = pool[start : start + chunk_rows]
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise DatasetError.at(
                f"pool embeddings: vector {bad}",
                "holds NaN or infinite values",
                "load embeddings with load_embeddings, which rejects such vectors",
            )
        sims = targets @ chunk.T
        if best_index.shape[1] < kept:
            chunk_index, chunk_sim = _chunk_topk(sims, kept)
            best_index, best_sim = _merge_topk(best_index, best_sim, chunk_index + start, chunk_sim, kept)
        else:
            best_index, best_sim = _merge_beating(best_index, best_sim, sims, start)
        del sims
    return best_index, best_sim


def _check_knn_inputs(targets: np.ndarray, pool: np.ndarray) -> None:
    if targets.ndim != 2 or pool.ndim != 2:
        raise DatasetError.at(
            "k-NN inputs",
            f"target embeddings have shape {targets.shape} and pool embeddings {pool.shape}, expected [rows, dim]",
            "pass 2-D arrays as load_embeddings returns them",
        )
    if targets.shape[1] != pool.shape[1]:
        raise DatasetError.at(
            "k-NN inputs",
            f"target embeddings have dim {targets.shape[1]} but pool embeddings dim {pool.shape[1]}",
            "embed targets and pool with the same checkpoint and spec",
        )
    if pool.shape[0] == 0:
        raise DatasetError.at("pool embeddings", "hold no rows", "embed the resolved mining pool first")
    if not np.isfinite(targets).all():
        bad = int(np.flatnonzero(~np.isfinite(targets).all(axis=1))[0])
        raise DatasetError.at(
            f"target embeddings: vector {bad}",
            "holds NaN or infinite values",
            "load embeddings with load_embeddings, which rejects such vectors",
        )


def _chunk_topk(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best min(k, columns) columns of every row of a [T, c] block, by (similarity desc, column asc)."""
    rows, columns = sims.shape
    k = min(k, columns)
    if k == columns:
        order = np.lexsort((np.broadcast_to(np.arange(columns), sims.shape), -sims), axis=1)
        return order.astype(np.int64), np.take_along_axis(sims, order, axis=1)
    # The k-th largest value per row bounds the winners; every column reaching it is a contender, so ties
    # at the bound are settled by column below instead of by whatever argpartition happens to pick.
    kth = np.partition(sims, columns - k, axis=1)[:, columns - k]
    hit_rows, hit_columns = np.nonzero(sims >= kth[:, None])
    return _top_per_row(hit_rows, hit_columns.astype(np.int64), sims[hit_rows, hit_columns], rows, k)


def _merge_beating(
    best_index: np.ndarray, best_sim: np.ndarray, sims: np.ndarray, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a chunk into a full running top-k, looking only at values above each row's k-th best.

    A value equal to the k-th best loses the tie, as every earlier chunk holds lower pool indices. Once the
    pool is a few chunks in, few values pass, so a chunk costs one comparison pass instead of a partition.
    """
    hit_rows, hit_columns = np.nonzero(sims > best_sim[:, -1:])
    if hit_rows.size == 0:
        return best_index, best_sim
    rows, k = best_index.shape
    return _top_per_row(
        np.concatenate([np.repeat(np.arange(rows), k), hit_rows]),
        np.concatenate([best_index.ravel(), hit_columns + start]),
        np.concatenate([best_sim.ravel(), sims[hit_rows, hit_columns]]),
        rows,
        k,
    )


def _top_per_row(
    row_of: np.ndarray, index: np.ndarray, sim: np.ndarray, rows: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """From flat (row, index, similarity) entries, at least k per row, the k best per row as [rows, k]."""
    order = np.lexsort((index, -sim, row_of))
    row_of, index, sim = row_of[order], index[order], sim[order]
    counts = np.bincount(row_of, minlength=rows)
    rank = np.arange(row_of.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < k
    return index[keep].reshape(rows, k), sim[keep].reshape(rows, k)


def _merge_topk(
    index_a: np.ndarray, sim_a: np.ndarray, index_b: np.ndarray, sim_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    index = np.concatenate([index_a, index_b], axis=1)
    sim = np.concatenate([sim_a, sim_b], axis=1)
    order = np.lexsort((index, -sim), axis=1)[:, :k]
    return np.take_along_axis(index, order, axis=1), np.take_along_axis(sim, order, axis=1)


# ------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Candidate:
    """A pool row near the targets: its best similarity and the target (0-based) that reached it."""

    pool_index: int
    target_index: int
    similarity: float


@dataclass(frozen=True)
class Selection:
    """The candidates kept for training and how many each rule removed.

    candidate_count = len(kept) + rejected_by_similarity + already_mined + excluded_leak. `decisions` holds
    every candidate with its outcome (KEPT, BELOW_MIN_SIMILARITY, ALREADY_MINED, EXCLUDED_LEAK), best first.
    """

    kept: tuple[Candidate, ...]
    candidate_count: int
    rejected_by_similarity: int
    already_mined: int
    excluded_leak: int
    similarity_threshold: float
    decisions: tuple[tuple[Candidate, str], ...] = field(default=(), repr=False)


def normalize_pool_key(key: str) -> str:
    """The ledger identity of a pool file path: stripped, `/`-separated and normalised (`a/./b` -> `a/b`)."""
    return posixpath.normpath(key.strip().replace("\\", "/"))


def pool_keys(pool: ResolvedPool) -> tuple[str, ...]:
    """The ledger identity of every pool row: its resolved `filepath`, normalised."""
    return tuple(normalize_pool_key(row["filepath"]) for row in pool.rows)


def select(
    indices: np.ndarray,
    sims: np.ndarray,
    *,
    min_similarity: float,
    excluded_pool_indices: Collection[int],
    history: Collection[str],
    pool_keys: Sequence[str],
) -> Selection:
    """Unique candidates of a k-NN result, then the similarity cut, the history filter and the leak filter.

    A pool file near several targets is one candidate with its best similarity (ties: the lower target);
    two pool rows naming the same file (same key) are one candidate too. Similarities are compared with
    `min_similarity` at float32 precision, the precision they were computed in.
    """
    indices, sims = np.asarray(indices), np.asarray(sims, dtype=np.float32)
    if indices.shape != sims.shape or indices.ndim != 2:
        raise ValueError(f"indices {indices.shape} and sims {sims.shape} must be equal [T, k] arrays")
    is_number = isinstance(min_similarity, numbers.Real) and not isinstance(min_similarity, bool)
    if not (is_number and -1.0 <= min_similarity <= 1.0):
        raise ConfigError.at(
            "mining_filter.min_similarity",
            f"{min_similarity!r} is not a cosine similarity in [-1, 1]",
            f"set a number such as {DEFAULT_MIN_SIMILARITY}",
        )
    threshold = np.float32(min_similarity)
    history_keys = {normalize_pool_key(key) for key in history}
    excluded = set(excluded_pool_indices)
    decisions = [
        (candidate, _decide(candidate, threshold, history_keys, excluded, pool_keys))
        for candidate in _unique_candidates(indices, sims, pool_keys)
    ]
    counts = {outcome: 0 for outcome in (KEPT, BELOW_MIN_SIMILARITY, ALREADY_MINED, EXCLUDED_LEAK)}
    for _, outcome in decisions:
        counts[outcome] += 1
    return Selection(
        kept=tuple(candidate for candidate, outcome in decisions if outcome == KEPT),
        candidate_count=len(decisions),
        rejected_by_similarity=counts[BELOW_MIN_SIMILARITY],
        already_mined=counts[ALREADY_MINED],
        excluded_leak=counts[EXCLUDED_LEAK],
        similarity_threshold=float(min_similarity),
        decisions=tuple(decisions),
    )


def _unique_candidates(indices: np.ndarray, sims: np.ndarray, keys: Sequence[str]) -> list[Candidate]:
    best: dict[str, Candidate] = {}
    for target, (row_indices, row_sims) in enumerate(zip(indices.tolist(), sims.tolist(), strict=True)):
        for pool_index, similarity in zip(row_indices, row_sims, strict=True):
            if not 0 <= pool_index < len(keys):
                raise ValueError(f"pool index {pool_index} is outside the {len(keys)} pool keys")
            key = normalize_pool_key(keys[pool_index])
            candidate = Candidate(pool_index=pool_index, target_index=target, similarity=similarity)
            current = best.get(key)
            if current is None or _rank(candidate) < _rank(current):
                best[key] = candidate
    return sorted(best.values(), key=_rank)


def _rank(candidate: Candidate) -> tuple[float, int, int]:
    return (-candidate.similarity, candidate.pool_index, candidate.target_index)


def _decide(
    candidate: Candidate,
    threshold: np.float32,
    history: set[str],
    excluded: set[int],
    keys: Sequence[str],
) -> str:
    if np.float32(candidate.similarity) < threshold:
        return BELOW_MIN_SIMILARITY
    if normalize_pool_key(keys[candidate.pool_index]) in history:
        return ALREADY_MINED
    if candidate.pool_index in excluded:
        return EXCLUDED_LEAK
    return KEPT


# ---------------------------------------------------------------------------------------------- ledger


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
            data = json.loads(self.path.read_text(encoding="utf-8"))
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


# --------------------------------------------------------------------------------------------- leakage


def leak_exclusions(
    pool: ResolvedPool,
    *,
    protected: Sequence[CsvInRoot],
    lights: Sequence[str],
    image_ext: str,
    content_hashes: bool = True,
    candidates: Collection[int] | None = None,
) -> set[int]:
    """Pool rows (0-based) that are a validation or KPI sample and so must never be mined.

    A pool row is excluded when one of its test-side image files is a test-side file of a protected row
    (compared as resolved absolute paths, so `images/b1/test` from the workspace root equals `b1/test` from the
    image root), or, with `content_hashes`, when its test images are byte-identical to a protected row's (the
    sha256 of the bytes of every light: a copy under another name). Golden images are shared between samples
    by design, so the test side decides. `candidates` limits the check to those pool rows (e.g. the k-NN
    candidates), which keeps hashing cheap on a large pool.
    """
    names = normalize_lights(lights)
    ext = normalize_image_ext(image_ext)
    protected_files: set[str] = set()
    protected_content: dict[tuple[int, ...], set[str]] = {}
    for source in protected:
        keys = FileKeys(source.root)
        for row in source.csv.rows:
            key = keys.key(row, names, ext)
            if key is None:
                continue
            test_files = key[: len(names)]
            protected_files.update(test_files)
            if content_hashes:
                sizes, digest = _content(test_files, where=str(source.csv.path))
                protected_content.setdefault(sizes, set()).add(digest)
    pool_files = FileKeys(pool.images_root)
    indices = range(len(pool.rows)) if candidates is None else sorted(set(candidates))
    excluded = set()
    for index in indices:
        test_files = _pool_test_files(pool.rows[index], pool_files, names, ext)
        if any(file in protected_files for file in test_files):
            excluded.add(index)
        elif content_hashes and (digests := protected_content.get(_sizes(test_files))) is not None:
            _, digest = _content(test_files, where=f"{pool.source_csv}: row {index + 1}")
            if digest in digests:
                excluded.add(index)
    return excluded


def _pool_test_files(row: Mapping[str, str], files: FileKeys, lights: Sequence[str], ext: str) -> tuple[str, ...]:
    directory, name = os.path.split(row["filepath"])
    object_name = row.get("object_name", "").strip() or _object_name_of(name, lights, ext)
    if object_name is None:
        return (files.file(directory, name),)
    return tuple(files.file(directory, f"{object_name}_{light}{ext}") for light in lights)


def _object_name_of(file_name: str, lights: Sequence[str], ext: str) -> str | None:
    for light in lights:
        suffix = f"_{light}{ext}"
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return None


def _sizes(files: Sequence[str]) -> tuple[int, ...]:
    sizes = []
    for file in files:
        try:
            sizes.append(os.stat(file).st_size)
        except OSError:
            sizes.append(-1)  # a missing pool image cannot match; resolution reports it elsewhere
    return tuple(sizes)


def _content(files: Sequence[str], *, where: str) -> tuple[tuple[int, ...], str]:
    """(file sizes, sha256 over the files' bytes), hashed like `leakage.content_key`."""
    digest = hashlib.sha256()
    sizes = []
    for file in files:
        try:
            data = Path(file).read_bytes()
        except OSError as error:
            raise DatasetError.at(
                f"{where}: {file}",
                f"cannot read the test image ({error.strerror or error})",
                "check the row's input_path, object_name, the light names and image_ext",
            ) from None
        sizes.append(len(data))
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return tuple(sizes), digest.hexdigest()


# ------------------------------------------------------------------------------------------ mined rows


def pool_dataset_rows(pool: ResolvedPool, *, images_prefix: str = "") -> list[dict[str, str]]:
    """Every pool row as a ChangeNet row (the CSV to embed): image-root coordinates unless `images_prefix`."""
    log = ProblemLog(pool.source_csv)
    rows = [_changenet_row(pool, index, images_prefix, log) for index in range(len(pool.rows))]
    log.raise_if_any(summary=f"mining pool {pool.source_csv}: {log.total} rows cannot become ChangeNet rows")
    return rows


def mined_rows(pool: ResolvedPool, selection: Selection, *, images_prefix: str = "images") -> list[dict[str, str]]:
    """ChangeNet rows of the kept candidates in WORKSPACE coordinates (`images_prefix` + "/" + directory).

    The pool label is kept, normalised (PASS verbatim, others lower-case). After the ChangeNet columns and
    the pool's own extra columns come `pool_row` (1-based row of the resolved pool), `pool_filepath`,
    `target_row` (1-based row of the embedded targets CSV) and `similarity`. Raises one DatasetError for kept
    rows without a golden image or outside the images root.
    """
    log = ProblemLog(pool.source_csv)
    rows = []
    for candidate in selection.kept:
        row = _changenet_row(pool, candidate.pool_index, images_prefix, log)
        row.update(
            pool_row=str(candidate.pool_index + 1),
            pool_filepath=pool.rows[candidate.pool_index]["filepath"],
            target_row=str(candidate.target_index + 1),
            similarity=f"{candidate.similarity:.6f}",
        )
        rows.append(row)
    log.raise_if_any(summary=f"mining pool {pool.source_csv}: {log.total} mined rows cannot become ChangeNet rows")
    return rows


def mined_columns(pool: ResolvedPool) -> tuple[str, ...]:
    """The column order of `mined_rows`: ChangeNet columns, the pool's extra columns, then provenance."""
    return (*REQUIRED_COLUMNS, *_extra_columns(pool), *MINED_PROVENANCE_COLUMNS)


def _extra_columns(pool: ResolvedPool) -> tuple[str, ...]:
    skipped = {*REQUIRED_COLUMNS, *POOL_PATH_COLUMNS, *RESOLVED_COLUMNS, *MINED_PROVENANCE_COLUMNS}
    return tuple(column for column in pool.columns if column not in skipped)


def _changenet_row(pool: ResolvedPool, index: int, images_prefix: str, log: ProblemLog) -> dict[str, str]:
    row = pool.rows[index]
    where = f"{pool.source_csv}: row {index + 1}"
    test_dir, test_name = posixpath.split(row["filepath"])
    golden = row.get("golden_filepath", "")
    if not golden:
        log.add(
            "rows without a golden image",
            Problem(where, "has no golden_path", "give every pool row the directory of its golden image"),
        )
    outside = [path for path in (row["filepath"], golden) if path and os.path.isabs(path)]
    if outside:
        log.add(
            "rows outside the images root",
            Problem(
                where,
                f"'{outside[0]}' lies outside the images root {pool.images_root}",
                "keep pool images under the images root, which the training container mounts",
            ),
        )
    object_name = row.get("object_name", "").strip() or _object_name_from_file(test_name)
    result = {
        "input_path": _prefixed(images_prefix, test_dir),
        "golden_path": _prefixed(images_prefix, posixpath.dirname(golden)),
        "label": normalize_label(row.get("label", "")),
        "object_name": object_name,
    }
    result.update((column, row.get(column, "")) for column in _extra_columns(pool))
    return result


def _object_name_from_file(file_name: str) -> str:
    """`<object_name>_<light><ext>` -> object_name (pool rows without an object_name column)."""
    stem = posixpath.splitext(file_name)[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def _prefixed(prefix: str, directory: str) -> str:
    parts = [part for part in (prefix.strip("/"), directory) if part]
    return posixpath.join(*parts) if parts else "."


# --------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class MiningRun:
    """Facts about one mining run for its log and summaries; `timings` maps step name to seconds."""

    iteration: int
    target_count: int
    embedding_dim: int
    top_k: int
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    timings: Mapping[str, float] = field(default_factory=dict)


def write_mining_outputs(
    out_dir: Path,
    *,
    run: MiningRun,
    pool: ResolvedPool,
    selection: Selection,
    mined: Sequence[Mapping[str, str]],
    ledger: MiningLedger,
) -> dict[str, Path]:
    """Write the stage's evidence files into `out_dir` (`RD/iterN/mining_results/<TS>/`); return them by the
    state field each fills (mining_summary, mining_candidate_csv, mining_mined_csv,
    mining_history_summary, mining_knn_log).

    Tables are CSV files; `mined.csv` holds exactly the `mined` rows (len == len(selection.kept), possibly
    none: a header-only file is valid evidence of zero novel rows). The ledger is only read (history before
    this iteration); record the selection in it after this call.
    """
    if len(mined) != len(selection.kept):
        raise ValueError(f"{len(mined)} mined rows for {len(selection.kept)} kept candidates")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history_before = ledger.mined_keys(before_iteration=run.iteration)
    kept_keys = {normalize_pool_key(pool.rows[c.pool_index]["filepath"]) for c in selection.kept}
    paths = {
        "mining_summary": out_dir / KNN_SUMMARY_CSV,
        "mining_candidate_csv": out_dir / CANDIDATES_CSV,
        "mining_mined_csv": out_dir / MINED_CSV,
        "mining_history_summary": out_dir / HISTORY_SUMMARY_JSON,
        "mining_knn_log": out_dir / KNN_LOG,
    }
    write_dataset_csv(paths["mining_summary"], _KNN_SUMMARY_COLUMNS, [_knn_summary_row(selection)])
    write_dataset_csv(paths["mining_candidate_csv"], _CANDIDATE_COLUMNS, _candidate_rows(pool, selection))
    write_dataset_csv(paths["mining_mined_csv"], mined_columns(pool), mined)
    summary = history_summary(run, selection, history_count_before=len(history_before), ledger=ledger.path)
    summary["cumulative_unique_count"] = len(history_before | kept_keys)
    atomic_write_json(paths["mining_history_summary"], summary)
    atomic_write_text(paths["mining_knn_log"], _knn_log(run, pool, selection, summary))
    return paths


def _knn_summary_row(selection: Selection) -> dict[str, str]:
    return {
        "candidate_count": str(selection.candidate_count),
        "kept_count": str(len(selection.kept)),
        "rejected_count": str(selection.rejected_by_similarity),
        "similarity_threshold": repr(selection.similarity_threshold),
        "already_mined": str(selection.already_mined),
        "excluded_leak": str(selection.excluded_leak),
    }


def _candidate_rows(pool: ResolvedPool, selection: Selection) -> Iterable[dict[str, str]]:
    for candidate, outcome in selection.decisions:
        row = pool.rows[candidate.pool_index]
        yield {
            "pool_row": str(candidate.pool_index + 1),
            "pool_filepath": row["filepath"],
            "label": normalize_label(row.get("label", "")),
            "target_row": str(candidate.target_index + 1),
            "similarity": f"{candidate.similarity:.6f}",
            "decision": outcome,
        }


def history_summary(run: MiningRun, selection: Selection, *, history_count_before: int, ledger: Path) -> dict[str, Any]:
    """The `mining_history_summary.json` document (also a fitting `summary` for `MiningLedger.record`)."""
    past_similarity = selection.candidate_count - selection.rejected_by_similarity
    rate = selection.already_mined / past_similarity if past_similarity else 0.0
    return {
        "version": LEDGER_VERSION,
        "iteration": run.iteration,
        "identity": LEDGER_IDENTITY,
        "topn": run.top_k,
        "target_count": run.target_count,
        "candidate_count": selection.candidate_count,
        "rejected_by_similarity": selection.rejected_by_similarity,
        "similarity_threshold": selection.similarity_threshold,
        "history_count_before": history_count_before,
        "already_mined_count": selection.already_mined,
        "historical_candidate_rate": round(rate, 6),
        "excluded_leak_count": selection.excluded_leak,
        "selected_count": len(selection.kept),
        "cumulative_unique_count": history_count_before + len(selection.kept),
        "ledger": str(ledger),
        "recommendation": _recommendation(selection, rate),
    }


def _recommendation(selection: Selection, historical_rate: float) -> str | None:
    if selection.candidate_count and selection.rejected_by_similarity == selection.candidate_count:
        return "no candidate reached min_similarity: lower it or expand the source pool"
    if selection.candidate_count and not selection.kept and selection.already_mined:
        return "every candidate was already mined: increase top_k_per_target or expand the source pool"
    if historical_rate >= 0.5:
        return "most candidates were already mined: consider increasing top_k_per_target"
    return None


def _knn_log(run: MiningRun, pool: ResolvedPool, selection: Selection, summary: Mapping[str, Any]) -> str:
    lines = [
        f"k-NN mining, iteration {run.iteration}, {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"pool: {len(pool.rows)} rows from {pool.source_csv}",
        f"targets: {run.target_count}, embedding dim: {run.embedding_dim}, metric: cosine (exact)",
        f"top_k per target: {run.top_k}, pool chunk rows: {run.chunk_rows}",
        f"neighbours returned: {run.target_count * min(run.top_k, len(pool.rows))}",
        f"unique candidates: {selection.candidate_count}",
        f"below min_similarity {selection.similarity_threshold}: {selection.rejected_by_similarity}",
        f"already mined by earlier iterations: {selection.already_mined}",
        f"excluded as validation/KPI samples: {selection.excluded_leak}",
        f"kept: {len(selection.kept)}",
        f"cumulative unique mined after this iteration: {summary['cumulative_unique_count']}",
    ]
    if selection.kept:
        sims = [candidate.similarity for candidate in selection.kept]
        lines.append(f"kept similarity: min {min(sims):.6f}, max {max(sims):.6f}")
    lines.extend(f"time {name}: {seconds:.3f} s" for name, seconds in run.timings.items())
    if summary.get("recommendation"):
        lines.append(f"recommendation: {summary['recommendation']}")
    return "\n".join(lines) + "\n"
