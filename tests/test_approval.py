"""The approval record: the plan hash, the typed form, and the rule that a decision covers only its plan."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aoi_pipeline.approval import (
    ApprovalForm,
    ApprovalRecord,
    check_bound_plan,
    plan_hash,
    record_from_form,
    record_from_preapproval,
    rejection_message,
    waiting_message,
)
from aoi_pipeline.errors import AoiPipelineError

PLAN: dict[str, Any] = {
    "workspace": "/data/ws",
    "kpi_target": "FAR < 5% at Recall=100%",
    "phase1": {"recommendations": 5, "parallel": 2, "num_epochs": 10, "search_space": ["lr", "momentum"]},
    "deft": {"max_iterations": 3, "enabled": True},
    "estimate_minutes": 42.5,
    "credentials": [],
    "spec": None,
}


def _leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [path for key, child in node.items() for path in _leaf_paths(child, (*prefix, key))]
    if isinstance(node, list) and node:
        return [path for index, child in enumerate(node) for path in _leaf_paths(child, (*prefix, index))]
    return [prefix]


def _with_leaf(plan: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(plan)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


def _reordered(node: Any, rng: random.Random) -> Any:
    if isinstance(node, dict):
        keys = list(node)
        rng.shuffle(keys)
        return {key: _reordered(node[key], rng) for key in keys}
    if isinstance(node, list):
        return [_reordered(item, rng) for item in node]
    return node


def _form(**changes: Any) -> ApprovalForm:
    data = {
        "decision": "approve",
        "reviewer": "ana",
        "comment": "looks right",
        **changes,
    }
    return ApprovalForm(**data)


def test_the_plan_hash_ignores_key_order_at_every_level():
    rng = random.Random(7)
    expected = plan_hash(PLAN)
    for _ in range(10):
        reordered = _reordered(PLAN, rng)
        assert plan_hash(reordered) == expected


def test_changing_any_single_value_changes_the_plan_hash():
    original = plan_hash(PLAN)
    paths = _leaf_paths(PLAN)
    assert len(paths) >= 10
    for path in paths:
        current: Any = PLAN
        for part in path:
            current = current[part]
        replacement = "changed" if not isinstance(current, str) else current + "x"
        assert plan_hash(_with_leaf(PLAN, path, replacement)) != original, path


def test_the_order_inside_a_list_and_the_type_of_a_value_are_part_of_the_plan():
    swapped = _with_leaf(PLAN, ("phase1", "search_space"), ["momentum", "lr"])
    assert plan_hash(swapped) != plan_hash(PLAN)
    as_text = _with_leaf(PLAN, ("phase1", "recommendations"), "5")
    assert plan_hash(as_text) != plan_hash(PLAN)


def test_a_plan_holding_paths_hashes_like_the_same_plan_written_as_text():
    assert plan_hash({"workspace": Path("/data/ws")}) == plan_hash({"workspace": "/data/ws"})


def test_the_form_has_no_default_decision():
    with pytest.raises(ValidationError) as raised:
        ApprovalForm(reviewer="ana")
    assert any(error["loc"] == ("decision",) and error["type"] == "missing" for error in raised.value.errors())


def test_the_form_accepts_only_approve_or_reject():
    assert _form(decision="reject").decision == "reject"
    with pytest.raises(ValidationError):
        _form(decision="yes")


def test_the_form_refuses_fields_it_does_not_define():
    with pytest.raises(ValidationError) as raised:
        _form(auto_approve=True)
    assert any(error["type"] == "extra_forbidden" for error in raised.value.errors())


def test_the_form_needs_a_reviewer_name():
    with pytest.raises(ValidationError):
        _form(reviewer="")


def test_a_form_for_the_shown_plan_becomes_a_record_of_the_reviewers_decision():
    for decision in ("approve", "reject"):
        record = record_from_form(_form(decision=decision, comment="ok by me"), "a" * 16)
        assert record.decision == decision
        assert record.approved is (decision == "approve")
        assert (record.reviewer, record.comment, record.plan_hash) == ("ana", "ok by me", "a" * 16)
        assert record.source == "prefect-ui-or-cli"
        assert record.decided_at


def test_the_form_holds_no_plan_hash_a_reviewer_could_edit():
    assert "plan_hash" not in ApprovalForm.model_json_schema()["properties"]
    with pytest.raises(ValidationError) as raised:
        _form(plan_hash="1111111111111111")
    assert any(error["type"] == "extra_forbidden" for error in raised.value.errors())


def test_a_stored_answer_holds_only_for_the_plan_the_run_paused_on():
    check_bound_plan("2222222222222222", "2222222222222222")
    with pytest.raises(AoiPipelineError) as raised:
        check_bound_plan("1111111111111111", "2222222222222222")
    message = str(raised.value)
    assert "1111111111111111" in message and "2222222222222222" in message
    assert raised.value.problems[0].fix
    with pytest.raises(AoiPipelineError):
        check_bound_plan(None, "2222222222222222")


def test_the_waiting_message_names_the_plan_and_its_summary_on_one_line():
    message = waiting_message("0123456789abcdef", "FAR < 5% at Recall=100%\n on /ws;  Phase 1 3 trials")
    assert message == "Waiting for approval of plan 0123456789abcdef: FAR < 5% at Recall=100% on /ws; Phase 1 3 trials"


def test_the_rejection_message_names_the_reviewer_and_the_comment():
    record = record_from_form(_form(decision="reject", reviewer="bob", comment="wrong\ntarget"), "a" * 16)
    assert rejection_message(record) == "Rejected by bob: wrong target"
    silent = record_from_form(_form(decision="reject", reviewer="bob", comment=""), "a" * 16)
    assert rejection_message(silent) == "Rejected by bob: (no comment)"


def test_a_preapproval_is_accepted_only_for_the_current_plan():
    record = record_from_preapproval("b" * 16, "b" * 16, reviewer="nightly")
    assert record.approved
    assert (record.plan_hash, record.reviewer, record.source) == ("b" * 16, "nightly", "pre-approval")
    with pytest.raises(AoiPipelineError) as raised:
        record_from_preapproval("b" * 16, "c" * 16, reviewer="nightly")
    assert "b" * 16 in str(raised.value) and "c" * 16 in str(raised.value)


def test_a_record_round_trips_through_json():
    record = record_from_preapproval("d" * 16, "d" * 16, reviewer="cli --yes")
    assert ApprovalRecord.model_validate_json(record.model_dump_json()) == record
