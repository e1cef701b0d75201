"""The approval gate: a pre-approval of this exact plan, a stored answer, or a pause on the typed form.

The gate's pause on a real server (its state message, the bound plan, the form's fields) is tested in
tests/flows/test_aoi_pipeline.py.
"""

from __future__ import annotations

from typing import Any

import pytest

import tasks.gate as gate
from aoi_pipeline.errors import AoiPipelineError


def ask(**changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "description": "# Plan",
        "plan_hash": "plan-1",
        "summary": "FAR < 5% at Recall=100% on /ws",
        "preapproved_plan_hash": None,
        "preapproved_by": "nightly",
        "timeout_s": 60,
    }
    return gate.approval_gate(**{**arguments, **changes})


def never_pause(**_: Any) -> Any:
    raise AssertionError("the gate paused although the decision was already known")


def test_a_preapproval_of_this_plan_approves_without_pausing(task_log, monkeypatch):
    monkeypatch.setattr(gate, "_pause_for_decision", never_pause)
    record = ask(preapproved_plan_hash="plan-1")
    assert (record.decision, record.reviewer, record.source) == ("approve", "nightly", "pre-approval")


def test_a_preapproval_of_another_plan_is_refused(task_log, monkeypatch):
    monkeypatch.setattr(gate, "_pause_for_decision", never_pause)
    with pytest.raises(AoiPipelineError, match="pre-approval is for plan"):
        ask(preapproved_plan_hash="plan-0")


def test_a_stored_answer_for_the_bound_plan_is_used_instead_of_pausing_again(task_log, monkeypatch):
    stored = {"decision": "reject", "reviewer": "qa", "comment": "too costly"}
    monkeypatch.setattr(gate, "_stored_answer", lambda: stored)
    monkeypatch.setattr(gate, "_bound_plan_hash", lambda: "plan-1")
    monkeypatch.setattr(gate, "_pause_for_decision", never_pause)
    record = ask()
    assert (record.decision, record.reviewer, record.comment, record.plan_hash) == (
        "reject",
        "qa",
        "too costly",
        "plan-1",
    )
    assert "plan plan-1 rejected by qa: too costly" in task_log.text


def test_a_stored_answer_for_a_plan_that_changed_since_is_refused(task_log, monkeypatch):
    monkeypatch.setattr(gate, "_stored_answer", lambda: {"decision": "approve", "reviewer": "x"})
    monkeypatch.setattr(gate, "_bound_plan_hash", lambda: "old")
    monkeypatch.setattr(gate, "_pause_for_decision", never_pause)
    with pytest.raises(AoiPipelineError, match="the run paused on plan 'old' but the plan is now 'plan-1'"):
        ask()


def test_otherwise_the_plan_is_bound_and_the_run_pauses_with_a_message_naming_it(task_log, monkeypatch):
    paused: list[dict[str, Any]] = []
    bound: list[tuple[str, str]] = []

    def pause(**options: Any) -> Any:
        paused.append(options)
        return gate.ApprovalForm(decision="approve", reviewer="lead", comment="")

    monkeypatch.setattr(gate, "_stored_answer", lambda: None)
    monkeypatch.setattr(gate, "_bind_plan", lambda plan_hash, summary: bound.append((plan_hash, summary)))
    monkeypatch.setattr(gate, "_pause_for_decision", pause)
    record = ask(timeout_s=3600)
    assert record.approved and record.reviewer == "lead" and record.plan_hash == "plan-1"
    assert bound == [("plan-1", "FAR < 5% at Recall=100% on /ws")]
    ((options,),) = [tuple(paused)]
    assert options["timeout_s"] == 3600
    assert options["message"] == "Waiting for approval of plan plan-1: FAR < 5% at Recall=100% on /ws"
    assert options["description"] == "# Plan"
