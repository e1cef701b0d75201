"""The workspace lock: one live run per workspace, dead runs' locks reclaimed, other hosts left alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aoi_pipeline.core.lock import LockInfo, WorkspaceLock, read_lock
from aoi_pipeline.errors import StateError, WorkspaceLockedError

LOCK = ".aoi-pipeline.lock"


def _write_lock(workspace: Path, **content) -> Path:
    path = workspace / LOCK
    path.write_text(json.dumps(content))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path: Path) -> None:
    lock = WorkspaceLock(tmp_path, owner="flow-run 42")
    lock.acquire()
    info = read_lock(tmp_path)
    assert info is not None
    assert (info.pid, info.hostname, info.owner) == (os.getpid(), socket.gethostname(), "flow-run 42")
    assert datetime.fromisoformat(info.started_at).tzinfo is not None
    assert set(json.loads((tmp_path / LOCK).read_text())) == {"pid", "hostname", "started_at", "owner"}
    lock.release()
    assert not (tmp_path / LOCK).exists()
    assert read_lock(tmp_path) is None


def test_context_manager_releases_even_when_the_run_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), WorkspaceLock(tmp_path):
        assert (tmp_path / LOCK).exists()
        raise RuntimeError("stage failed")
    assert not (tmp_path / LOCK).exists()


def test_a_second_acquire_in_the_same_process_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    with WorkspaceLock(tmp_path, owner="first run"):
        before = (tmp_path / LOCK).read_bytes()
        second = WorkspaceLock(tmp_path, owner="second run")
        with pytest.raises(WorkspaceLockedError) as caught:
            second.acquire()
        message = str(caught.value)
        assert str(tmp_path / LOCK) in message
        assert f"pid {os.getpid()}" in message
        assert socket.gethostname() in message
        assert "'first run'" in message
        assert "wait for that run to finish, or cancel it" in message
        assert (tmp_path / LOCK).read_bytes() == before  # the refusal changed nothing
        assert not second.held
        second.release()  # releasing a lock never taken must not remove the holder's file
        assert (tmp_path / LOCK).read_bytes() == before


def test_a_live_child_process_holding_the_lock_refuses_us_until_it_is_killed(tmp_path: Path) -> None:
    holder_script = textwrap.dedent(
        f"""
        import sys, time
        from aoi_pipeline.core.lock import WorkspaceLock
        WorkspaceLock(__import__("pathlib").Path({str(tmp_path)!r}), owner="child run").acquire()
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", holder_script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(WorkspaceLockedError) as caught:
            WorkspaceLock(tmp_path).acquire()
        assert f"pid {child.pid}" in str(caught.value)
        assert "'child run'" in str(caught.value)
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup: the lock file stays behind
        child.wait()
    assert read_lock(tmp_path).pid == child.pid
    lock = WorkspaceLock(tmp_path, owner="after crash")
    lock.acquire()
    assert lock.reclaimed is not None
    assert (lock.reclaimed.pid, lock.reclaimed.owner) == (child.pid, "child run")
    assert read_lock(tmp_path).owner == "after crash"
    assert sorted(os.listdir(tmp_path)) == [LOCK]  # the parked stale file is gone too
    lock.release()


def test_a_lock_of_a_dead_process_on_this_host_is_reclaimed(tmp_path: Path) -> None:
    dead = _dead_pid()
    _write_lock(tmp_path, pid=dead, hostname=socket.gethostname(), started_at="2026-01-01T00:00:00+00:00", owner="")
    with WorkspaceLock(tmp_path) as lock:
        assert lock.reclaimed == LockInfo(dead, socket.gethostname(), "2026-01-01T00:00:00+00:00", "")
        assert read_lock(tmp_path).pid == os.getpid()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"pid": "12", "hostname": "h"}', b"\xff\xfe"])
def test_an_empty_or_unreadable_lock_file_is_reclaimed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / LOCK).write_bytes(content)
    assert read_lock(tmp_path) is None
    with WorkspaceLock(tmp_path) as lock:
        assert lock.reclaimed is None
        assert lock.reclaimed_unreadable
        assert read_lock(tmp_path).pid == os.getpid()


def test_a_lock_from_another_host_is_never_reclaimed(tmp_path: Path) -> None:
    other_host = socket.gethostname() + "-elsewhere"
    path = _write_lock(
        tmp_path, pid=_dead_pid(), hostname=other_host, started_at="2026-01-01T00:00:00+00:00", owner="x"
    )
    before = path.read_bytes()
    with pytest.raises(WorkspaceLockedError) as caught:
        WorkspaceLock(tmp_path).acquire()
    message = str(caught.value)
    assert other_host in message
    assert "never reclaimed automatically" in message
    assert f"delete {path} by hand" in message
    assert path.read_bytes() == before


def test_a_reused_pid_does_not_keep_a_dead_runs_lock_alive(tmp_path: Path) -> None:
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("needs Linux /proc to tell a reused pid from the original process")
    # Our own pid is alive, but this process started long after a lock dated a year ago: a restarted
    # container that got the dead run's pid back.
    long_ago = (datetime.now(UTC) - timedelta(days=365)).isoformat(timespec="seconds")
    _write_lock(tmp_path, pid=os.getpid(), hostname=socket.gethostname(), started_at=long_ago, owner="old run")
    with WorkspaceLock(tmp_path) as lock:
        assert lock.reclaimed is not None
        assert lock.reclaimed.owner == "old run"


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    lock = WorkspaceLock(tmp_path)
    lock.acquire()
    foreign = _write_lock(tmp_path, pid=1, hostname="other", started_at="2026-01-01T00:00:00+00:00", owner="them")
    lock.release()
    assert foreign.exists()
    assert read_lock(tmp_path).owner == "them"


def test_locking_a_workspace_that_does_not_exist_is_a_state_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(StateError) as caught:
        WorkspaceLock(missing).acquire()
    assert str(missing) in str(caught.value)
    assert not missing.exists()


def test_a_custom_lock_name_is_honoured(tmp_path: Path) -> None:
    with WorkspaceLock(tmp_path, lock_name="phase2.lock"):
        assert (tmp_path / "phase2.lock").exists()
        assert read_lock(tmp_path, lock_name="phase2.lock").pid == os.getpid()
        with WorkspaceLock(tmp_path):  # a different name is a different lock
            pass


def test_concurrent_reclaimers_of_one_stale_lock_produce_exactly_one_winner(tmp_path: Path) -> None:
    import threading

    _write_lock(
        tmp_path,
        pid=_dead_pid(),
        hostname=socket.gethostname(),
        started_at="2026-01-01T00:00:00+00:00",
        owner="",
    )
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def contend(index: int) -> None:
        lock = WorkspaceLock(tmp_path, owner=f"contender {index}")
        start.wait()
        try:
            lock.acquire()
            outcomes.append(lock.owner)
        except WorkspaceLockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [outcome for outcome in outcomes if outcome != "refused"]
    assert len(winners) == 1
    assert read_lock(tmp_path).owner == winners[0]
    assert sorted(os.listdir(tmp_path)) == [LOCK]


def test_check_unlocked_refuses_while_a_live_run_holds_the_lock_and_writes_nothing(tmp_path: Path) -> None:
    from aoi_pipeline.core.lock import check_unlocked, live_holder

    check_unlocked(tmp_path)
    assert list(tmp_path.iterdir()) == [] and live_holder(tmp_path) is None
    with WorkspaceLock(tmp_path, owner="first run"):
        before = (tmp_path / ".aoi-pipeline.lock").read_bytes()
        with pytest.raises(WorkspaceLockedError, match="first run"):
            check_unlocked(tmp_path)
        assert (tmp_path / ".aoi-pipeline.lock").read_bytes() == before
        holder = live_holder(tmp_path)
        assert holder is not None and holder.owner == "first run"
    check_unlocked(tmp_path)
