"""A persistent local Prefect server for users who have none: one per database, never two.

The approval gate needs a server that outlives the flow process (a temporary server dies with it and the
paused run can never be resumed). When `PREFECT_API_URL` is unset, the CLI calls `ensure_local_server`:
it reuses the server it started earlier (recorded in `server.json` under the user data directory), or starts
`prefect server start` in the background with its SQLite database in the same directory, waits until
`/api/health` answers, and points this process at it.

Two servers on one SQLite file fail each other's writes ("database is locked"), so one lock guards the
database: the server process inherits an exclusive `flock` on `server.lock` and holds it for as long as it
lives. A server that holds the lock is alive even when its health check is slow (it is busy, or the machine
is loaded): it gets `HEALTH_WAIT_S` to answer before it is declared hung, and a hung server is stopped, its
lock seen released, before its replacement starts. Starting is serialised by a second lock, so two commands
started at once share one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.errors import AoiPipelineError

DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 120.0
# A loaded machine can keep a busy server from answering for a while; only a long silence means hung.
HEALTH_TIMEOUT_S = 10.0
HEALTH_WAIT_S = 60.0
STOP_GRACE_S = 30.0
SERVER_LOCK = "server.lock"
START_LOCK = "start.lock"


@dataclass(frozen=True)
class LocalServer:
    """Where the local server listens and how it was found."""

    api_url: str
    ui_url: str
    pid: int | None
    home: Path
    started: bool


def data_dir() -> Path:
    """The user data directory of aoi-pipeline (XDG_DATA_HOME or ~/.local/share)."""
    override = os.environ.get("AOI_PIPELINE_HOME")
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aoi-pipeline"


def is_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when a Prefect API answers its health check at `api_url`."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200 and response.read().strip() == b"true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _pick_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _urls(port: int) -> tuple[str, str]:
    return f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"


def _recorded(home: Path) -> LocalServer | None:
    record = home / "server.json"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return LocalServer(data["api_url"], data["ui_url"], data.get("pid"), home, started=False)
    except (OSError, ValueError, KeyError):
        return None


def _server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _database_lock_free(home: Path) -> bool:
    """Whether no server process holds the database lock (a free lock is taken and dropped at once)."""
    descriptor = os.open(home / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)  # closing drops the lock again
    return True


def _group_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    # A server this process started and stopped stays a zombie, still found by killpg, until it is reaped.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_alive(home: Path, server: LocalServer | None) -> bool:
    return not _database_lock_free(home) or (server is not None and _group_alive(server.pid))


def _stop(home: Path, pid: int | None) -> None:
    """Stop the server process group `pid` and wait until the database lock is free again."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while (_group_alive(pid) or not _database_lock_free(home)) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE_S
    while not _database_lock_free(home):
        if time.monotonic() >= deadline:
            raise AoiPipelineError.at(
                str(home / SERVER_LOCK),
                "a Prefect server that does not answer still holds the local database and could not be stopped",
                f"stop the process that holds {home / SERVER_LOCK} (`fuser {home / SERVER_LOCK}`), then retry",
            )
        time.sleep(0.2)


def _start(home: Path, port: int) -> LocalServer:
    api_url, ui_url = _urls(port)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_URL": ui_url,
    }
    env.pop("PREFECT_API_URL", None)
    # The server inherits the database lock and holds it until it exits: no second server can start.
    lock = os.open(home / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with (home / "server.log").open("ab") as log:
            process = subprocess.Popen(
                _server_command(port),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(lock,),
                start_new_session=True,
            )
    finally:
        os.close(lock)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if is_healthy(api_url):
            server = LocalServer(api_url, ui_url, process.pid, home, started=True)
            (home / "server.json").write_text(
                json.dumps({"api_url": api_url, "ui_url": ui_url, "pid": process.pid}), encoding="utf-8"
            )
            return server
        if process.poll() is not None:
            break
        time.sleep(0.5)
    _stop(home, process.pid)
    raise AoiPipelineError.at(
        str(home / "server.log"),
        f"the local Prefect server did not become healthy at {api_url} within {STARTUP_TIMEOUT_S:.0f} s",
        "read the server log above; or start a server yourself and set PREFECT_API_URL",
    )


def _answers(server: LocalServer | None, home: Path) -> bool:
    """Whether the recorded server answers, giving a live but busy one `HEALTH_WAIT_S` to do so."""
    if server is None:
        return False
    deadline = time.monotonic() + HEALTH_WAIT_S
    while True:
        if is_healthy(server.api_url, timeout_s=HEALTH_TIMEOUT_S):
            return True
        if not _server_alive(home, server) or time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def ensure_local_server(preferred_port: int = DEFAULT_PORT) -> LocalServer:
    """Reuse or start the persistent local server and point this process at it."""
    home = data_dir()
    home.mkdir(parents=True, exist_ok=True)
    with _flock(home / START_LOCK):
        server = _recorded(home)
        if not _answers(server, home):
            if _server_alive(home, server):  # alive but hung: replace it, never run a second one beside it
                _stop(home, server.pid if server is not None else None)
            server = _start(home, _pick_port(preferred_port))
    assert server is not None  # a server that answers was recorded; otherwise one was just started
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ.setdefault("PREFECT_UI_URL", server.ui_url)
    return server


def stop_local_server() -> bool:
    """Stop the server `ensure_local_server` started; True when one was running."""
    home = data_dir()
    server = _recorded(home)
    if server is None or server.pid is None:
        return False
    try:
        if not _group_alive(server.pid):
            return False
        _stop(home, server.pid)
    finally:
        (home / "server.json").unlink(missing_ok=True)
    return True
