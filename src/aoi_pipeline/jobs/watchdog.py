"""The job watchdog: a tiny process that keeps a local job from outliving the run that started it.

`python watchdog.py <fd> <grace_s> -- <command...>` starts the job as its child, in the watchdog's own
process group, and then waits for either of two things: the job ends (the watchdog exits with the job's
status, a signal death reproduced as one), or end-of-file on `fd`, the read end of a pipe whose only write end
lives in the run's process. The kernel closes that write end however the run ends, SIGKILL included, so EOF
means the run is gone: the watchdog SIGTERMs the process group, waits `grace_s`, then SIGKILLs it (itself
included). A parent-death signal would not do: it fires when the *thread* that started the child exits, and
Prefect runs tasks in threads. Standard library only, and run as a plain script, so it starts in milliseconds.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

_POLL_S = 0.2


def _ignore(signum: int, frame: object) -> None:
    """Stay up while the launcher signals the group, to report the job's own exit status."""


def _kill_group(grace_s: float, job: subprocess.Popen[bytes]) -> None:
    group = os.getpgrp()
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)  # the watchdog dies here too, with what was left of the group


def _exit_like(code: int) -> None:
    if code < 0:  # killed by a signal: die by the same one, so the launcher classifies it the same way
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    sys.exit(code)


def main(argv: list[str]) -> int:
    fd, grace_s, command = int(argv[0]), float(argv[1]), argv[argv.index("--") + 1 :]
    # Handlers (unlike SIG_IGN) are reset when the job execs, so the job still dies on SIGTERM/SIGINT.
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    try:
        job = subprocess.Popen(command)
    except OSError as error:
        print(f"could not start {command[0]}: {error}", flush=True)
        return 127
    while (code := job.poll()) is None:
        readable, _, _ = select.select([fd], [], [], _POLL_S)
        if readable and not os.read(fd, 64):
            _kill_group(grace_s, job)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_like(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
