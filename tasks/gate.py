"""The approval gate: pause the run on a typed form until a reviewer decides, or accept a pre-approval.

The stored answer is read before pausing, so an in-process retry never pauses twice on one key (which
Prefect 3.8 answers with a 409). The form's decision has no default: an untouched form cannot approve. The
plan hash is prefilled and checked, so a decision applies to exactly the plan that was shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from prefect import get_run_logger
from prefect.context import FlowRunContext, get_run_context
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.input.actions import read_flow_run_input

from aoi_pipeline.approval import (
    ApprovalForm,
    ApprovalRecord,
    record_from_form,
    record_from_preapproval,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

GATE_KEY = "plan-approval"


class ApprovalInput(RunInput, ApprovalForm):
    """The approval form as Prefect renders it in the UI."""


def _stored_answer() -> dict[str, Any] | None:
    # The gate runs in the flow itself, so the context is a flow run's, and it carries that flow run.
    flow_run = cast("FlowRun", cast(FlowRunContext, get_run_context()).flow_run)
    # Called from synchronous code, read_flow_run_input returns the stored value, not a coroutine.
    return cast("dict[str, Any] | None", read_flow_run_input(f"paused-{GATE_KEY}-response", flow_run_id=flow_run.id))


def approval_gate(
    *,
    description: str,
    plan_hash: str,
    preapproved_plan_hash: str | None,
    preapproved_by: str,
    timeout_s: int,
    poll_interval_s: int = 5,
) -> ApprovalRecord:
    """The decision for this plan: a pre-approval of this exact hash, else the reviewer's form."""
    logger = get_run_logger()
    if preapproved_plan_hash is not None:
        record = record_from_preapproval(preapproved_plan_hash, plan_hash, reviewer=preapproved_by)
        logger.info("plan %s pre-approved by %s", plan_hash, preapproved_by)
        return record
    stored = _stored_answer()
    if stored is not None:
        form = ApprovalForm.model_validate(stored)
    else:
        logger.info(
            "waiting for approval of plan %s: approve in the Prefect UI (Resume) or run "
            "`aoi-pipeline approve --latest --reviewer NAME`",
            plan_hash,
        )
        answer = pause_flow_run(
            wait_for_input=ApprovalInput.with_initial_data(description=description, plan_hash=plan_hash),
            timeout=timeout_s,
            poll_interval=poll_interval_s,
            key=GATE_KEY,
        )
        form = ApprovalForm.model_validate(answer.model_dump())
    record = record_from_form(form, plan_hash)
    verdict = "approved" if record.approved else "rejected"
    logger.info("plan %s %s by %s: %s", plan_hash, verdict, record.reviewer, record.comment or "-")
    return record
