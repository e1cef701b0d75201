"""Resuming a run: which approval still stands when a flow runs again on an existing run directory."""

from __future__ import annotations

import json

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.layout import RunLayout


def recorded_approval(layout: RunLayout, plan_hash: str) -> ApprovalRecord | None:
    """The approval recorded in the run directory, when it approved this very plan; None for a new run."""
    if not layout.approval.exists():
        return None
    try:
        record = ApprovalRecord.model_validate(json.loads(layout.approval.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise StateError.at(
            str(layout.approval), f"cannot be read ({error})", "restore it, or start a new run (new run name)"
        ) from None
    if record.plan_hash != plan_hash:
        raise StateError.at(
            str(layout.approval),
            f"the run was approved for plan {record.plan_hash}, but the plan is now {plan_hash} "
            "(config, spec or data changed)",
            "start a new run (a new run name) and approve the new plan; never resume on a different plan",
        )
    return record
