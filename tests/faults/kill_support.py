"""What the fault-injection tests use to kill a run and to check what it left: one `Attempt` per process.

An attempt is one `pipeline_child.py` process on one run name. `KilledRun` chains them (kill, resume, next
kill) and, after each, checks the promises of a resume: the run continues at the interrupted stage, no
finished job runs again, every JSON and CSV state file parses, no job process outlives its run by more than
the watchdog's grace, and the workspace lock of the killed attempt is taken over by the next one.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("pipeline_child.py")
# A job must die within 5 s of its run; the watchdog polls every 0.2 s and gives SIGTERM 3 s.
ORPHAN_DEADLINE_S = 5.0
_SET_ASIDE = (".interrupted", ".attempt")


@dataclass
class Tally:
    """The figures of a chain of kills."""

    kills_tried: int = 0
    kills_survived: int = 0
    orphans: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"kills survived {self.kills_survived}/{self.kills_tried}, orphans found {len(self.orphans)}"


def job_processes(root: Path) -> list[str]:
    """Live (non-zombie) processes whose working directory lies under `root`: the run's jobs."""
    found, target = [], os.path.realpath(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.path.realpath(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state not in ("Z", "X") and (cwd == target or cwd.startswith(target + os.sep)):
            found.append(f"{entry.name}: {command.strip()} (cwd {cwd})")
    return found


def orphans_after(root: Path, deadline_s: float = ORPHAN_DEADLINE_S) -> list[str]:
    """The run's job processes still alive `deadline_s` after the run died."""
    end = time.monotonic() + deadline_s
    while (alive := job_processes(root)) and time.monotonic() < end:
        time.sleep(0.1)
    return alive


def unreadable_state_files(run_dir: Path) -> list[str]:
    """Every JSON, JSON-lines (status.json) and CSV file of the run (set-aside attempts excepted) that does not
    parse."""
    bad = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or any(marker in part for part in path.parts for marker in _SET_ASIDE):
            continue
        try:
            if path.name == "status.json":
                for line in path.read_text(encoding="utf-8").splitlines():
                    json.loads(line)
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".csv":
                with path.open(newline="", encoding="utf-8") as handle:
                    list(csv.reader(handle))
        except (ValueError, UnicodeDecodeError, csv.Error) as error:
            bad.append(f"{path}: {error}")
    return bad


def finished_jobs(run_dir: Path) -> dict[str, bytes]:
    """{job folder: its job.json bytes} of every job recorded as succeeded (set-aside attempts excepted)."""
    jobs = {}
    for record in run_dir.rglob("job.json"):
        if any(marker in part for part in record.parts for marker in _SET_ASIDE):
            continue
        try:
            if json.loads(record.read_text(encoding="utf-8")).get("state") == "success":
                jobs[str(record.parent)] = record.read_bytes()
        except (OSError, ValueError):
            continue
    return jobs


def events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "deft_state.json"
    return json.loads(path.read_text(encoding="utf-8"))["events"] if path.exists() else []


def phases(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "pipeline_state.json"
    return json.loads(path.read_text(encoding="utf-8"))["phases"] if path.exists() else {}


class KilledRun:
    """One run name, run again and again in child processes, each attempt killed at its own point."""

    def __init__(self, config: dict[str, Any], run_name: str, api_url: str, tmp: Path, **env: str) -> None:
        self.config_path = tmp / "config.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.run_name = run_name
        self.workspace = Path(config["workspace"])
        self.run_dir = Path(config.get("results_root") or self.workspace / "results") / run_name
        self.calls = tmp / "runtime_calls.jsonl"
        self.mark = tmp / "hanging_job.pid"
        self.logs = tmp / "attempts"
        self.logs.mkdir()
        self.env = {
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "FAKE_RUNTIME_CALLS": str(self.calls),
            "FAKE_RUNTIME_HANG_MARK": str(self.mark),
            **env,
        }
        self.tally = Tally()
        self.attempts = 0

    def start(self, kill_point: str = "", **env: str) -> subprocess.Popen[bytes]:
        self.attempts += 1
        log = (self.logs / f"attempt{self.attempts:02d}.log").open("wb")
        command = [sys.executable, str(CHILD), str(self.config_path), self.run_name, kill_point]
        return subprocess.Popen(command, cwd=REPO, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return (self.logs / f"attempt{self.attempts:02d}.log").read_text(errors="replace")[-4000:]

    def calls_made(self) -> list[dict[str, str]]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text(encoding="utf-8").splitlines()]

    def kill_at(self, kill_point: str, timeout_s: float = 240) -> subprocess.Popen[bytes]:
        """An attempt that SIGKILLs itself at a stage boundary; returns it once dead."""
        self.tally.kills_tried += 1
        process = self.start(kill_point)
        code = process.wait(timeout=timeout_s)
        assert code == -signal.SIGKILL, f"attempt {self.attempts} was not killed at {kill_point}:\n{self.log()}"
        return process

    def kill_in_job(self, spec_part: str, timeout_s: float = 240) -> tuple[subprocess.Popen[bytes], int]:
        """An attempt killed (SIGKILL from outside) while the job whose spec path holds `spec_part` runs."""
        self.tally.kills_tried += 1
        self.mark.unlink(missing_ok=True)
        process = self.start("", FAKE_RUNTIME_HANG=spec_part)
        end = time.monotonic() + timeout_s
        while not self.mark.exists():
            assert process.poll() is None, f"attempt {self.attempts} ended before {spec_part}:\n{self.log()}"
            assert time.monotonic() < end, f"no job matching {spec_part} started:\n{self.log()}"
            time.sleep(0.1)
        job_pid = int(self.mark.read_text(encoding="utf-8") or 0)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        return process, job_pid

    def job_processes_alive(self) -> list[str]:
        return job_processes(self.run_dir)

    def check_after_kill(self, process: subprocess.Popen[bytes]) -> dict[str, bytes]:
        """What every kill must leave: no job alive past the deadline, the dead run's lock, parsable files."""
        orphans = orphans_after(self.run_dir)
        self.tally.orphans += orphans
        assert not orphans, f"job processes outlived their run: {orphans}"
        lock = json.loads((self.workspace / ".aoi-pipeline.lock").read_text(encoding="utf-8"))
        assert lock["pid"] == process.pid, "the killed attempt did not hold the workspace lock"
        assert not unreadable_state_files(self.run_dir), unreadable_state_files(self.run_dir)
        return finished_jobs(self.run_dir)

    def check_resumed(self, done_before: dict[str, bytes], calls_before: int) -> None:
        """After the next attempt: finished jobs untouched and never relaunched, the state files parse."""
        for folder, record in done_before.items():
            assert (Path(folder) / "job.json").read_bytes() == record, f"finished job {folder} was redone"
        relaunched = [
            call["spec"] for call in self.calls_made()[calls_before:] if str(Path(call["spec"]).parent) in done_before
        ]
        assert not relaunched, f"finished jobs launched again: {relaunched}"
        assert not unreadable_state_files(self.run_dir), unreadable_state_files(self.run_dir)
        self.tally.kills_survived += 1
