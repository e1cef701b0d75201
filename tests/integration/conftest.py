"""Integration tests start real services: a `prefect server start` process on a free local port.

The server uses SQLite in a temporary PREFECT_HOME, or the PostgreSQL database named by
AOI_TEST_PREFECT_DATABASE_URL (CI starts one and sets it). It runs all its services (the automations'
triggers and actions included) and serves the UI on the same port, with PREFECT_UI_URL set so links in
notifications point at it and PREFECT_UI_API_URL so the UI in a browser talks to it. `pipeline_in_thread`
runs the `aoi-pipeline` flow in this process against that server, with every job on the fake runtime, so a
test can watch it pause, decide, and see how it ends.
"""

from __future__ import annotations

import contextvars
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.server import is_healthy


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
        # The UI's own API calls: without this it would call the default port 4200.
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_API_URL", None)
    database = os.environ.get("AOI_TEST_PREFECT_DATABASE_URL")
    if database:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while not is_healthy(url):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def aoi_command() -> list[str]:
    """The installed `aoi-pipeline` command of this environment."""
    return [str(Path(sys.executable).parent / "aoi-pipeline")]


FAKE_RUNTIME = Path(__file__).resolve().parents[1] / "fake_runtime.py"


class PipelineInThread:
    """The `aoi-pipeline` flow running in a thread (the gate blocks it); keeps its final state or error."""

    def __init__(self, config: Any, run_name: str, api_url: str) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.aoi_pipeline import aoi_pipeline

        self.run_name = run_name
        self.state: Any = None
        self.error: BaseException | None = None
        flow = aoi_pipeline.with_options(flow_run_name=run_name)
        with temporary_settings({PREFECT_API_URL: api_url}):
            context = contextvars.copy_context()

        def target() -> None:
            try:
                self.state = context.run(
                    flow, config=config, run_name=run_name, approval_timeout_hours=0.2, return_state=True
                )
            except BaseException as error:  # join_state re-raises it in the test
                self.error = error

        self.thread = threading.Thread(target=target, daemon=True, name=f"pipeline-{run_name}")
        self.thread.start()

    def join_state(self, timeout_s: float = 240) -> Any:
        self.thread.join(timeout=timeout_s)
        assert not self.thread.is_alive(), f"{self.run_name} did not finish"
        if self.error is not None:
            raise self.error
        return self.state


@pytest.fixture
def pipeline_in_thread(
    prefect_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], PipelineInThread]:
    """Factory: start a small pipeline run named NAME on the test server, its jobs on the fake runtime."""
    import tasks.jobs
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.jobs.gpu import GpuSlots
    from aoi_pipeline.jobs.local import LocalLauncher
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    monkeypatch.setenv("FAKE_RUNTIME_CALLS", str(tmp_path / "runtime_calls.jsonl"))
    launcher = LocalLauncher(
        gpu_slots=GpuSlots([]), command_resolver=lambda job: [sys.executable, str(FAKE_RUNTIME), job.action]
    )
    monkeypatch.setattr(tasks.jobs, "_LAUNCHER", launcher)
    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=8, size=32, seed=3))
    small = {"recommendations": 1, "parallel": 1, "num_epochs": 1, "batch_size": 4}
    config = config_from_mapping(
        {
            "workspace": str(workspace),
            "kpi_target": "FAR < 50% at Recall=100%",
            "gpus": 0,
            "spec_overrides": ["dataset.classify.image_width=32", "dataset.classify.image_height=32"],
            "phase1": small,
            "deft": {"max_iterations": 0, "num_epochs": 1},
            "phase3": {**small, "enabled": False},
        }
    )
    return lambda name: PipelineInThread(config, name, prefect_server_url)


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120, every_s: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    pytest.fail(f"no {what} within {timeout_s:.0f} s")


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """`wait_for(what, check, timeout_s=120)`: poll `check` until it is truthy, else fail naming `what`."""
    return _wait_for
