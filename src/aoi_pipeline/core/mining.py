"""k-NN mining of the production pool: which real pool rows join the training set in an improvement iteration.

The current best model embeds the routed weak target rows and every resolved pool row, and
`mining_knn.knn_topk` finds each target's nearest pool rows. `select` turns the neighbours into unique
candidates and drops, in this order and counting each, those below `min_similarity`, those mined by an
earlier iteration (the run-level `mining_ledger.MiningLedger`) and those that are the same sample as a
validation or KPI row (`leak_exclusions`, by resolved file or by identical image bytes under another name).
`mined_rows` makes ChangeNet rows of the kept pool rows in workspace coordinates with their pool labels, and
`write_mining_outputs` writes the stage's evidence files. The reference has no cosine retention script,
breaks its ledger when an earlier iteration skipped mining and never checks mined rows against the KPI set;
all three are handled here.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import posixpath
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
    write_dataset_csv,
)
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text
from aoi_pipeline.core.leakage import CsvInRoot, FileKeys
from aoi_pipeline.core.mining_knn import DEFAULT_CHUNK_ROWS
from aoi_pipeline.core.mining_ledger import LEDGER_IDENTITY, LEDGER_VERSION, MiningLedger, normalize_pool_key
from aoi_pipeline.core.mining_pool import POOL_PATH_COLUMNS, RESOLVED_COLUMNS, ResolvedPool
from aoi_pipeline.errors import ConfigError, DatasetError, Problem

DEFAULT_MIN_SIMILARITY = 0.9

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

_KNN_SUMMARY_COLUMNS = (
    "candidate_count",
    "kept_count",
    "rejected_count",
    "similarity_threshold",
    "already_mined",
    "excluded_leak",
    "below_target_cut",
    "over_pool_budget",
)
_CANDIDATE_COLUMNS = ("pool_row", "pool_filepath", "label", "target_row", "similarity", "decision", "rule")


# ------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Candidate:
    """A pool row near the targets: its best similarity and the target (0-based) that reached it; `rule` names
    what kept it (`core.mining_rules`: a target's neighbour or an exploration row), empty before the rules."""

    pool_index: int
    target_index: int
    similarity: float
    rule: str = ""


@dataclass(frozen=True)
class Selection:
    """The candidates kept for training and how many each rule removed.

    candidate_count = len(kept) + rejected_by_similarity + already_mined + excluded_leak + below_target_cut +
    over_pool_budget. `decisions` holds every candidate with its outcome, best first.
    """

    kept: tuple[Candidate, ...]
    candidate_count: int
    rejected_by_similarity: int
    already_mined: int
    excluded_leak: int
    similarity_threshold: float
    decisions: tuple[tuple[Candidate, str], ...] = field(default=(), repr=False)
    # Removed after `select` by `core.mining_cut`: the per-target calibrated floor and the pool budget.
    below_target_cut: int = 0
    over_pool_budget: int = 0


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
        "below_target_cut": str(selection.below_target_cut),
        "over_pool_budget": str(selection.over_pool_budget),
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
            "rule": candidate.rule,
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
        "below_target_cut_count": selection.below_target_cut,
        "over_pool_budget_count": selection.over_pool_budget,
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


def _by_rule(selection: Selection) -> str:
    """` (N by neighbour, M by explore)` when the selection rules named what kept each row, else nothing."""
    counts: dict[str, int] = {}
    for candidate in selection.kept:
        if candidate.rule:
            counts[candidate.rule] = counts.get(candidate.rule, 0) + 1
    return f" ({', '.join(f'{n} by {rule}' for rule, n in counts.items())})" if counts else ""


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
        f"below their target's calibrated floor: {selection.below_target_cut}",
        f"over the pool budget: {selection.over_pool_budget}",
        f"kept: {len(selection.kept)}{_by_rule(selection)}",
        f"cumulative unique mined after this iteration: {summary['cumulative_unique_count']}",
    ]
    if selection.kept:
        sims = [candidate.similarity for candidate in selection.kept]
        lines.append(f"kept similarity: min {min(sims):.6f}, max {max(sims):.6f}")
    lines.extend(f"time {name}: {seconds:.3f} s" for name, seconds in run.timings.items())
    if summary.get("recommendation"):
        lines.append(f"recommendation: {summary['recommendation']}")
    return "\n".join(lines) + "\n"
