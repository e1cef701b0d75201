"""One live run per workspace: a lock file that refuses a second run and reclaims a dead run's lock.

Two runs on one workspace would interleave commits to the same run state and overwrite each other's
training sets, so a run takes `<workspace>/.aoi-pipeline.lock` before it writes anything. The file is
created with `O_CREAT | O_EXCL` and names its holder (pid, host, start time, owner) so a refused user knows
which run to wait for or cancel. A lock whose process is gone (same host, pid no longer alive, or the pid
now belongs to a process started after the lock was taken) or whose file is empty or unreadable is stale
and is reclaimed: it is renamed away first, so two runs reclaiming at once cannot both win. A lock taken on
another host is never reclaimed automatically, since its process cannot be checked from here. Acquire and
release also serialise on an advisory `flock` of the workspace directory where the filesystem supports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from aoi_pipeline.core.files import directory_flock, fsync_directory
from aoi_pipeline.errors import Problem, StateError, WorkspaceLockedError

DEFAULT_LOCK_NAME = ".aoi-pipeline.lock"
# The lock records its start to the second and /proc to the clock tick: allow for both roundings.
_PID_REUSE_TOLERANCE = timedelta(seconds=2)


@dataclass(frozen=True)
class LockInfo:
    """Who holds a workspace lock."""

    pid: int
    hostname: str
    started_at: str
    owner: str

    def describe(self) -> str:
        owner = f", owner {self.owner!r}" if self.owner else ""
        return f"pid {self.pid} on host {self.hostname!r} since {self.started_at}{owner}"


class WorkspaceLock:
    """Context manager holding the workspace lock for the lifetime of one run."""

    def __init__(self, workspace: Path, *, owner: str = "", lock_name: str = DEFAULT_LOCK_NAME) -> None:
        self.workspace = Path(workspace)
        self.path = self.workspace / lock_name
        self.owner = owner
        self.reclaimed: LockInfo | None = None  # the dead run whose lock was taken over, if any
        self.reclaimed_unreadable = False  # an empty or unreadable lock file was taken over
        self._held: LockInfo | None = None

    @property
    def held(self) -> bool:
        return self._held is not None

    def acquire(self) -> None:
        """Take the lock, reclaiming a stale one; `WorkspaceLockedError` if a live run holds it."""
        if not self.workspace.is_dir():
            raise StateError.at(
                str(self.workspace),
                "the workspace directory does not exist",
                "create the workspace (or fix the path) before starting a run",
            )
        with directory_flock(self.workspace):
            mine = LockInfo(os.getpid(), socket.gethostname(), _utc_now_text(), self.owner)
            if _create_exclusive(self.path, mine):
                self._held = mine
                return
            holder = _read_lock_file(self.path)
            if holder is not None and not _is_stale(holder):
                raise _locked_error(self.path, holder)
            self._reclaim(holder)
            if not _create_exclusive(self.path, mine):
                # Someone outside the flock (a filesystem without flock support) won the race.
                raise _locked_error(self.path, _read_lock_file(self.path))
            self._held = mine

    def release(self) -> None:
        """Remove the lock file, but only while it is still ours; a no-op when not held."""
        if self._held is None:
            return
        with directory_flock(self.workspace):
            if _read_lock_file(self.path) == self._held:
                self.path.unlink()
                fsync_directory(self.workspace)
        self._held = None

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _reclaim(self, stale: LockInfo | None) -> None:
        # Renaming first means a second reclaimer finds no file to steal, and never deletes a fresh lock.
        parked = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, parked)
            parked.unlink()
        self.reclaimed = stale
        self.reclaimed_unreadable = stale is None


def read_lock(workspace: Path, *, lock_name: str = DEFAULT_LOCK_NAME) -> LockInfo | None:
    """The holder of the workspace lock; None when there is no lock file or it is unreadable."""
    return _read_lock_file(Path(workspace) / lock_name)


def live_holder(workspace: Path, *, lock_name: str = DEFAULT_LOCK_NAME) -> LockInfo | None:
    """The live run holding the workspace lock; None when the lock is free or its holder is gone (stale)."""
    holder = _read_lock_file(Path(workspace) / lock_name)
    return None if holder is None or _is_stale(holder) else holder


def check_unlocked(workspace: Path, *, lock_name: str = DEFAULT_LOCK_NAME) -> None:
    """Refuse (`WorkspaceLockedError`) when a live run holds the workspace lock; reads only, writes nothing."""
    holder = live_holder(workspace, lock_name=lock_name)
    if holder is not None:
        raise _locked_error(Path(workspace) / lock_name, holder)


def _create_exclusive(path: Path, info: LockInfo) -> bool:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(descriptor, (json.dumps(asdict(info), indent=2) + "\n").encode("utf-8"))
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        path.unlink()
        raise
    os.close(descriptor)
    fsync_directory(path.parent)
    return True


def _read_lock_file(path: Path) -> LockInfo | None:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    pid, hostname, started_at, owner = (raw.get(key) for key in ("pid", "hostname", "started_at", "owner"))
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
        return None
    if not (isinstance(hostname, str) and isinstance(started_at, str) and isinstance(owner, str)):
        return None
    return LockInfo(pid, hostname, started_at, owner)


def _is_stale(holder: LockInfo) -> bool:
    if holder.hostname != socket.gethostname():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    return _pid_reused_since(holder)


def _pid_reused_since(holder: LockInfo) -> bool:
    """True when the pid now belongs to a process that started after the lock was taken.

    A restarted container often gives the new run the very pid of the dead one (pid 1, 7, ...); without
    this check that dead run's lock would look alive forever.
    """
    try:
        locked_at = datetime.fromisoformat(holder.started_at)
    except ValueError:
        return False
    process_start = _process_start_time(holder.pid)
    if process_start is None or locked_at.tzinfo is None:
        return False
    return process_start > locked_at + _PID_REUSE_TOLERANCE


def _process_start_time(pid: int) -> datetime | None:
    """Start time of a process from Linux /proc; None where /proc is not available."""
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
        boot_line = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after the last ")" are fixed.
    fields_after_name = stat_text.rsplit(")", 1)[1].split()
    start_ticks = int(fields_after_name[19])  # field 22 of /proc/<pid>/stat
    boot_seconds = int(boot_line.split()[1])
    seconds = boot_seconds + start_ticks / os.sysconf("SC_CLK_TCK")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _locked_error(path: Path, holder: LockInfo | None) -> WorkspaceLockedError:
    if holder is None:
        return WorkspaceLockedError(
            Problem(str(path), "another run took the workspace lock at the same moment", "wait and retry")
        )
    if holder.hostname != socket.gethostname():
        fix = (
            f"wait for that run to finish or cancel it on host {holder.hostname!r}; a lock from another host "
            f"is never reclaimed automatically, so if that run is gone for sure, delete {path} by hand"
        )
    else:
        fix = f"wait for that run to finish, or cancel it (its flow run, or `kill {holder.pid}`)"
    return WorkspaceLockedError(Problem(str(path), f"the workspace is in use by {holder.describe()}", fix))


def _utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
