"""Process groups of local jobs: whether one is alive, how to stop it, and stopping what a dead run left.

Every local job runs in its own process group led by its watchdog (`jobs/watchdog.py`); the group id is the
job record's `external_id` (`pid:<group>`). Stopping a group is SIGTERM, a grace period, then SIGKILL. On a
resume, `stop_leftover_jobs` reads the job records under a folder that is about to be redone and stops any
group still alive from a record left `pending` or `running`: a job must never write into the folder of the
job that replaces it. A group is only stopped when one of its processes still works in that job's folder,
so a recycled process id never gets an unrelated process killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

RECORD_FILE = "job.json"
_UNFINISHED = ("pending", "running")
_REAP_WAIT_S = 5.0
_RECORD_DEPTH = 3


def terminate_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the job's process group, wait up to `grace_s` for it to go, then SIGKILL what is left."""
    group = process.pid
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        if not group_alive(group):
            return
        time.sleep(0.05)
    _signal_group(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_REAP_WAIT_S)
    _wait_gone(group, _REAP_WAIT_S)


def group_alive(group: int) -> bool:
    """Whether any live (non-zombie) process is still in the process group."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return bool(group_members(group))


def group_members(group: int) -> list[int]:
    """The live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_leftover_jobs(folder: Path, grace_s: float = 3.0, *, max_depth: int | None = _RECORD_DEPTH) -> list[str]:
    """Stop the still-running jobs whose records lie in `folder` (or up to `max_depth` levels below, None: at
    any depth); their names."""
    stopped = []
    for record_path in _job_records(Path(folder), max_depth):
        group = _unfinished_group(record_path)
        if group is None or not _works_in(group, record_path.parent):
            continue
        _signal_group(group, signal.SIGTERM)
        if not _wait_gone(group, grace_s):
            _signal_group(group, signal.SIGKILL)
            _wait_gone(group, _REAP_WAIT_S)
        stopped.append(record_path.parent.name)
    return stopped


def _job_records(folder: Path, max_depth: int | None) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    base_depth = len(folder.parts)
    for directory, subdirectories, files in os.walk(folder):
        if max_depth is not None and len(Path(directory).parts) - base_depth >= max_depth:
            subdirectories.clear()
        if RECORD_FILE in files:
            found.append(Path(directory) / RECORD_FILE)
    return found


def _unfinished_group(record_path: Path) -> int | None:
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        external_id = str(record.get("external_id") or "")
        state = record.get("state")
    except (OSError, ValueError, AttributeError):
        return None
    if state not in _UNFINISHED or not external_id.startswith("pid:"):
        return None
    try:
        return int(external_id.removeprefix("pid:"))
    except ValueError:
        return None


def _works_in(group: int, job_dir: Path) -> bool:
    target = os.path.realpath(job_dir)
    for pid in group_members(group):
        with contextlib.suppress(OSError):
            if os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) == target:
                return True
    return False


def _wait_gone(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(group):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)
