"""The cuts after k-NN mining: a similarity floor calibrated per target, and the pool budget.

A fixed cosine cut (`min_similarity`) cannot tell "looks like this failure" from "same board design": with a
descriptor that sees the board, every tile of a design sits above 0.9 to every other. The calibrated cut
asks instead how unusual a candidate's similarity is *for its target*: over the whole pool, the target's
similarities have a mean and a spread, and a candidate is kept only when it lies `min_z` spreads above that
mean. A target that resembles the whole pool (a generic trace tile) then keeps only near-copies; a target
with a distinctive defect keeps what shares it. The moments are exact (the pool's mean vector and
second-moment matrix, one pass in chunks), so mining stays exact and a million-row pool costs one extra
matrix product. Then the pool budget: mining never keeps more rows than the run's budget has left, best
first. Both cuts are counted, so the mining log says how many candidates each removed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from aoi_pipeline.core.mining import KEPT, Selection

BELOW_TARGET_CUT = "below_target_cut"
OVER_POOL_BUDGET = "over_pool_budget"


def pool_similarity_moments(
    targets: np.ndarray, pool: np.ndarray, *, chunk_rows: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(mean [T], standard deviation [T]) of every target's cosine similarity to every pool row, exactly.

    With unit rows, sim(t, p) = t . p, so the mean is t . m (m the pool's mean row) and the variance is
    t' S t - (t . m)^2 (S the pool's second-moment matrix), accumulated in float64 chunk by chunk.
    """
    targets = np.asarray(targets, dtype=np.float64)
    rows, dim = pool.shape
    total = np.zeros(dim, dtype=np.float64)
    second = np.zeros((dim, dim), dtype=np.float64)
    for start in range(0, rows, chunk_rows):
        chunk = np.asarray(pool[start : start + chunk_rows], dtype=np.float32)
        total += chunk.sum(axis=0, dtype=np.float64)
        second += (chunk.T @ chunk).astype(np.float64)
    mean_row, second = total / max(rows, 1), second / max(rows, 1)
    mean = targets @ mean_row
    variance = np.einsum("td,de,te->t", targets, second, targets) - mean**2
    return mean, np.sqrt(np.clip(variance, 0.0, None))


def target_floors(mean: np.ndarray, std: np.ndarray, min_z: float) -> np.ndarray:
    """Per target, the similarity a candidate must reach: `min_z` spreads above the pool's mean."""
    return np.asarray(mean, dtype=np.float64) + float(min_z) * np.asarray(std, dtype=np.float64)


@dataclass(frozen=True)
class CutCounts:
    """How many candidates each cut removed, and the floors' range (None without a calibrated cut)."""

    below_target_cut: int
    over_pool_budget: int
    min_z: float | None
    floor_range: tuple[float, float] | None

    def calibrated_text(self) -> str | None:
        """What the calibrated cut removed, None without one."""
        if self.min_z is None or self.floor_range is None:
            return None
        low, high = self.floor_range
        return f"calibrated cut (z >= {self.min_z:g}, floors {low:.4f}-{high:.4f}) removed {self.below_target_cut}"

    def text(self) -> str:
        calibrated = self.calibrated_text()
        budget = f"pool budget removed {self.over_pool_budget}"
        return f"{calibrated}, {budget}" if calibrated else budget


def apply_cuts(
    selection: Selection, *, floors: np.ndarray | None, max_kept: int | None, min_z: float | None = None
) -> tuple[Selection, CutCounts]:
    """The selection after the calibrated cut (per candidate, against its nearest target's floor) and the
    pool budget (the best `max_kept` survivors); every removed candidate keeps its decision in the record."""
    decisions: list[tuple[object, str]] = []
    below = over = kept = 0
    for candidate, outcome in selection.decisions:
        if outcome == KEPT and floors is not None and candidate.similarity < floors[candidate.target_index]:
            outcome, below = BELOW_TARGET_CUT, below + 1
        elif outcome == KEPT and max_kept is not None and kept >= max_kept:
            outcome, over = OVER_POOL_BUDGET, over + 1
        elif outcome == KEPT:
            kept += 1
        decisions.append((candidate, outcome))
    cut = dataclasses.replace(
        selection,
        kept=tuple(candidate for candidate, outcome in decisions if outcome == KEPT),  # type: ignore[misc]
        below_target_cut=below,
        over_pool_budget=over,
        decisions=tuple(decisions),  # type: ignore[arg-type]
    )
    floor_range = (float(np.min(floors)), float(np.max(floors))) if floors is not None and len(floors) else None
    return cut, CutCounts(below, over, min_z if floors is not None else None, floor_range)
