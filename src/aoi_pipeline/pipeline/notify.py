"""Telling approvers that a run waits: a notification block and a Prefect automation on the Paused state.

`register_approval_notification` saves the notification block the user chose and (re)creates one automation,
`aoi-pipeline: approval needed`, that fires on every `prefect.flow-run.Paused` event of the `aoi-pipeline`
flow and sends the block a message naming the run, the plan it waits on (the paused state's message) and its
link in the Prefect UI (set PREFECT_UI_URL on the server for the link). Prefect's triggers and actions services
of the server send it; nothing runs in the pipeline's own process.

Keys, from the environment or the file given to `aoi-pipeline blocks register --file` (give one of them):
AOI_NOTIFY_WEBHOOK_URL (any HTTP endpoint: Prefect's custom webhook block POSTs JSON `{"subject", "text"}`),
AOI_NOTIFY_SLACK_WEBHOOK_URL (a Slack incoming webhook: Prefect's Slack block). A URL
often holds a token: it is stored only in the block and never printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aoi_pipeline.errors import AoiPipelineError

NOTIFY_BLOCK = "aoi-approval-notification"
AUTOMATION_NAME = "aoi-pipeline: approval needed"
NOTIFY_SOURCE_KEYS = ("AOI_NOTIFY_WEBHOOK_URL", "AOI_NOTIFY_SLACK_WEBHOOK_URL")
PIPELINE_FLOW = "aoi-pipeline"

SUBJECT = "aoi-pipeline run {{ flow_run.name }} waits for approval"
BODY = (
    "{{ flow_run.state.message }}\n"
    "Review the plan and decide in the Prefect UI (Resume): {{ flow_run|ui_url }}\n"
    "or on a terminal: aoi-pipeline approve {{ flow_run.name }} --reviewer NAME [--reject]"
)


def check_notification_keys(source: Mapping[str, str]) -> None:
    """One notification block holds one channel: refuse two channels before anything is saved."""
    given = [key for key in NOTIFY_SOURCE_KEYS if source.get(key)]
    if len(given) > 1:
        raise AoiPipelineError.at(
            " and ".join(given), "are both given, but approvers are notified on one channel", "give only one of them"
        )


def _notification_block(source: Mapping[str, str]) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    if source.get("AOI_NOTIFY_SLACK_WEBHOOK_URL"):
        # pydantic turns the text into a SecretStr.
        return SlackWebhook(url=source["AOI_NOTIFY_SLACK_WEBHOOK_URL"])  # type: ignore[arg-type]
    return CustomWebhookNotificationBlock(
        name=NOTIFY_BLOCK,
        url=source["AOI_NOTIFY_WEBHOOK_URL"],
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        headers=None,
        cookies=None,
    )


def approval_automation(block_document_id: Any) -> Any:
    """The automation: on a Paused event of an `aoi-pipeline` flow run, send the block the waiting message."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=AUTOMATION_NAME,
        description="Tells approvers that an aoi-pipeline run paused on its plan (aoi-pipeline blocks register).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Paused"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": PIPELINE_FLOW},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    )


def register_approval_notification(source: Mapping[str, str]) -> list[str]:
    """Save the notification block and (re)create the automation when `source` names a channel."""
    if not any(source.get(key) for key in NOTIFY_SOURCE_KEYS):
        return []
    from prefect import get_client

    block = _notification_block(source)
    block_document_id = block.save(NOTIFY_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(existing.id)
        client.create_automation(approval_automation(block_document_id))
    return [NOTIFY_BLOCK, f"automation '{AUTOMATION_NAME}'"]
