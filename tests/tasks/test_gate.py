"""The approval gate: a pre-approval of this exact plan, a stored answer, or a pause on the typed form."""

from __future__ import annotations

from typing import Any

import pytest

import tasks.gate as gate
from aoi_pipeline.errors import AoiPipelineError


def ask(**changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "description": "# Plan",
        "plan_hash": "plan-1",
        "preapproved_plan_hash": None,
        "preapproved_by": "nightly",
        "timeout_s": 60,
    }
    return gate.approval_gate(**{**arguments, **changes})


def never_pause(**_: Any) -> Any:
    raise AssertionError("the gate paused although the decision was already known")


def test_a_preapproval_of_this_plan_approves_without_pausing(task_log, monkeypatch):
    monkeypatch.setattr(gate, "pause_flow_run", never_pause)
    record = ask(preapproved_plan_hash="plan-1")
    assert (record.decision, record.reviewer, record.source) == ("approve", "nightly", "pre-approval")


def test_a_preapproval_of_another_plan_is_refused(task_log, monkeypatch):
    monkeypatch.setattr(gate, "pause_flow_run", never_pause)
    with pytest.raises(AoiPipelineError, match="pre-approval is for plan"):
        ask(preapproved_plan_hash="plan-0")


def test_a_stored_answer_is_used_instead_of_pausing_again(task_log, monkeypatch):
    stored = {"decision": "reject", "reviewer": "qa", "comment": "too costly", "plan_hash": "plan-1"}
    monkeypatch.setattr(gate, "_stored_answer", lambda: stored)
    monkeypatch.setattr(gate, "pause_flow_run", never_pause)
    record = ask()
    assert (record.decision, record.reviewer, record.comment) == ("reject", "qa", "too costly")
    assert "plan plan-1 rejected by qa: too costly" in task_log.text


def test_otherwise_the_run_pauses_on_the_prefilled_form_and_the_answer_decides(task_log, monkeypatch):
    paused: list[dict[str, Any]] = []

    def pause_flow_run(**options: Any) -> Any:
        paused.append(options)
        return gate.ApprovalForm(decision="approve", reviewer="lead", comment="", plan_hash="plan-1")

    monkeypatch.setattr(gate, "_stored_answer", lambda: None)
    monkeypatch.setattr(gate, "pause_flow_run", pause_flow_run)
    record = ask(timeout_s=3600)
    assert record.approved and record.reviewer == "lead"
    ((options,),) = [tuple(paused)]
    assert (options["key"], options["timeout"]) == (gate.GATE_KEY, 3600)


def test_an_answer_for_another_plan_is_refused(task_log, monkeypatch):
    monkeypatch.setattr(gate, "_stored_answer", lambda: {"decision": "approve", "reviewer": "x", "plan_hash": "old"})
    with pytest.raises(AoiPipelineError, match="waiting on plan 'plan-1'"):
        ask()
