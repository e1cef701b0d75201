"""The pool budget: how much of the production mining pool one run may take (`deft.max_pool_share`).

A loop that may mine as much as it likes can end up training on most of the pool, and then it is no longer
targeted data, just more data. The run records its budget once (`pool_budget` in the run state: the share and
the pool's row count). Two rules follow from it, both pure functions of the state: mining never keeps more
rows than the budget has left (`rows_left`), and the loop stops before an iteration that would pass the budget
(`stops_loop`), projecting the next iteration's take from the last one's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aoi_pipeline.core.state_entries import iteration_entries
from aoi_pipeline.errors import StateError

STOP_REASON = "pool_budget"


@dataclass(frozen=True)
class PoolBudget:
    """At most `max_share` of the pool's `pool_rows` rows may be mined over the whole run."""

    max_share: float
    pool_rows: int

    @property
    def allowed_rows(self) -> int:
        # A tiny epsilon keeps 0.25 x 400 at 100 rows despite binary floating point.
        return math.floor(self.max_share * self.pool_rows + 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {"max_pool_share": self.max_share, "pool_rows": self.pool_rows}

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> PoolBudget | None:
        """The budget the state records; None for a run state of a release without budgets (no cap)."""
        raw = state.get("pool_budget")
        if raw is None:
            return None
        share, rows = (raw.get("max_pool_share"), raw.get("pool_rows")) if isinstance(raw, Mapping) else (None, None)
        if not isinstance(share, int | float) or not 0 < share <= 1 or not isinstance(rows, int) or rows < 0:
            raise StateError.at(
                "deft_state.json: pool_budget",
                f"{raw!r:.80} is not a pool budget (max_pool_share in (0, 1], pool_rows >= 0)",
                "restore the run directory from a backup, or start a fresh run",
            )
        return cls(float(share), int(rows))


def mined_counts(state: Mapping[str, Any]) -> list[int]:
    """Rows mined per iteration that mined, in iteration order."""
    entries = iteration_entries(state)
    numbered = sorted((int(label[4:]), entry) for label, entry in entries.items() if label.startswith("iter"))
    return [entry.mining_mined_count for _, entry in numbered if entry.mining_mined_count is not None]


def rows_used(state: Mapping[str, Any]) -> int:
    return sum(mined_counts(state))


def rows_left(state: Mapping[str, Any]) -> int | None:
    """How many rows mining may still keep; None when the run has no budget."""
    budget = PoolBudget.of(state)
    return None if budget is None else max(budget.allowed_rows - rows_used(state), 0)


def stops_loop(state: Mapping[str, Any]) -> bool:
    """True when the next iteration would pass the budget: the budget is used up, or what is left is less than
    the last iteration mined (the best projection of the next one's take)."""
    budget = PoolBudget.of(state)
    if budget is None or budget.max_share >= 1.0:
        return False  # no budget, or the whole pool: mining can never take more than there is
    counts = mined_counts(state)
    projected = counts[-1] if counts else 0
    used = sum(counts)
    return used >= budget.allowed_rows or used + projected > budget.allowed_rows
