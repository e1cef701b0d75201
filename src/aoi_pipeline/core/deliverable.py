"""Which candidate of a run is its deliverable: the one rule the handoff and the run report both apply.

The candidates are the completed, evaluated entries of `deft_state.json` (the baseline, every DEFT iteration
and Phase 3's `final_automl`); the metric contract's own selection (`pick_best`: constraints first, then the
value, ties to the earlier entry) chooses among them. `best_model.json` is written from this choice and the
run report states it from the same state, so the two cannot name different models.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import Candidate, check_result, pick_best


def completed_candidates(
    state: Mapping[str, Any], contract: MetricContract, *, exclude: Collection[str] = ()
) -> list[tuple[Candidate, Mapping[str, Any]]]:
    """(candidate, its state entry) of every completed entry with a metric result, in the state's order."""
    candidates = []
    for label, entry in state["iterations"].items():
        raw = entry.get("metric_result")
        if label in exclude or entry.get("status") != "complete" or not isinstance(raw, Mapping):
            continue
        result = check_result(contract, raw, where=f"deft_state.json iterations.{label}.metric_result")
        candidates.append((Candidate(label, result), entry))
    return candidates


def best_completed(
    state: Mapping[str, Any], *, exclude: Collection[str] = ()
) -> tuple[Candidate, Mapping[str, Any]] | None:
    """The contract's best completed candidate of the run and its state entry (None: nothing evaluated yet)."""
    contract = MetricContract.from_dict(state["metric_contract"])
    candidates = completed_candidates(state, contract, exclude=exclude)
    best = pick_best(contract, [candidate for candidate, _ in candidates])
    if best is None:
        return None
    return next((candidate, entry) for candidate, entry in candidates if candidate.label == best.label)
