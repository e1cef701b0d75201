"""The local launcher, run against tiny fake runtimes (Python scripts) instead of a real trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoi_pipeline.errors import ConfigError, StateError
from aoi_pipeline.jobs import GpuSlots, LocalLauncher, Mount, TaoJob
from aoi_pipeline.jobs.process_group import group_members

# Behaves like `aoi-changenet <action> -e spec.yaml k=v ...`; the spec's `fake.mode` picks the behaviour.
FAKE_RUNTIME = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import yaml

action = sys.argv[1]
spec_path = Path(sys.argv[sys.argv.index("-e") + 1])
overrides = sys.argv[sys.argv.index("-e") + 2:]
spec = yaml.safe_load(spec_path.read_text())
mode = spec["fake"]["mode"]
out = spec_path.parent


def status(**line):
    with (out / "status.json").open("a") as f:
        f.write(json.dumps(line) + "\n")


print(f"action={action} overrides={overrides}")
print(f"CUDA_VISIBLE_DEVICES=[{os.environ.get('CUDA_VISIBLE_DEVICES')}]")
print(f"PYTHONUNBUFFERED={os.environ.get('PYTHONUNBUFFERED')} EXTRA={os.environ.get('AOI_TEST_EXTRA')}")
print(f"cwd={os.getcwd()}")
if mode == "train":
    epoch = spec["fake"].get("epoch", 0)
    status(status="STARTED", message="Starting Training Loop.")
    status(status="RUNNING", epoch=epoch, max_epoch=epoch, kpi={"val_loss": 0.5, "val_far": 10.0})
    (out / f"model_epoch_{epoch:03d}_step_00004.pth").write_bytes(b"weights")
    status(status="SUCCESS", message="Train finished successfully.")
    print("Execution status: PASS")
elif mode == "crash":
    status(status="STARTED", message="Starting Training Loop.")
    try:
        raise ValueError("learning_rate must be positive, got -1")
    except ValueError as error:
        status(status="FAILURE", message=str(error))
        raise
elif mode == "zero_step":
    status(status="SUCCESS", message="Train finished successfully.")
    print("Execution status: PASS")
elif mode == "secret":
    print("using token " + os.environ["AOI_TEST_TOKEN"])
elif mode == "progress":
    sys.stdout.write("step 1/3\rstep 2/3\rstep 3/3\n")
elif mode == "rendezvous":
    # Wait until every party is running at once, so the GPUs seen are those held concurrently.
    meeting = Path(spec["fake"]["dir"])
    (meeting / str(os.getpid())).write_text("here")
    deadline = time.monotonic() + 60
    while len(list(meeting.iterdir())) < spec["fake"]["parties"] and time.monotonic() < deadline:
        time.sleep(0.02)
    print(f"met={len(list(meeting.iterdir())) >= spec['fake']['parties']}")
    status(status="RUNNING", epoch=0, max_epoch=0, kpi={"val_loss": 0.5})
    (out / "model_epoch_000_step_00001.pth").write_bytes(b"weights")
elif mode in ("hang", "ignore_term"):
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (out / "pids.txt").write_text(f"{os.getpid()} {child.pid}")
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def fake_runtime(tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "fake_runtime.py"
    script.write_text(FAKE_RUNTIME)
    yield script
    # Should a test fail half-way, leave no fake trainer behind.
    for pids_file in tmp_path.rglob("pids.txt"):
        for pid in (int(pid) for pid in pids_file.read_text().split()):
            if not is_gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launcher(fake_runtime: Path) -> LocalLauncher:
    return make_launcher(fake_runtime)


def make_launcher(fake_runtime: Path, **options) -> LocalLauncher:
    options.setdefault("gpu_slots", GpuSlots([]))
    return LocalLauncher(command_resolver=lambda job: [sys.executable, str(fake_runtime), job.action], **options)


def make_job(tmp_path: Path, mode: str, **changes) -> TaoJob:
    fields = {
        "name": f"fake-{mode}",
        "action": "train",
        "image": "local/aoi-changenet",
        "spec": {"fake": {"mode": mode}, "train": {"num_epochs": 1}},
        "results_dir": tmp_path / "results" / mode,
    }
    fields.update(changes)
    return TaoJob(**fields)


class Lines:
    """A log sink that remembers lines and can fire an event on one of them."""

    def __init__(self, trigger: str | None = None, event: threading.Event | None = None) -> None:
        self.lines: list[str] = []
        self.trigger, self.event = trigger, event

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.event is not None and line == self.trigger:
            self.event.set()


def is_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if all(is_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def wait_group_gone(group: int) -> bool:
    deadline = time.monotonic() + 5.0
    while group_members(group):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def job_pids(job: TaoJob) -> list[int]:
    return [int(pid) for pid in (job.results_dir / "pids.txt").read_text().split()]


def test_a_train_job_streams_output_and_records_everything(tmp_path, fake_runtime, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    launcher = make_launcher(fake_runtime, extra_env={"AOI_TEST_EXTRA": "on"})
    spec = {"fake": {"mode": "train"}, "results_dir": "/results", "train": {"num_epochs": 1}, "model": {}}
    job = make_job(tmp_path, "train", spec=spec, overrides=("train.num_epochs=1",))
    log = Lines()

    result = launcher.run(job, log=log)

    assert result.ok, result.failure
    assert (result.status, result.exit_code, result.failure) == ("success", 0, None)
    assert "action=train overrides=['train.num_epochs=1']" in log.lines
    assert "CUDA_VISIBLE_DEVICES=[]" in log.lines
    assert "PYTHONUNBUFFERED=1 EXTRA=on" in log.lines
    assert f"cwd={job.results_dir}" in log.lines
    job_log = result.log_path.read_text().splitlines()
    assert [line for line in log.lines if not line.startswith("[")] == job_log
    saved_spec = yaml.safe_load(result.spec_path.read_text())
    assert saved_spec == spec
    assert list(saved_spec) == ["fake", "results_dir", "train", "model"]
    record = json.loads((job.results_dir / "job.json").read_text())
    assert record["command"] == [
        sys.executable,
        str(fake_runtime),
        "train",
        "-e",
        str(result.spec_path),
        "train.num_epochs=1",
    ]
    assert record["job"] == job.to_record()
    assert (record["state"], record["result"]["status"]) == ("success", "success")
    assert record["external_id"] == result.external_id
    assert result.external_id.startswith("pid:")
    assert result.finished_at >= result.started_at


def test_a_relative_results_dir_works_from_the_callers_directory(tmp_path, launcher, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = make_job(tmp_path, "train", results_dir=Path("relative") / "train")

    result = launcher.run(job, log=Lines())

    assert result.ok, result.failure
    assert (tmp_path / "relative" / "train" / "model_epoch_000_step_00004.pth").is_file()
    assert result.spec_path == tmp_path / "relative" / "train" / "spec.yaml"


def test_a_non_empty_results_dir_is_refused_and_left_untouched(tmp_path, launcher):
    job = make_job(tmp_path, "train")
    job.results_dir.mkdir(parents=True)
    old = job.results_dir / "model_epoch_009_step_00090.pth"
    old.write_bytes(b"old")

    with pytest.raises(StateError) as caught:
        launcher.run(job, log=Lines())

    assert "auto-resume" in str(caught.value)
    assert "resume=True" in str(caught.value)
    assert list(job.results_dir.iterdir()) == [old]


def test_a_program_crash_is_a_program_failure_with_the_exception(tmp_path, launcher):
    result = launcher.run(make_job(tmp_path, "crash"), log=Lines())

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.failure is not None
    assert result.failure.kind == "program"
    assert "learning_rate must be positive" in result.failure.reason
    assert "ValueError" in result.failure.evidence


def test_a_train_success_without_a_new_checkpoint_is_a_failure(tmp_path, launcher):
    result = launcher.run(make_job(tmp_path, "zero_step"), log=Lines())

    assert (result.status, result.exit_code) == ("failed", 0)
    assert result.failure is not None
    assert result.failure.kind == "program"
    assert "no new checkpoint" in result.failure.reason


def test_the_same_exit_for_a_non_train_action_is_a_success(tmp_path, launcher):
    result = launcher.run(make_job(tmp_path, "zero_step", action="inference"), log=Lines())

    assert result.ok


def test_resume_judges_only_what_this_run_wrote(tmp_path, launcher):
    first = launcher.run(make_job(tmp_path, "crash", results_dir=tmp_path / "train"), log=Lines())
    assert first.status == "failed"

    resumed = launcher.run(make_job(tmp_path, "train", results_dir=tmp_path / "train"), log=Lines(), resume=True)
    assert resumed.ok, resumed.failure

    # A checkpoint from an earlier run does not count as this run's output.
    again = launcher.run(make_job(tmp_path, "zero_step", results_dir=tmp_path / "train"), log=Lines(), resume=True)
    assert again.failure is not None
    assert "no new checkpoint" in again.failure.reason
    assert "--- resumed at" in (tmp_path / "train" / "job.log").read_text()


def test_timeout_kills_the_job_and_its_grandchild(tmp_path, launcher):
    job = make_job(tmp_path, "hang", timeout_s=1.0)

    result = launcher.run(job, log=Lines())

    assert result.status == "timed_out"
    assert result.failure is not None
    assert "timeout" in result.failure.reason
    # On a loaded machine the timeout can land before the job wrote its pids: its whole process group must go.
    assert wait_group_gone(int(str(result.external_id).removeprefix("pid:")))
    if (job.results_dir / "pids.txt").is_file():
        assert wait_gone(job_pids(job))


def test_cancel_kills_the_job_and_its_grandchild(tmp_path, launcher):
    cancel = threading.Event()
    job = make_job(tmp_path, "hang")

    result = launcher.run(job, log=Lines("ready", cancel), cancel=cancel)

    assert (result.status, result.failure) == ("cancelled", None)
    assert not result.ok
    assert wait_gone(job_pids(job))
    assert json.loads((job.results_dir / "job.json").read_text())["state"] == "cancelled"


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path, fake_runtime):
    launcher = make_launcher(fake_runtime, kill_grace_s=0.3)
    cancel = threading.Event()
    job = make_job(tmp_path, "ignore_term")

    result = launcher.run(job, log=Lines("ready", cancel), cancel=cancel)

    assert result.status == "cancelled"
    assert result.exit_code == -9
    assert wait_gone(job_pids(job))


class InterruptOnceReady(threading.Event):
    """A cancel event whose check raises KeyboardInterrupt once the job is running: an interrupted caller."""

    def __init__(self, ready_file: Path) -> None:
        super().__init__()
        self.ready_file = ready_file

    def is_set(self) -> bool:
        if self.ready_file.exists():
            raise KeyboardInterrupt
        return False


def test_an_interrupted_caller_kills_the_job_and_re_raises(tmp_path, launcher):
    job = make_job(tmp_path, "hang")

    with pytest.raises(KeyboardInterrupt):
        launcher.run(job, log=Lines(), cancel=InterruptOnceReady(job.results_dir / "pids.txt"))

    assert wait_gone(job_pids(job))
    assert json.loads((job.results_dir / "job.json").read_text())["state"] == "interrupted"


def test_a_missing_runtime_is_an_infrastructure_failure_that_says_how_to_install_it(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    launcher = LocalLauncher(gpu_slots=GpuSlots([]), python_bin_dir=empty)

    result = launcher.run(make_job(tmp_path, "train"), log=Lines())

    assert (result.status, result.exit_code) == ("failed", None)
    assert result.failure is not None
    assert result.failure.kind == "infrastructure"
    assert "aoi-changenet" in result.failure.reason
    assert "aoi-pipeline[reference]" in result.failure.reason
    assert "aoi-pipeline[reference]" in result.log_path.read_text()


def test_the_runtime_is_found_next_to_the_interpreter(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "aoi-changenet"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    launcher = LocalLauncher(gpu_slots=GpuSlots([]), python_bin_dir=bin_dir)

    assert launcher.find_runtime(make_job(tmp_path, "train", action="embed")) == [str(program), "embed"]


def test_secret_values_from_named_env_vars_never_reach_the_logs(tmp_path, launcher, monkeypatch):
    monkeypatch.setenv("AOI_TEST_TOKEN", "tok-0123456789")
    job = make_job(tmp_path, "secret", action="sdg", env_names=("AOI_TEST_TOKEN",))
    log = Lines()

    result = launcher.run(job, log=log)

    assert result.ok
    assert "using token <redacted>" in log.lines
    assert "tok-0123456789" not in result.log_path.read_text()
    assert "tok-0123456789" not in (job.results_dir / "job.json").read_text()


def test_an_unset_env_name_is_refused_before_anything_is_written(tmp_path, launcher, monkeypatch):
    monkeypatch.delenv("AOI_TEST_MISSING", raising=False)
    job = make_job(tmp_path, "train", env_names=("AOI_TEST_MISSING",))

    with pytest.raises(ConfigError) as caught:
        launcher.run(job, log=Lines())

    assert "AOI_TEST_MISSING" in str(caught.value)
    assert not job.results_dir.exists()


def test_progress_bar_redraws_become_their_final_line(tmp_path, launcher):
    log = Lines()

    launcher.run(make_job(tmp_path, "progress", action="inference"), log=log)

    assert "step 3/3" in log.lines
    assert not any("step 1/3" in line for line in log.lines)


def test_gpus_are_lent_through_cuda_visible_devices(tmp_path, fake_runtime):
    slots = GpuSlots([3, 5])
    launcher = make_launcher(fake_runtime, gpu_slots=slots)
    log = Lines()

    result = launcher.run(make_job(tmp_path, "train", gpus=2), log=log)

    assert result.ok
    assert "CUDA_VISIBLE_DEVICES=[3,5]" in log.lines
    assert slots.free_count() == 2


def test_container_mounts_are_refused_by_the_local_launcher(tmp_path, launcher):
    job = make_job(tmp_path, "train", mounts=(Mount(tmp_path / "ws", "/data/workspace"),))

    with pytest.raises(ConfigError) as caught:
        launcher.run(job, log=Lines())

    assert "/data/workspace" in str(caught.value)
    assert not job.results_dir.exists()


def test_a_mount_of_a_path_at_itself_is_accepted(tmp_path, launcher):
    job = make_job(tmp_path, "train", mounts=(Mount(tmp_path, str(tmp_path), read_only=True),))

    assert launcher.run(job, log=Lines()).ok


def test_a_job_needing_more_gpus_than_exist_is_refused(tmp_path, fake_runtime):
    launcher = make_launcher(fake_runtime, gpu_slots=GpuSlots([0]))
    job = make_job(tmp_path, "train", gpus=2)

    with pytest.raises(ConfigError) as caught:
        launcher.run(job, log=Lines())

    assert "2 GPU(s)" in str(caught.value)
    assert not job.results_dir.exists()


def test_cancel_while_waiting_for_gpus_never_starts_the_job(tmp_path, fake_runtime):
    slots = GpuSlots([0])
    launcher = make_launcher(fake_runtime, gpu_slots=slots)
    held = slots.take(1)
    cancel = threading.Event()
    cancel.set()

    result = launcher.run(make_job(tmp_path, "train", gpus=1), log=Lines(), cancel=cancel)

    assert (result.status, result.external_id) == ("cancelled", None)
    assert "never started" in result.log_path.read_text()
    assert not (result.job.results_dir / "status.json").exists()
    slots.release(held or ())


def test_jobs_running_at_once_hold_distinct_gpus(tmp_path, fake_runtime):
    launcher = make_launcher(fake_runtime, gpu_slots=GpuSlots([0, 1]))
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    spec = {"fake": {"mode": "rendezvous", "dir": str(meeting), "parties": 2}}
    logs = {name: Lines() for name in ("a", "b")}
    results = {}

    def run(name: str) -> None:
        job = make_job(tmp_path, "train", name=f"trial-{name}", gpus=1, spec=spec, results_dir=tmp_path / name)
        results[name] = launcher.run(job, log=logs[name])

    threads = [threading.Thread(target=run, args=(name,)) for name in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(result.ok for result in results.values())
    seen = {next(line for line in log.lines if line.startswith("CUDA_VISIBLE_DEVICES")) for log in logs.values()}
    assert seen == {"CUDA_VISIBLE_DEVICES=[0]", "CUDA_VISIBLE_DEVICES=[1]"}


RUN_THEN_BLOCK = r"""
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from jobs.test_local_launcher import make_job, make_launcher
job = make_job(Path({tmp!r}), "hang")
make_launcher(Path({runtime!r})).run(job, log=lambda line: None)
"""


def test_a_job_dies_within_five_seconds_of_its_run_being_killed(tmp_path, fake_runtime):
    # The run is a process of its own, killed with SIGKILL: no handler, hook or finally of it runs.
    script = RUN_THEN_BLOCK.format(tests=str(Path(__file__).parents[1]), tmp=str(tmp_path), runtime=str(fake_runtime))
    run = subprocess.Popen([sys.executable, "-c", script])
    pids_file = tmp_path / "results" / "hang" / "pids.txt"
    deadline = time.monotonic() + 30
    # The job writes its pid and its child's; an empty or half-written file is not read as "no processes".
    while len(pids := pids_file.read_text().split() if pids_file.is_file() else []) < 2:
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before its job started"
        time.sleep(0.05)
    pids = [int(pid) for pid in pids]

    run.kill()
    run.wait()

    assert wait_gone(pids), "the job (or its child) outlived its killed run by more than 5 s"


def test_the_job_record_names_the_process_group_of_the_job(tmp_path, launcher):
    job = make_job(tmp_path, "hang")
    cancel = threading.Event()
    seen: dict[str, int] = {}

    def read_record() -> dict[str, Any]:
        return dict(json.loads((job.results_dir / "job.json").read_text()))

    def record_then_cancel() -> None:
        # The launcher records the job `running` once its process exists; the job may write its pids first.
        while not (job.results_dir / "pids.txt").is_file() or (record := read_record())["state"] != "running":
            time.sleep(0.02)
        seen["group"] = int(record["external_id"].removeprefix("pid:"))
        seen["job_group"] = os.getpgid(job_pids(job)[0])
        cancel.set()

    helper = threading.Thread(target=record_then_cancel)
    helper.start()
    launcher.run(job, log=Lines(), cancel=cancel)
    helper.join()

    assert seen["group"] == seen["job_group"]


def test_stop_kills_only_the_job_in_that_folder(tmp_path, launcher):
    stopped_job = make_job(tmp_path, "hang", name="stopped", results_dir=tmp_path / "stopped")
    other_job = make_job(tmp_path, "hang", name="other", results_dir=tmp_path / "other")
    other_cancel = threading.Event()
    results = {}

    def run(job: TaoJob, cancel: threading.Event | None) -> None:
        results[job.name] = launcher.run(job, log=Lines(), cancel=cancel)

    threads = [
        threading.Thread(target=run, args=(stopped_job, None)),
        threading.Thread(target=run, args=(other_job, other_cancel)),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while not all((job.results_dir / "pids.txt").exists() for job in (stopped_job, other_job)):
        assert time.monotonic() < deadline, "the fake jobs never started"
        time.sleep(0.05)

    assert launcher.stop(stopped_job.results_dir, "pruned") is True
    threads[0].join(10)
    assert results["stopped"].status == "cancelled"
    assert wait_gone(job_pids(stopped_job))
    assert not any(is_gone(pid) for pid in job_pids(other_job))

    other_cancel.set()
    threads[1].join(10)
    assert results["other"].status == "cancelled"
    assert launcher.stop(stopped_job.results_dir, "again") is False  # nothing runs there any more


def test_quarter_gpu_jobs_share_one_gpu_four_at_a_time(tmp_path, fake_runtime):
    launcher = make_launcher(fake_runtime, gpu_slots=GpuSlots([0]))
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    spec = {"fake": {"mode": "rendezvous", "dir": str(meeting), "parties": 4}}
    logs = {name: Lines() for name in "abcd"}
    results = {}

    def run(name: str) -> None:
        job = make_job(tmp_path, "train", name=f"trial-{name}", gpus=0.25, spec=spec, results_dir=tmp_path / name)
        results[name] = launcher.run(job, log=logs[name])

    threads = [threading.Thread(target=run, args=(name,)) for name in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Each job waits (up to 60 s) until all four run at once and says whether they met: only a shared GPU meets.
    assert all("met=True" in log.lines for log in logs.values())
    assert all(result.ok for result in results.values())
    seen = {next(line for line in log.lines if line.startswith("CUDA_VISIBLE_DEVICES")) for log in logs.values()}
    assert seen == {"CUDA_VISIBLE_DEVICES=[0]"}
    assert launcher.gpu_slots.loads() == {0: 0.0}
