"""A persistent local Prefect server for users who have none.

The approval gate needs a server that outlives the flow process (a temporary server dies with it and the
paused run can never be resumed). When `PREFECT_API_URL` is unset, the CLI calls `ensure_local_server`:
it reuses the server it started earlier (recorded in `server.json` under the user data directory) if that
one still answers, or starts `prefect server start` in the background with its SQLite database in the same
directory, waits until `/api/health` answers, and points this process at it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.errors import AoiPipelineError

DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 120.0


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
    log = (home / "server.log").open("ab")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
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
    process.kill()
    raise AoiPipelineError.at(
        str(home / "server.log"),
        f"the local Prefect server did not become healthy at {api_url} within {STARTUP_TIMEOUT_S:.0f} s",
        "read the server log above; or start a server yourself and set PREFECT_API_URL",
    )


def ensure_local_server(preferred_port: int = DEFAULT_PORT) -> LocalServer:
    """Reuse or start the persistent local server and point this process at it."""
    home = data_dir()
    home.mkdir(parents=True, exist_ok=True)
    server = _recorded(home)
    if server is None or not is_healthy(server.api_url):
        server = _start(home, _pick_port(preferred_port))
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
        os.killpg(server.pid, 15)
    except ProcessLookupError:
        return False
    finally:
        (home / "server.json").unlink(missing_ok=True)
    return True
