"""The persistent local Prefect server: started once under the user data directory, reused, stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.server import _group_alive, data_dir, ensure_local_server, is_healthy, stop_local_server

STOP_WAIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process_group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies (exited, not yet reaped) do not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    # This test process started the server, so it is the parent that must collect its exit status.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "aoi-home"
    monkeypatch.setenv("AOI_PIPELINE_HOME", str(home))
    # ensure_local_server points this process at its server; the fixture restores the caller's settings.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    return home


def test_the_data_directory_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AOI_PIPELINE_HOME", str(tmp_path / "explicit"))
    assert data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("AOI_PIPELINE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "aoi-pipeline"


def test_nothing_answers_on_a_closed_port():
    assert not is_healthy(f"http://127.0.0.1:{_free_port()}/api", timeout_s=0.5)


def test_stopping_without_a_recorded_server_does_nothing(home):
    assert stop_local_server() is False


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_a_local_server_is_started_once_reused_and_stopped(home):
    first = None
    # The preferred port is taken (as 4200 is when another server runs): the server must pick a free one.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy_port = int(taken.getsockname()[1])
    try:
        first = ensure_local_server(preferred_port=busy_port)
    finally:
        taken.close()
    try:
        assert first.started and first.pid is not None
        assert urlsplit(first.api_url).port not in (None, busy_port)
        assert urlsplit(first.ui_url).port == urlsplit(first.api_url).port
        assert is_healthy(first.api_url)
        assert os.environ["PREFECT_API_URL"] == first.api_url
        assert first.home == home
        recorded = json.loads((home / "server.json").read_text(encoding="utf-8"))
        assert recorded == {"api_url": first.api_url, "ui_url": first.ui_url, "pid": first.pid}
        assert (home / "prefect").is_dir(), "the server keeps its database under the data directory"

        again = ensure_local_server(preferred_port=_free_port())
        assert not again.started
        assert (again.api_url, again.pid) == (first.api_url, first.pid)

        assert stop_local_server() is True
        deadline = time.monotonic() + STOP_WAIT_S
        while _process_group_alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _process_group_alive(first.pid)
        assert not is_healthy(first.api_url)
        assert not (home / "server.json").exists()
        assert stop_local_server() is False
    finally:
        if first is not None and first.pid is not None:
            if _process_group_alive(first.pid):
                os.killpg(first.pid, signal.SIGKILL)
            _reap(first.pid)


# Answers /api/health like a Prefect server, after the delay written in the file named on its command line.
FAKE_SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

port, delay_file = int(sys.argv[1]), Path(sys.argv[2])


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(float(delay_file.read_text()) if delay_file.exists() else 0.0)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.fixture
def fake_servers(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Servers started by ensure_local_server are fake ones; yields `set_delay` for their answers, the pids."""
    import aoi_pipeline.server as server

    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    delay = tmp_path / "delay"
    started: list[int] = []
    real_start = server._start

    def start(home_: Path, port: int):
        found = real_start(home_, port)
        started.append(found.pid)
        return found

    monkeypatch.setattr(
        server, "_server_command", lambda port: [sys.executable, str(script), str(port), f"{delay}-{port}"]
    )
    monkeypatch.setattr(server, "_start", start)

    def set_delay(found: server.LocalServer, seconds: float) -> None:
        Path(f"{delay}-{urlsplit(found.api_url).port}").write_text(str(seconds))

    yield set_delay, started
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_a_busy_server_that_answers_slowly_is_reused_not_doubled(fake_servers):
    set_delay, started = fake_servers
    first = ensure_local_server(preferred_port=_free_port())
    set_delay(first, 3)  # longer than one quick health check, as under load

    again = ensure_local_server(preferred_port=_free_port())

    assert (again.started, again.pid) == (False, first.pid)
    assert started == [first.pid], "a second server was started on the same database"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_a_hung_server_is_stopped_before_its_replacement_starts(fake_servers, monkeypatch):
    import aoi_pipeline.server as server

    set_delay, _started = fake_servers
    monkeypatch.setattr(server, "HEALTH_WAIT_S", 2.0)
    monkeypatch.setattr(server, "HEALTH_TIMEOUT_S", 0.5)
    first = ensure_local_server(preferred_port=_free_port())
    set_delay(first, 600)

    replacement = ensure_local_server(preferred_port=_free_port())
    _reap(first.pid)

    assert replacement.started and replacement.pid != first.pid
    assert not _process_group_alive(first.pid), "the replaced server was left running"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_no_second_server_starts_while_an_unrecorded_one_holds_the_database(fake_servers, home, monkeypatch):
    import aoi_pipeline.server as server

    _set_delay, started = fake_servers
    monkeypatch.setattr(server, "STOP_GRACE_S", 1.0)
    first = ensure_local_server(preferred_port=_free_port())
    (home / "server.json").unlink()  # its record is lost, but it still runs on the database

    with pytest.raises(AoiPipelineError, match="still holds the local database"):
        ensure_local_server(preferred_port=_free_port())

    assert started == [first.pid]


def test_a_stopped_server_child_of_this_process_is_not_counted_alive() -> None:
    # Unreaped, the child is a zombie that killpg still finds: stopping would wait out its whole grace period.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    assert _group_alive(child.pid)
    os.killpg(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _group_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(child.pid)
