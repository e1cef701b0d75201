"""The approval record: what a reviewer (or a standing pre-approval) decided about one plan.

The gate shows the pre-flight plan and waits for an `ApprovalForm`: an explicit, required choice between
approve and reject (an untouched form must never approve), the reviewer's name and a comment. Every decision
is tied to the plan hash it was made for, so an approval of yesterday's plan cannot launch today's different
one. Pre-approval (CLI `--yes`, nightly schedules) is accepted only when its hash equals the current plan's
and is recorded exactly like a human decision.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aoi_pipeline.errors import AoiPipelineError

APPROVAL_FILE = "approval.json"


class ApprovalForm(BaseModel):
    """The typed form a reviewer submits in the Prefect UI or with `aoi-pipeline approve`."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"] = Field(
        description="approve: run all three phases without pausing again; reject: end the run, write nothing"
    )
    reviewer: str = Field(min_length=1, description="who decides (recorded in the run)")
    comment: str = Field(default="", description="why (recorded in the run)")
    plan_hash: str = Field(description="the plan this decision is about (prefilled; do not edit)")


class ApprovalRecord(BaseModel):
    """A decision as stored in the run directory and in the Prefect artifacts."""

    decision: Literal["approve", "reject"]
    reviewer: str
    comment: str
    plan_hash: str
    decided_at: str
    source: Literal["prefect-ui-or-cli", "pre-approval"]

    @property
    def approved(self) -> bool:
        return self.decision == "approve"


def plan_hash(plan: dict[str, Any]) -> str:
    """A stable hash of the plan: canonical JSON, so key order and formatting never change it."""
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_from_form(form: ApprovalForm, expected_hash: str) -> ApprovalRecord:
    """Accept a submitted form only for the plan that was shown."""
    if form.plan_hash != expected_hash:
        raise AoiPipelineError.at(
            "approval form field plan_hash",
            f"the decision is for plan {form.plan_hash!r} but the run is waiting on plan {expected_hash!r}",
            "approve the plan that is shown on the paused run (its hash is prefilled in the form)",
        )
    return ApprovalRecord(
        decision=form.decision,
        reviewer=form.reviewer,
        comment=form.comment,
        plan_hash=form.plan_hash,
        decided_at=_now(),
        source="prefect-ui-or-cli",
    )


def record_from_preapproval(preapproved_hash: str, expected_hash: str, *, reviewer: str) -> ApprovalRecord:
    """Accept a standing pre-approval only when it names exactly the current plan."""
    if preapproved_hash != expected_hash:
        raise AoiPipelineError.at(
            "parameter preapproved_plan_hash",
            f"pre-approval is for plan {preapproved_hash!r} but the current plan is {expected_hash!r}",
            "review the new plan (run without pre-approval and approve it), then pre-approve its hash",
        )
    return ApprovalRecord(
        decision="approve",
        reviewer=reviewer,
        comment=f"pre-approved plan {preapproved_hash}",
        plan_hash=preapproved_hash,
        decided_at=_now(),
        source="pre-approval",
    )
