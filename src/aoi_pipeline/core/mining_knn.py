"""Embeddings of the mining stage and their exact k-NN: which pool rows lie nearest to each weak target.

The reference runtime's `embed` action writes `embeddings.npy` + `embeddings_index.csv`; `load_embeddings`
reads them, checks that they agree with each other (and, given the embedded CSV's rows, that every vector
names its row) and re-normalises every vector to unit length. `knn_topk` finds, for every target, the `k`
pool rows of highest cosine similarity, exactly, walking the pool in chunks so that a pool of a million rows
needs memory for one chunk of similarities, never the full target x pool matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aoi_pipeline.core.dataset import ProblemLog, read_csv_table
from aoi_pipeline.errors import DatasetError, Problem

DEFAULT_TOP_K = 5
DEFAULT_CHUNK_ROWS = 65536

ROW_INDEX_COLUMN = "row_index"
#: Columns of a pool row and of an embeddings index that identify the ChangeNet sample.
SAMPLE_COLUMNS = ("input_path", "golden_path", "object_name")

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
        loaded: np.ndarray = np.load(npy, allow_pickle=False)
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
