"""The approval gate: pause the run on a typed form until a reviewer decides, or accept a pre-approval.

The form carries the decision, the reviewer and a comment, nothing a reviewer could edit to change what is
approved: the gate binds the answer to the plan it paused on. Before pausing it records that plan (hash and
one-line summary) as an input of the flow run, which `aoi-pipeline approve` shows, and pauses with the state
message "Waiting for approval of plan <hash>: <summary>" (Prefect's `pause_flow_run` cannot set a message, so
the pause is proposed here, the way Prefect proposes it). The stored answer is read before pausing, so an
in-process retry never pauses twice on one key (which Prefect 3.8 answers with a 409). The decision has no
default: an untouched form cannot approve.
"""

from __future__ import annotations

import time
from typing import Any, cast
from uuid import UUID

from prefect import State, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext, get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput, keyset_from_paused_state
from prefect.input.actions import create_flow_run_input, read_flow_run_input
from prefect.states import Paused

from aoi_pipeline.approval import (
    GATE_KEY,
    PLAN_INPUT_KEY,
    ApprovalForm,
    ApprovalRecord,
    check_bound_plan,
    record_from_form,
    record_from_preapproval,
    waiting_message,
)


class ApprovalInput(RunInput, ApprovalForm):
    """The approval form as Prefect renders it in the UI."""


def _flow_run_id() -> UUID:
    # The gate runs in the flow itself, so the context is a flow run's, and it carries that flow run.
    return cast(FlowRunContext, get_run_context()).flow_run.id  # type: ignore[union-attr]


def _read_input(key: str) -> Any:
    # Called from synchronous code, read_flow_run_input returns the stored value, not a coroutine.
    return read_flow_run_input(key, flow_run_id=_flow_run_id())


def _stored_answer() -> dict[str, Any] | None:
    return cast("dict[str, Any] | None", _read_input(f"paused-{GATE_KEY}-response"))


def _bound_plan_hash() -> str | None:
    bound = _read_input(PLAN_INPUT_KEY)
    return str(bound["plan_hash"]) if isinstance(bound, dict) and "plan_hash" in bound else None


def _bind_plan(plan_hash: str, summary: str) -> None:
    if _read_input(PLAN_INPUT_KEY) is None:
        create_flow_run_input(PLAN_INPUT_KEY, {"plan_hash": plan_hash, "summary": summary}, flow_run_id=_flow_run_id())


def _pause_for_decision(*, description: str, message: str, timeout_s: int, poll_interval_s: int) -> ApprovalForm:
    """Pause with `message` until the form is submitted; what `pause_flow_run(wait_for_input=...)` does."""
    form_type = ApprovalInput.with_initial_data(description=description)
    flow_run_id = _flow_run_id()
    state: State[Any] = Paused(timeout_seconds=timeout_s, reschedule=False, pause_key=GATE_KEY, message=message)
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = {str(name): key for name, key in keyset.items()}
    with get_client(sync_client=True) as client:
        answered = client.set_flow_run_state(flow_run_id, state).state
        if answered is None or not answered.is_paused():
            # The server refuses a second pause on a key that fired: the run was resumed with an answer.
            return ApprovalForm.model_validate(_stored_answer() or {})
        form_type.save(keyset, flow_run_id=flow_run_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(min(poll_interval_s, max(deadline - time.monotonic(), 0)))
            current = client.read_flow_run(flow_run_id).state
            if current is not None and current.is_running():
                # Called from synchronous code, load returns the answer, not a coroutine.
                answer = cast(ApprovalInput, form_type.load(keyset, flow_run_id=flow_run_id))
                return ApprovalForm.model_validate(answer.model_dump())
    raise FlowPauseTimeout("Flow run was paused and never resumed.")


def approval_gate(
    *,
    description: str,
    plan_hash: str,
    summary: str,
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
        check_bound_plan(_bound_plan_hash(), plan_hash)
        form = ApprovalForm.model_validate(stored)
    else:
        _bind_plan(plan_hash, summary)
        logger.info(
            "%s. Approve in the Prefect UI (Resume) or run `aoi-pipeline approve --latest --reviewer NAME`",
            waiting_message(plan_hash, summary),
        )
        form = _pause_for_decision(
            description=description,
            message=waiting_message(plan_hash, summary),
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
        )
    record = record_from_form(form, plan_hash)
    verdict = "approved" if record.approved else "rejected"
    logger.info("plan %s %s by %s: %s", plan_hash, verdict, record.reviewer, record.comment or "-")
    return record
