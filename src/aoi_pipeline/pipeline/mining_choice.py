"""The mining stage's choice among its k-NN candidates: the calibrated cut, the pool budget and the `deft.mining_*`
selection rules, applied to one iteration's candidates with the run's state (budget left, the RCA threshold) and
the embed outputs (pool scores); the pure rules live in `core.mining_rules` and `core.mining_cut`.
"""

from __future__ import annotations

import math
import posixpath
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from aoi_pipeline.core import mining, mining_cut, mining_rules, pool_budget
from aoi_pipeline.core.dataset import normalize_label, read_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.core.mining_knn import Embeddings
from aoi_pipeline.core.mining_ledger import normalize_pool_key
from aoi_pipeline.core.mining_pool import ResolvedPool
from aoi_pipeline.core.stages import iteration_number, previous_label
from aoi_pipeline.core.state import read_state
from aoi_pipeline.core.state_entries import iteration_entry
from aoi_pipeline.errors import DatasetError, StateError
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.kpi_parts import protected_kpi

SCORE_COLUMN = "siamese_score"


@dataclass(frozen=True)
class Choice:
    """The selection after every cut and rule, and the text and counts the log, the state and the report show."""

    selection: mining.Selection
    text: str
    picked_by_rule: dict[str, int]
    timings: dict[str, float]


def rules_of(ctx: RunContext, label: str) -> mining_rules.MiningRules:
    """The run's `deft.mining_*` rules; exploration draws with the iteration's fixed seed (same rows on a rerun)."""
    deft = ctx.deft
    return mining_rules.MiningRules(
        rank=deft.mining_rank,
        label_balance=deft.mining_label_balance,
        max_per_board=deft.mining_max_per_board,
        explore_share=deft.mining_explore_share,
        seed=iteration_number(label),
    )


def protected_sources(ctx: RunContext) -> list[CsvInRoot]:
    """The rows mining must never take: validation and the whole KPI set (steer and confirm parts)."""
    images = ctx.workspace.images_dir
    return [CsvInRoot(read_dataset_csv(ctx.workspace.validation_csv), images), protected_kpi(ctx)]


def choose(
    ctx: RunContext,
    label: str,
    selection: mining.Selection,
    indices: np.ndarray,
    *,
    pool: ResolvedPool,
    targets: Embeddings,
    pool_vectors: Embeddings,
    history: Collection[str],
) -> Choice:
    """The calibrated cut (`deft.mining_min_z`), then the pool budget by the rules (`deft.mining_*`)."""
    clock = time.monotonic()
    floors = None
    if ctx.deft.mining_min_z is not None:
        mean, std = mining_cut.pool_similarity_moments(targets.vectors, pool_vectors.vectors, chunk_rows=16384)
        floors = mining_cut.target_floors(mean, std, ctx.deft.mining_min_z)
    state = read_state(ctx.layout.root)
    left = pool_budget.rows_left(state)
    rules = rules_of(ctx, label)
    if rules.legacy:
        cut, counts = mining_cut.apply_cuts(selection, floors=floors, max_kept=left, min_z=ctx.deft.mining_min_z)
        timings = {"cuts": time.monotonic() - clock}
        return Choice(cut, counts.text(), {mining_rules.RULE_NEIGHBOUR: len(cut.kept)}, timings)
    cut, counts = mining_cut.apply_cuts(selection, floors=floors, max_kept=None, min_z=ctx.deft.mining_min_z)
    threshold = iteration_entry(state, previous_label(label)).rca_threshold
    facts = pool_facts(pool, pool_vectors, threshold if rules.rank == mining_rules.RANK_UNCERTAINTY else None)
    keys = mining.pool_keys(pool)
    history_keys = {normalize_pool_key(key) for key in history}
    chosen, rule_counts = mining_rules.apply_rules(
        cut,
        indices,
        rules=rules,
        pool=facts,
        max_kept=left,
        explore_exclude=lambda rows: mining.leak_exclusions(
            pool,
            protected=protected_sources(ctx),
            lights=ctx.dataset.lights,
            image_ext=ctx.image_ext,
            candidates=rows,
        ),
        history=[index for index, key in enumerate(keys) if key in history_keys],
        targets=targets.vectors,
        pool_vectors=pool_vectors.vectors,
    )
    calibrated = counts.calibrated_text()
    text = f"{calibrated}; " if calibrated else ""
    text += f"rules ({rules.text()}): {rule_counts.text()}; pool budget removed {chosen.over_pool_budget}"
    return Choice(chosen, text, rule_counts.picked, {"cuts": time.monotonic() - clock})


def pool_facts(pool: ResolvedPool, vectors: Embeddings, threshold: float | None) -> mining_rules.PoolFacts:
    """Labels and boards of the pool rows, and with a threshold their scores from the embed output."""
    labels = [normalize_label(row.get("label", "")) for row in pool.rows]
    boards = [board_of(row) for row in pool.rows]
    if threshold is None:
        return mining_rules.PoolFacts.of(labels, boards, None, None)
    if threshold is None or not math.isfinite(threshold):
        raise StateError.at(
            "deft_state.json: rca_threshold",
            "is not recorded for the iteration that routed these targets",
            "re-run the RCA stage, or set deft.mining_rank: per_target",
        )
    return mining_rules.PoolFacts.of(labels, boards, pool_scores(vectors), threshold)


def board_of(row: Mapping[str, str]) -> str:
    """A pool row's board: its `boardname`, else the directory of its test image."""
    return (row.get("boardname") or "").strip() or posixpath.dirname(row.get("filepath", ""))


def pool_scores(vectors: Embeddings) -> np.ndarray:
    """`siamese_score` of every embedded pool row (the embed action writes it beside each vector)."""
    if SCORE_COLUMN not in vectors.columns:
        raise DatasetError.at(
            f"{vectors.source.parent}/embeddings_index.csv",
            f"has no {SCORE_COLUMN} column, which deft.mining_rank: uncertainty ranks by",
            "embed with a runtime that writes the score of every row, or set deft.mining_rank: per_target",
        )
    return np.array([_score(row, vectors, number) for number, row in enumerate(vectors.rows, start=1)])


def _score(row: Mapping[str, str], vectors: Embeddings, number: int) -> float:
    try:
        value = float(row[SCORE_COLUMN])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError.at(
            f"{vectors.source.parent}/embeddings_index.csv: row {number}, column {SCORE_COLUMN}",
            f"{row[SCORE_COLUMN]!r} is not a finite score",
            "re-run the mining stage (its embed job writes every score)",
        )
    return value


def rule_fields(choice: Choice) -> dict[str, object]:
    """State fields of the mining commit that record the rules' picks."""
    return {"mining_picked_by_rule": dict(choice.picked_by_rule)}
