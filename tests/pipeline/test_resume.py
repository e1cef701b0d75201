"""Resuming a run directory: the recorded approval stands only for the plan it approved."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.approval import ApprovalForm, record_from_form, record_from_preapproval
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.resume import recorded_approval

HASH = "0123456789abcdef"
OTHER = "fedcba9876543210"


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    root = tmp_path / "run_20250101_000000"
    root.mkdir()
    return RunLayout(root)


def test_a_new_run_has_no_recorded_approval(layout):
    assert recorded_approval(layout, HASH) is None
    assert recorded_approval(RunLayout(layout.root / "absent"), HASH) is None


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_the_recorded_decision_for_the_same_plan_is_returned(layout, decision):
    form = ApprovalForm(decision=decision, reviewer="ana", comment="checked")
    record = record_from_form(form, HASH)
    atomic_write_json(layout.approval, record.model_dump(mode="json"))
    assert recorded_approval(layout, HASH) == record


def test_an_approval_of_another_plan_is_refused_naming_the_file_and_both_plans(layout):
    atomic_write_json(layout.approval, record_from_preapproval(OTHER, OTHER, reviewer="x").model_dump(mode="json"))
    with pytest.raises(StateError) as raised:
        recorded_approval(layout, HASH)
    message = str(raised.value)
    assert str(layout.approval) in message
    assert HASH in message and OTHER in message
    assert raised.value.problems[0].fix


@pytest.mark.parametrize(
    "content",
    [
        b"{broken",
        b"",
        b"\xff\xfe\x00",
        b"[]",
        b'{"decision": "approve", "plan_hash": "0123456789abcdef"}',
        b'{"decision": "maybe", "reviewer": "a", "comment": "", "plan_hash": "0123456789abcdef", '
        b'"decided_at": "2025-01-01T00:00:00+00:00", "source": "pre-approval"}',
    ],
    ids=["truncated", "empty", "not-utf8", "list", "missing-fields", "bad-decision"],
)
def test_an_unreadable_approval_is_a_state_error_naming_the_file(layout, content):
    layout.approval.write_bytes(content)
    with pytest.raises(StateError) as raised:
        recorded_approval(layout, HASH)
    assert str(layout.approval) in str(raised.value)
    assert layout.approval.read_bytes() == content
