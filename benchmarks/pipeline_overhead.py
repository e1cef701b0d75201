"""Wall-clock of `aoi-pipeline demo --yes` and the orchestration overhead per phase (time outside jobs).

    python benchmarks/pipeline_overhead.py --demo /tmp/aoi-demo     # run the demo, then analyse its run
    python benchmarks/pipeline_overhead.py --demo /tmp/aoi-demo-docker --platform docker   # jobs in containers
    python benchmarks/pipeline_overhead.py --demo /tmp/aoi-demo-slurm --platform slurm     # jobs through sbatch
    python benchmarks/pipeline_overhead.py --run-dir RESULTS/run_x   # analyse an existing run

A phase's window runs from the previous phase boundary recorded in pipeline_state.json (the approval for the
first) to its own; the jobs started in that window are summed from their job.json records. With one trial at
a time (`parallel: 1`, as in the demo) the difference is what Prefect, the pipeline code and process start-up
cost around the jobs. On `--platform docker` a job's own time is still its process inside the container (its
job.json), so the overhead also holds the child run's scheduling, the worker's pickup, the container start and
Prefect's start-up inside it. Numbers are printed as a table and as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

PHASES = ("phase1", "handoff_1_2", "phase2", "phase3", "handoff")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _jobs(run_dir: Path) -> list[tuple[float, float, str]]:
    jobs = []
    for record in run_dir.rglob("job.json"):
        data = json.loads(record.read_text(encoding="utf-8"))
        result = data.get("result") or {}
        if "started_at" in result:
            jobs.append((_ts(result["started_at"]), float(result["duration_s"]), result["name"]))
    return sorted(jobs)


def analyse(run_dir: Path) -> dict:
    phases = json.loads((run_dir / "pipeline_state.json").read_text(encoding="utf-8"))["phases"]
    start = _ts(json.loads((run_dir / "approval.json").read_text(encoding="utf-8"))["decided_at"])
    jobs = _jobs(run_dir)
    rows = []
    for phase in PHASES:
        if phase not in phases:
            continue
        end = _ts(phases[phase]["at"])
        inside = [duration for started, duration, _ in jobs if start <= started < end]
        wall = end - start
        rows.append(
            {
                "phase": phase,
                "wall_s": round(wall, 1),
                "jobs": len(inside),
                "job_s": round(sum(inside), 1),
                "overhead_s": round(wall - sum(inside), 1),
            }
        )
        start = end
    total_jobs = sum(row["job_s"] for row in rows)
    total_wall = sum(row["wall_s"] for row in rows)
    return {
        "run_dir": str(run_dir),
        "phases": rows,
        "after_approval_wall_s": round(total_wall, 1),
        "job_s": round(total_jobs, 1),
        "overhead_s": round(total_wall - total_jobs, 1),
        "jobs": len(jobs),
        "overhead_per_job_s": round((total_wall - total_jobs) / max(1, len(jobs)), 2),
    }


def run_demo(folder: Path, platform: str) -> tuple[Path, float]:
    started = time.monotonic()
    command = [str(Path(sys.executable).parent / "aoi-pipeline"), "demo", "--yes", "--dir", str(folder)]
    command += ["--platform", platform]
    subprocess.run(command, check=True)
    wall = time.monotonic() - started
    run_dir = sorted((folder / "workspace" / "results").glob("run_*"))[-1]
    return run_dir, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--demo", type=Path, help="run `aoi-pipeline demo --yes --dir DEMO` first")
    which.add_argument("--run-dir", type=Path, help="an existing run directory")
    parser.add_argument(
        "--platform", choices=("local", "docker", "slurm"), default="local", help="where the demo's jobs run"
    )
    args = parser.parse_args()
    demo_wall = None
    run_dir = args.run_dir
    if args.demo:
        run_dir, demo_wall = run_demo(args.demo, args.platform)
    report = analyse(run_dir)
    report["demo_wall_s"] = None if demo_wall is None else round(demo_wall, 1)
    print(f"{'phase':12} {'wall s':>8} {'jobs':>5} {'in jobs s':>10} {'outside s':>10}")
    for row in report["phases"]:
        print(f"{row['phase']:12} {row['wall_s']:8} {row['jobs']:5} {row['job_s']:10} {row['overhead_s']:10}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
