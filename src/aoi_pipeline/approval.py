"""The approval record: what a reviewer (or a standing pre-approval) decided about one plan.

The gate shows the pre-flight plan and waits for an `ApprovalForm`: an explicit, required choice between
approve and reject (an untouched form must never approve), the reviewer's name and a comment. The form holds
no plan hash a reviewer could edit: the gate binds the answer to the plan it paused on (and records that plan
with the paused run), so an approval of yesterday's plan cannot launch today's different one. Pre-approval
(CLI `--yes`, nightly schedules) is accepted only when its hash equals the current plan's and is recorded
exactly like a human decision. The paused run's state message and a rejected run's end state say, in one
line each, what the run waits for and who stopped it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aoi_pipeline.errors import AoiPipelineError

APPROVAL_FILE = "approval.json"
# The pause key of the gate, and the flow-run input that holds {"plan_hash", "summary"} of the plan it paused on.
GATE_KEY = "plan-approval"
PLAN_INPUT_KEY = f"{GATE_KEY}-plan"


class ApprovalForm(BaseModel):
    """The typed form a reviewer submits in the Prefect UI or with `aoi-pipeline approve`."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"] = Field(
        description="approve: run all three phases without pausing again; reject: end the run, write nothing"
    )
    reviewer: str = Field(min_length=1, description="who decides (recorded in the run)")
    comment: str = Field(default="", description="why (recorded in the run)")


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


def waiting_message(plan_hash: str, summary: str) -> str:
    """The paused run's state message: which plan it waits on, in one line."""
    return f"Waiting for approval of plan {plan_hash}: {' '.join(summary.split())}"


def rejection_message(record: ApprovalRecord) -> str:
    """The rejected run's end-state message."""
    return f"Rejected by {record.reviewer}: {' '.join(record.comment.split()) or '(no comment)'}"


def check_bound_plan(bound_hash: str | None, expected_hash: str) -> None:
    """A stored answer holds only for the plan the run paused on; refuse it for a plan that changed since."""
    if bound_hash != expected_hash:
        raise AoiPipelineError.at(
            f"approval of plan {bound_hash!r}",
            f"the run paused on plan {bound_hash!r} but the plan is now {expected_hash!r} (the inputs changed)",
            "start a new run (a new --run-name) and approve the plan it shows",
        )


def record_from_form(form: ApprovalForm, plan_hash: str) -> ApprovalRecord:
    """The reviewer's decision, bound to the plan the run paused on (the form carries no hash of its own)."""
    return ApprovalRecord(
        decision=form.decision,
        reviewer=form.reviewer,
        comment=form.comment,
        plan_hash=plan_hash,
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
