"""The whole pipeline on DeepPCB-AOI through the real flow: pre-flight, gate, Phase 1, the DEFT loop, Phase 3, handoff.

Copies the DeepPCB-AOI workspace (or, with `--slice K`, every K-th board of each set) into OUT/workspace, starts
a private local Prefect server (SQLite, under OUT/prefect), and runs `aoi-pipeline run --yes` on a config sized
for one GPU session: Phase 1 recommendations packed onto one GPU (`gpus_per_job` = 1 / `--parallel`), DEFT
iterations, Phase 3 recommendations, KPI target `FAR < 5% at Recall=99%`. Then it reports per phase the
wall-clock, the time inside the jobs' processes and outside them (the orchestration overhead), the GPU's busy
share (nvidia-smi samples; n/a without it), each job's start-up inside its process, and the KPI figure at each
handoff (confirm part of the KPI set, steer part, whole set); it copies the deliverable (checkpoint, training
spec, best_model.json, inference spec) into OUT/deliverable and names that folder on its last line.

    python benchmarks/pipeline_e2e.py --out /tmp/e2e                  # the GPU budget, in the foreground
    python benchmarks/pipeline_e2e.py --out /tmp/e2e --detach         # the same in the background (log + pid)
    python benchmarks/pipeline_e2e.py --out /tmp/e2e --poll --wait 540   # progress; the report once it is done
    python benchmarks/pipeline_e2e.py --out /tmp/e2e-smoke --smoke    # CPU: 64 px, 1 epoch, a slice, 2 + 1 + 1

Re-running with the same OUT resumes the same run (`--run-name run_e2e`), as the pipeline itself does: finished
phases are skipped and Phase 2 continues at its next uncommitted stage. OUT keeps the config of its first run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "src"), str(HERE)]

import pipeline_e2e_report as report  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "deeppcb-aoi"
RUN_NAME = "run_e2e"
TARGET = "FAR < 5% at Recall=99%"
SETS = (
    "train/base/training_set.csv",
    "train/base/validation_set.csv",
    "kpi/testing_set.csv",
    "augmentation/mining_pool/mining_pool.csv",
)
GPU_BUDGET = {
    "size": 160, "epochs": 40, "phase3_epochs": 20, "batch": 32, "recommendations": 6, "parallel": 2,
    "iterations": 3, "phase3_recommendations": 3, "num_sdg": 120, "top_k": 5, "slice": 1,
}  # fmt: skip
SMOKE_BUDGET = {
    "size": 64, "epochs": 1, "phase3_epochs": 1, "batch": 16, "recommendations": 2, "parallel": 2,
    "iterations": 1, "phase3_recommendations": 1, "num_sdg": 12, "top_k": 2, "slice": 10,
}  # fmt: skip
# A from-scratch small CNN needs larger steps than the reference's fine-tuning range for C-RADIO (the demo's range).
SEARCH_SPACE = {
    "train.optim.lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
    "model.classify.learnable_difference_modules": None,
}
_RUNTIME_MAIN = "import sys; from aoi_pipeline.changenet.cli import main; sys.exit(main())"
_RUNTIME_SHIM = f'#!/bin/sh\nexec "{{python}}" -c "{_RUNTIME_MAIN}" "$@"\n'
EXIT_RUNNING = 3


# -- the workspace and the config


def _boards(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return sorted({row["boardname"] for row in csv.DictReader(handle)})


def prepare_workspace(data: Path, target: Path, keep_every: int) -> Path:
    """Copy the CSVs (every `keep_every`-th board of each) and the images of the boards they name."""
    if (target / "images").is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    boards: set[str] = set()
    for relative in SETS:
        kept = set(_boards(data / relative)[::keep_every])
        boards |= kept
        with (data / relative).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if row["boardname"] in kept]
            columns = list(reader.fieldnames or [])
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        with (staging / relative).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    for board in sorted(boards):
        shutil.copytree(data / "images" / board, staging / "images" / board)
    staging.rename(target)  # a copy cut off half-way is redone, never used
    return target


def pipeline_config(budget: dict[str, Any], workspace: Path, extra_overrides: list[str]) -> dict[str, Any]:
    """The pipeline config: local launcher, reference runtime, `parallel` trials packed onto one GPU."""
    phase = {
        "recommendations": budget["recommendations"],
        "parallel": budget["parallel"],
        "num_epochs": budget["epochs"],
        "batch_size": budget["batch"],
        "seed": 0,
        "search_space": SEARCH_SPACE,
    }
    return {
        "workspace": str(workspace),
        "platform": "local",
        "runtime": "reference",
        "kpi_target": TARGET,
        "gpus": "auto",
        "gpus_per_job": 1.0 / budget["parallel"] if budget["parallel"] > 1 else 1,
        "dataset": {"lights": ["SolderLight"], "image_ext": ".png"},
        "spec_overrides": [
            f"dataset.classify.image_width={budget['size']}",
            f"dataset.classify.image_height={budget['size']}",
            # lr and fpratio_sampling are Phase 1's to tune (the search space), so no override sets them.
            "model.classify.difference_module=euclidean",
            *extra_overrides,
        ],
        "phase1": phase,
        "deft": {
            "max_iterations": budget["iterations"],
            "num_epochs": budget["epochs"],
            "num_sdg": budget["num_sdg"],
            "top_k_per_target": budget["top_k"],
            "min_similarity": 0.0,
        },
        "phase3": {
            **phase,
            "recommendations": budget["phase3_recommendations"],
            "num_epochs": budget["phase3_epochs"],
        },
    }


def prepare(args: argparse.Namespace) -> Path:
    """OUT/workspace and OUT/pipeline.yaml (both kept from an earlier run of the same OUT)."""
    config_path = args.out / "pipeline.yaml"
    if config_path.is_file():
        print(f"Reusing {config_path} (a run in this folder keeps its first config)", flush=True)
        return config_path
    if not (args.data / SETS[0]).is_file():
        sys.exit(f"{args.data}: no DeepPCB-AOI workspace ({SETS[0]} is missing); pass --data")
    budget = {key: getattr(args, key) for key in GPU_BUDGET}
    started = time.monotonic()
    workspace = prepare_workspace(args.data, args.out / "workspace", budget["slice"])
    print(f"Workspace copied to {workspace} in {time.monotonic() - started:.1f} s", flush=True)
    config = pipeline_config(budget, workspace, args.override)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (args.out / "budget.json").write_text(json.dumps(budget, indent=2) + "\n", encoding="utf-8")
    return config_path


# -- running the pipeline


def child_env(out: Path) -> dict[str, str]:
    """This process's environment for the pipeline: the package from this checkout (absolute, as jobs run in
    their own folders), `aoi-changenet` on PATH (a shim when it is not installed), a private Prefect home."""
    env = dict(os.environ)
    paths = [str(REPO / "src"), str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    beside = Path(sys.executable).with_name("aoi-changenet")
    if not beside.is_file() and shutil.which("aoi-changenet") is None:
        shim = out / "bin" / "aoi-changenet"
        shim.parent.mkdir(parents=True, exist_ok=True)
        shim.write_text(_RUNTIME_SHIM.format(python=sys.executable), encoding="utf-8")
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(AOI_PIPELINE_HOME=str(out / "prefect"), PREFECT_HOME=str(out / "prefect" / "client"))
    env.update(PYTHONUNBUFFERED="1", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    return env


class GpuSampler:
    """Appends `time,utilisation %` (the busiest GPU) to a CSV every `period_s` while nvidia-smi answers."""

    def __init__(self, path: Path, period_s: float = 0.5) -> None:
        self.path, self.period_s = path, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        with self.path.open("a", encoding="utf-8") as handle:
            while not self._stop.is_set():
                started = time.time()
                out = subprocess.run(query, capture_output=True, text=True, check=False).stdout.split()
                values = [int(value) for value in out if value.isdigit()]
                if values:
                    handle.write(f"{started:.2f},{max(values)}\n")
                    handle.flush()
                self._stop.wait(max(0.0, self.period_s - (time.time() - started)))


def run_dir_of(out: Path) -> Path:
    return out / "workspace" / "results" / RUN_NAME


def finished(out: Path) -> bool:
    phases = (report.read_json(run_dir_of(out) / "pipeline_state.json") or {}).get("phases", {})
    return (phases.get("handoff") or {}).get("status") == "complete"


def run_pipeline(out: Path, config_path: Path) -> int:
    """One attempt: the private server, then `aoi-pipeline run --yes`; its times go to OUT/attempts.json, also
    when the attempt is cut off (the report leaves the time between attempts out of every window)."""
    env = child_env(out)
    os.environ.update({k: env[k] for k in ("AOI_PIPELINE_HOME", "PREFECT_HOME")})
    os.environ.pop("PREFECT_API_URL", None)
    from aoi_pipeline.server import ensure_local_server

    attempt: dict[str, Any] = {"started": time.time(), "exit_code": None}
    try:
        server = ensure_local_server()
        attempt["server_s"] = round(time.time() - attempt["started"], 1)
        env["PREFECT_API_URL"] = server.api_url
        command = [sys.executable, "-m", "aoi_pipeline.cli", "run", "--config", str(config_path), "--yes"]
        command += ["--run-name", RUN_NAME, "--reviewer", "pipeline_e2e"]
        print(f"Prefect server at {server.ui_url} ({attempt['server_s']} s); running: {' '.join(command)}", flush=True)
        with GpuSampler(out / "gpu_samples.csv"):
            attempt["exit_code"] = subprocess.run(command, env=env, cwd=out, check=False).returncode
        attempt["ended"] = time.time()
        dump_task_runs(out, server.api_url)
    finally:
        attempt.setdefault("ended", time.time())
        attempts = report.read_json(out / "attempts.json") or []
        (out / "attempts.json").write_text(json.dumps([*attempts, attempt], indent=2) + "\n", encoding="utf-8")
    return int(attempt["exit_code"])


def _reap(pid: int) -> None:
    with contextlib.suppress(OSError):  # not this process's child: nothing to reap
        os.waitpid(pid, 0)


def dump_task_runs(out: Path, api_url: str) -> None:
    """Every finished task run's interval on the private server (this run's only) into OUT/task_runs.json, kept
    across attempts: the report splits the time outside jobs into task time and time between tasks."""
    os.environ["PREFECT_API_URL"] = api_url
    path = out / "task_runs.json"
    runs = report.read_json(path) or {}
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            offset = 0
            while page := client.read_task_runs(limit=200, offset=offset):
                offset += len(page)
                for run in page:
                    if run.start_time and run.end_time:
                        runs[str(run.id)] = {
                            "name": run.name, "start": run.start_time.isoformat(), "end": run.end_time.isoformat()
                        }  # fmt: skip
    except Exception as error:  # the report says n/a; the run itself is unaffected
        print(f"Task runs not read from {api_url}: {error}", flush=True)
    path.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")


def stop_server(out: Path) -> None:
    os.environ["AOI_PIPELINE_HOME"] = str(out / "prefect")
    from aoi_pipeline.server import stop_local_server

    pid = (report.read_json(out / "prefect" / "server.json") or {}).get("pid")
    if isinstance(pid, int):
        # When this process started the server it is its child: reap it as soon as it ends, or its zombie would
        # look alive to the stop's wait (30 s).
        threading.Thread(target=_reap, args=(pid,), daemon=True).start()
    started = time.monotonic()
    with contextlib.suppress(Exception):  # a server already gone is what we want
        stop_local_server()
    print(f"Prefect server stopped in {time.monotonic() - started:.1f} s", flush=True)


# -- the report, detaching and polling


def rescore_deliverable(out: Path, folder: Path) -> Path | None:
    """Score the run's KPI set with the deliverable's inference spec alone, in a fresh runtime process."""
    target = out / "deliverable_check"
    if (target / "inference.csv").is_file():
        return target / "inference.csv"
    env = child_env(out)
    beside = Path(sys.executable).with_name("aoi-changenet")
    program = str(beside) if beside.is_file() else shutil.which("aoi-changenet", path=env["PATH"])
    if program is None:
        return None
    command = [program, "inference", "-e", str(folder / "inference_spec.yaml")]
    command += [f"inference.results_dir={target}", f"results_dir={target}"]
    started = time.monotonic()
    with (out / "deliverable_check.log").open("w", encoding="utf-8") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    print(f"Deliverable re-scored from its inference spec in {time.monotonic() - started:.1f} s", flush=True)
    return target / "inference.csv" if done.returncode == 0 else None


def write_report(out: Path) -> Path | None:
    """Analyse the run, copy the deliverable, print and store the report; the deliverable folder or None."""
    run_dir = run_dir_of(out)
    if not run_dir.is_dir():
        print(f"No run directory at {run_dir}: nothing to report", flush=True)
        return None
    data = report.build(out, run_dir)
    folder = report.collect_deliverable(run_dir, out) if finished(out) else None
    data["deliverable_dir"] = None if folder is None else str(folder)
    scored = rescore_deliverable(out, folder) if folder is not None else None
    data["rescored"] = None if scored is None else report.rescored(run_dir, scored)
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = report.markdown(data)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)
    return folder


def pid_alive(out: Path) -> int | None:
    """The pid of a detached benchmark of OUT that still runs."""
    try:
        pid = int((out / "benchmark.pid").read_text(encoding="utf-8").strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):  # a finished process nobody reaped (no init in a container) is a zombie
        if Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] == "Z":
            return None
    return pid


def detach(out: Path, argv: list[str]) -> int:
    """Start this benchmark in its own session (it outlives the command that started it): log + pid in OUT."""
    if (pid := pid_alive(out)) is not None:
        print(f"Already running as pid {pid}; poll with --poll", flush=True)
        return EXIT_RUNNING
    command = [sys.executable, str(Path(__file__).resolve()), *[arg for arg in argv if arg != "--detach"]]
    with (out / "benchmark.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (out / "benchmark.pid").write_text(f"{process.pid}\n", encoding="utf-8")
    print(f"Started pid {process.pid}; log {out / 'benchmark.log'}; poll with --out {out} --poll", flush=True)
    return EXIT_RUNNING


def poll(out: Path, wait_s: float = 0.0) -> int:
    """Progress of a detached benchmark; its report and deliverable line once done. Exit 0 done, 3 running,
    1 stopped. With `wait_s`, polls every 15 s until the run ends or that time has passed."""
    deadline = time.monotonic() + wait_s
    while (pid := pid_alive(out)) is not None and time.monotonic() + 15 < deadline:
        time.sleep(15)
    run_dir = run_dir_of(out)
    phases = (report.read_json(run_dir / "pipeline_state.json") or {}).get("phases", {})
    jobs = report.read_jobs(run_dir) if run_dir.is_dir() else []
    print(f"phases done: {', '.join(phases) or 'none'}; jobs finished: {len(jobs)}", flush=True)
    if pid is not None:
        log = (out / "benchmark.log").read_text(encoding="utf-8", errors="replace").splitlines()
        print("\n".join(log[-8:]), flush=True)
        print(f"RUNNING (pid {pid}); poll again", flush=True)
        return EXIT_RUNNING
    if (out / "report.md").is_file() and finished(out):
        print((out / "report.md").read_text(encoding="utf-8"), end="", flush=True)
        print(f"Deliverable folder: {out / report.DELIVERABLE_DIR}", flush=True)
        return 0
    print("STOPPED before the end: run the same command again to resume (see benchmark.log)", flush=True)
    return 1


def benchmark(args: argparse.Namespace) -> int:
    config_path = prepare(args)
    code = 0
    if finished(args.out):
        print(f"{run_dir_of(args.out)} is complete: reporting only", flush=True)
    else:
        try:
            code = run_pipeline(args.out, config_path)
        finally:
            if not args.keep_server:
                stop_server(args.out)
    folder = write_report(args.out)
    if folder is None:
        print(f"The run did not finish (exit code {code}): run the same command again to resume", flush=True)
        return code or 1
    print(f"Deliverable folder: {folder}", flush=True)
    return code


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (the same one resumes the run)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the DeepPCB-AOI workspace (read only)")
    parser.add_argument("--smoke", action="store_true", help="the CPU smoke budget (the options below override it)")
    for key, value in GPU_BUDGET.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    parser.add_argument("--override", action="append", default=[], help="one more spec override (repeatable)")
    parser.add_argument("--keep-server", action="store_true", help="leave the private Prefect server running")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--detach", action="store_true", help="run in the background; log and pid in OUT")
    which.add_argument("--poll", action="store_true", help="progress of a detached run, its report when done")
    which.add_argument("--report-only", action="store_true", help="analyse the run in OUT again")
    parser.add_argument("--wait", type=float, default=0.0, help="with --poll: wait up to this many seconds")
    args = parser.parse_args(argv)
    budget = SMOKE_BUDGET if args.smoke else GPU_BUDGET
    for key, value in budget.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke and not any(text.startswith("dataset.classify.workers=") for text in args.override):
        args.override.append("dataset.classify.workers=0")  # decoding threads only cost on a small CPU box
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.poll:
        return poll(args.out, args.wait)
    if args.detach:
        return detach(args.out, argv)
    if args.report_only:
        folder = write_report(args.out)
        print(f"Deliverable folder: {folder}" if folder else "No deliverable yet", flush=True)
        return 0 if folder else 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally-blocks stop the server
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
