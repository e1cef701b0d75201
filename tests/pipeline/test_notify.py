"""The approval notification: one channel, and an automation that fires on Paused runs of the pipeline only."""

from __future__ import annotations

import uuid

import pytest

from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.pipeline.notify import (
    AUTOMATION_NAME,
    approval_automation,
    check_notification_keys,
    register_approval_notification,
)


def test_two_channels_are_refused_naming_both_keys():
    check_notification_keys({"AOI_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    with pytest.raises(AoiPipelineError) as raised:
        check_notification_keys({"AOI_NOTIFY_WEBHOOK_URL": "http://a", "AOI_NOTIFY_SLACK_WEBHOOK_URL": "http://b"})
    assert "AOI_NOTIFY_WEBHOOK_URL and AOI_NOTIFY_SLACK_WEBHOOK_URL" in str(raised.value)


def test_without_a_channel_nothing_is_registered():
    assert register_approval_notification({"NGC_API_KEY": "x"}) == []


def test_the_automation_sends_the_block_the_waiting_message_on_paused_pipeline_runs():
    block_id = uuid.uuid4()
    automation = approval_automation(block_id)
    assert automation.name == AUTOMATION_NAME
    assert automation.trigger.expect == {"prefect.flow-run.Paused"}
    related = {"prefect.resource.role": "flow", "prefect.resource.name": "aoi-pipeline"}
    assert automation.trigger.match_related.model_dump() == related
    (action,) = automation.actions
    assert action.block_document_id == block_id
    assert "{{ flow_run.state.message }}" in action.body and "{{ flow_run|ui_url }}" in action.body
