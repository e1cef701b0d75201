"""Approvers are told when a run waits: `blocks register` with a webhook URL, a real Prefect server's
automation on the Paused state, and a webhook receiver on 127.0.0.1 that gets the message."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aoi_pipeline.pipeline.notify import AUTOMATION_NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on 127.0.0.1: its URL and the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/approvals", received
    server.shutdown()


def _delete_automation(api_url: str) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(automation.id)


def test_a_paused_run_sends_the_registered_webhook_its_plan_and_link(
    prefect_server_url, aoi_command, webhook, pipeline_in_thread, wait_for
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aoi_pipeline.control import decide, list_runs

    url, received = webhook
    env = {**os.environ, "PREFECT_API_URL": prefect_server_url, "AOI_NOTIFY_WEBHOOK_URL": url}
    registered = subprocess.run(
        [*aoi_command, "blocks", "register"], env=env, capture_output=True, text=True, timeout=120
    )
    assert registered.returncode == 0, registered.stderr
    assert "aoi-approval-notification" in registered.stdout and AUTOMATION_NAME in registered.stdout
    assert url not in registered.stdout + registered.stderr, "the webhook URL (it may hold a token) was printed"
    try:
        running = pipeline_in_thread("run_notify")
        (message,) = wait_for("webhook call", lambda: [m for m in received if "run_notify" in m["subject"]])
        with temporary_settings({PREFECT_API_URL: prefect_server_url}):
            (info,) = list_runs(run="run_notify")
            assert info.paused
            assert message["subject"] == "aoi-pipeline run run_notify waits for approval"
            assert info.message.startswith("Waiting for approval of plan ")
            assert info.message in message["text"]
            assert f"{prefect_server_url.removesuffix('/api')}/runs/flow-run/{info.id}" in message["text"]
            assert "aoi-pipeline approve run_notify" in message["text"]
            decide("run_notify", reviewer="pager", comment="seen", reject=True)
        assert running.join_state().is_cancelled()
    finally:
        _delete_automation(prefect_server_url)
