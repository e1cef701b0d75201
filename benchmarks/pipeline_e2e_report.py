"""What `pipeline_e2e.py` reports about one finished (or stopped) pipeline run, read from the run's own records.

Phase windows come from `approval.json` (the decision) and `pipeline_state.json` (each phase's end); the jobs
from their `job.json` (the launcher's process start and duration); each job's start-up inside its process from
its `status.json` (the runtime dates every line, see `aoi_pipeline.changenet.status_writer`); the KPI figures
from `deft_state.json` and `best_model.json`; the GPU's busy share from the `nvidia-smi` samples the benchmark
took (`gpu_samples.csv`). Time inside jobs is the union of the jobs' process intervals, so two trials packed
onto one GPU are not counted twice; time outside jobs is the rest of the phase's wall-clock: Prefect, the
pipeline's own in-process stages (RCA, k-NN mining, assembly, KPI evaluation) and the launcher's bookkeeping.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from aoi_pipeline.core.far import ScoredRows, far_at_recall, read_scored_csv
from aoi_pipeline.core.kpi_split import board_of

PHASES = ("phase1", "handoff_1_2", "phase2", "phase3", "handoff")
DELIVERABLE_DIR = "deliverable"
_DURATION = re.compile(r"(?:(\d+) days?, )?(\d+):(\d+):(\d+(?:\.\d+)?)")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def parse_duration(text: str) -> float | None:
    """Seconds of TAO's `0:00:12.345678` (`time_per_epoch`)."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _status_records(results_dir: Path) -> list[dict[str, Any]]:
    path = results_dir / "status.json"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [record for record in records if "timestamp" in record]


def startup(results_dir: Path, process_start: float) -> dict[str, float | None]:
    """Start-up inside the job's process: to its first dated status line (interpreter, imports, spec checks),
    and for a training the set-up after it until the first step (CUDA initialisation, image decoding, model)."""
    records = _status_records(results_dir)
    if not records:
        return {"startup_s": None, "setup_s": None}
    first = ts(records[0]["timestamp"])
    setup = None
    epochs = [r for r in records if r.get("message") == "Training loop in progress" and r.get("time_per_epoch")]
    if records[0].get("status") == "STARTED" and epochs:
        epoch_s = parse_duration(epochs[0]["time_per_epoch"])
        if epoch_s is not None:
            setup = max(0.0, ts(epochs[0]["timestamp"]) - epoch_s - first)
    return {"startup_s": round(first - process_start, 2), "setup_s": None if setup is None else round(setup, 2)}


def read_jobs(run_dir: Path) -> list[dict[str, Any]]:
    """Every job that ran to an end: name, action, process start, duration, status and start-up."""
    jobs = []
    for record_path in run_dir.rglob("job.json"):
        record = read_json(record_path) or {}
        result = record.get("result") or {}
        if "started_at" not in result:
            continue
        start = ts(result["started_at"])
        jobs.append(
            {
                "name": result.get("name"),
                "action": (record.get("job") or {}).get("action"),
                "start": start,
                "duration_s": float(result["duration_s"]),
                "status": result.get("status"),
                **startup(record_path.parent, start),
            }
        )
    return sorted(jobs, key=lambda job: job["start"])


def busy_seconds(intervals: Sequence[tuple[float, float]], low: float, high: float) -> float:
    """Length of the union of `intervals` clipped to [low, high]."""
    total, reach = 0.0, low
    for start, end in sorted(intervals):
        start, end = max(start, reach), min(end, high)
        if end > start:
            total += end - start
            reach = end
    return total


def read_gpu_samples(path: Path) -> list[tuple[float, float]]:
    """(time, utilisation %) rows the benchmark's sampler wrote; empty without nvidia-smi."""
    if not path.is_file():
        return []
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(",")
        if len(parts) == 2:
            try:
                samples.append((float(parts[0]), float(parts[1])))
            except ValueError:
                continue
    return samples


def gpu_share(samples: Sequence[tuple[float, float]], low: float, high: float) -> dict[str, float | None]:
    inside = [util for at, util in samples if low <= at < high]
    if not inside:
        return {"gpu_busy_pct": None, "gpu_util_mean_pct": None}
    busy = 100.0 * sum(1 for util in inside if util > 0) / len(inside)
    return {"gpu_busy_pct": round(busy, 1), "gpu_util_mean_pct": round(statistics.fmean(inside), 1)}


@dataclass(frozen=True)
class Records:
    """What the windows are cut from: the jobs, the GPU samples and the Prefect task runs' intervals."""

    jobs: list[dict[str, Any]]
    samples: list[tuple[float, float]] = field(default_factory=list)
    tasks: list[tuple[float, float]] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # between attempts: nothing of the run ran


def attempt_gaps(attempts: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The idle time between one attempt's end and the next one's start."""
    return [(a["ended"], b["started"]) for a, b in itertools.pairwise(attempts) if "ended" in a]


def window(name: str, low: float, high: float, records: Records) -> dict[str, Any]:
    """Wall-clock, job time, task time and GPU share of one window of the run. Outside the jobs splits into the
    time inside Prefect tasks (the pipeline's in-process stages and the launcher's bookkeeping) and between them
    (Prefect's orchestration and the flows' own code), when the task runs are known."""
    inside = [job for job in records.jobs if low <= job["start"] < high]
    intervals = [(job["start"], job["start"] + job["duration_s"]) for job in inside]
    in_jobs = busy_seconds(intervals, low, high)
    wall = max(0.0, high - low - busy_seconds(records.gaps, low, high))
    between = wall - busy_seconds([*intervals, *records.tasks], low, high) if records.tasks else None
    return {
        "phase": name,
        "wall_s": round(wall, 1),
        "jobs": len(inside),
        "job_process_s": round(sum(job["duration_s"] for job in inside), 1),
        "in_jobs_s": round(in_jobs, 1),
        "outside_s": round(wall - in_jobs, 1),
        "outside_per_job_s": round((wall - in_jobs) / len(inside), 2) if inside else None,
        "between_tasks_s": None if between is None else round(between, 1),
        **gpu_share(records.samples, low, high),
    }


def phase_rows(run_dir: Path, records: Records, run_start: float | None, run_end: float | None) -> list[dict]:
    """One row per window: before approval (server, pre-flight, gate) when the start is known, each phase, and
    after the handoff (the run report, the flow's end, the command's exit) when the end is known."""
    approval = read_json(run_dir / "approval.json") or {}
    phases = (read_json(run_dir / "pipeline_state.json") or {}).get("phases", {})
    if "decided_at" not in approval:
        return []
    low = ts(approval["decided_at"])
    rows = [window("pre-approval", run_start, low, records)] if run_start is not None else []
    for phase in PHASES:
        if phase in phases and "at" in phases[phase]:
            high = ts(phases[phase]["at"])
            rows.append(window(phase, low, high, records))
            low = high
    if run_end is not None and "handoff" in phases:
        rows.append(window("after handoff", low, run_end, records))
    return rows


def read_task_runs(path: Path) -> list[tuple[float, float]]:
    """(start, end) of every finished task run the benchmark read from its private server (`task_runs.json`)."""
    runs = read_json(path) or {}
    return sorted((ts(run["start"]), ts(run["end"])) for run in runs.values() if run.get("start") and run.get("end"))


def startup_summary(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start-up inside the job's process by action: median and max seconds over the jobs that dated it."""
    rows = []
    for action in sorted({job["action"] for job in jobs if job["action"]}):
        of = [job for job in jobs if job["action"] == action]
        row: dict[str, Any] = {"action": action, "jobs": len(of), "median_job_s": _median(of, "duration_s")}
        for key in ("startup_s", "setup_s"):
            row[f"median_{key}"] = _median(of, key)
            values = [job[key] for job in of if job[key] is not None]
            row[f"max_{key}"] = round(max(values), 2) if values else None
        rows.append(row)
    return rows


def _median(jobs: list[dict[str, Any]], key: str) -> float | None:
    values = [job[key] for job in jobs if job[key] is not None]
    return round(statistics.median(values), 2) if values else None


def _labels(state: dict[str, Any]) -> list[str]:
    iterations = sorted((k for k in state["iterations"] if k.startswith("iter")), key=lambda k: int(k[4:]))
    return ["baseline", *iterations, *(["final_automl"] if "final_automl" in state["iterations"] else [])]


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _value(entry: dict[str, Any], key: str) -> float | None:
    result = entry.get(key)
    return round(float(result["value"]), 3) if isinstance(result, dict) and "value" in result else None


def _whole_set_far(entry: dict[str, Any], recall: float) -> float | None:
    """FAR on the whole KPI set: the confirm part's scores (`inference_csv`) with the steer part's, when split."""
    parts = [entry.get(key) for key in ("inference_csv", "steer_inference_csv")]
    scored = [read_scored_csv(Path(path)) for path in parts if path and Path(path).is_file()]
    if not scored:
        return None
    labels = tuple(label for part in scored for label in part.labels)
    scores = np.concatenate([part.scores for part in scored])
    return round(far_at_recall(ScoredRows(labels, scores), recall).far_pct, 3)


def kpi_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The KPI figure at each handoff: the Phase 1 winner (its validation FAR at the contract's recall, then on
    the KPI set as Phase 2's
    baseline), every iteration, Phase 3's winner; confirm part (the contract's figure), steer part, and the
    whole KPI set at 99 % and 100 % recall for comparison with the Phase 2 benchmark."""
    state = read_json(run_dir / "deft_state.json")
    phase1 = ((read_json(run_dir / "pipeline_state.json") or {}).get("phases") or {}).get("phase1") or {}
    if state is None:
        return []
    rows = []
    for label in _labels(state):
        entry = state["iterations"].get(label, {})
        rows.append(
            {
                "stage": "phase1_winner (baseline)" if label == "baseline" else label,
                "validation_far_pct": _rounded(phase1.get("far_pct")) if label == "baseline" else None,
                "confirm_pct": _value(entry, "metric_result"),
                "steer_pct": _value(entry, "steer_metric_result"),
                "whole_far_at_99": _whole_set_far(entry, 99.0),
                "whole_far_at_100": _whole_set_far(entry, 100.0),
            }
        )
    return rows


def deliverable_row(run_dir: Path) -> dict[str, Any] | None:
    best = read_json(run_dir / "best_model.json")
    if best is None:
        return None
    split = best.get("kpi_split") or {}
    steer = best.get("steer_metric_result") or {}
    return {
        "iteration": best.get("iteration"),
        "confirm_pct": round(float(best["metric_result"]["value"]), 3),
        "passed": bool(best["metric_result"].get("passed")),
        "figures_on": split.get("figures_on"),
        "confirm_boards": split.get("confirm_boards"),
        "steer_pct": round(float(steer["value"]), 3) if "value" in steer else None,
        "target": best.get("metric_contract", {}).get("target") or best.get("metric_contract"),
    }


def collect_deliverable(run_dir: Path, out: Path) -> Path | None:
    """Copy the deliverable's checkpoint, its training spec, best_model.json and the inference spec (its
    checkpoint path pointed at the copy, so the spec alone scores other data) into OUT/deliverable."""
    best = read_json(run_dir / "best_model.json")
    if best is None:
        return None
    target = out / DELIVERABLE_DIR
    target.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(best["checkpoint"])
    copied = target / checkpoint.name
    shutil.copy2(checkpoint, copied)
    card = checkpoint.parent / "reference_model.json"
    if card.is_file():
        shutil.copy2(card, target / card.name)
    shutil.copy2(best["training_spec"], target / "training_spec.yaml")
    shutil.copy2(run_dir / "best_model.json", target / "best_model.json")
    spec_text = Path(best["inference_spec"]).read_text(encoding="utf-8")
    (target / "inference_spec.yaml").write_text(spec_text.replace(str(checkpoint), str(copied)), encoding="utf-8")
    manifest = {
        "run_dir": str(run_dir),
        "iteration": best.get("iteration"),
        "checkpoint": copied.name,
        "copied_from": {"checkpoint": str(checkpoint), "training_spec": best["training_spec"]},
        "score_with": f"aoi-changenet inference -e {target / 'inference_spec.yaml'} "
        "dataset.classify.infer_dataset.csv_path=CSV dataset.classify.infer_dataset.images_dir=IMAGES "
        "inference.results_dir=OUT results_dir=OUT",
    }
    (target / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return target


def rescored(run_dir: Path, inference_csv: Path) -> dict[str, Any] | None:
    """The deliverable's contract figure from `inference_csv` (the KPI set scored with its inference spec alone),
    on the run's confirm boards, beside the figure `best_model.json` states."""
    best = read_json(run_dir / "best_model.json")
    state = read_json(run_dir / "deft_state.json")
    if best is None or state is None or not inference_csv.is_file():
        return None
    split = state.get("kpi_split") or {}
    confirm = set(split.get("confirm_boards") or [])
    with inference_csv.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if not confirm or board_of(row) in confirm]
    scored = ScoredRows(tuple(row["label"] for row in rows), np.array([float(row["siamese_score"]) for row in rows]))
    recall = float(best["metric_contract"]["evaluator"]["parameters"]["recall_target_pct"])
    return {
        "rows": len(rows),
        "rescored_pct": round(far_at_recall(scored, recall).far_pct, 3),
        "best_model_pct": round(float(best["metric_result"]["value"]), 3),
    }


# -- the whole report

GOAL_OVERHEAD_PCT = 2.0
GOAL_OUTSIDE_PER_JOB_S = 1.0
GOAL_WALL_MIN = 15.0


def build(out: Path, run_dir: Path) -> dict[str, Any]:
    """Every figure of the report as data (also written to OUT/report.json)."""
    attempts = read_json(out / "attempts.json") or []
    jobs = read_jobs(run_dir)
    records = Records(
        jobs, read_gpu_samples(out / "gpu_samples.csv"), read_task_runs(out / "task_runs.json"), attempt_gaps(attempts)
    )
    run_start = attempts[0]["started"] if attempts else None
    run_end = attempts[-1].get("ended") if attempts else None
    rows = phase_rows(run_dir, records, run_start, run_end)
    after = [row for row in rows if row["phase"] not in ("pre-approval", "after handoff")]
    wall = sum(a["ended"] - a["started"] for a in attempts if "ended" in a)
    outside_after = sum(row["outside_s"] for row in after)
    outside_all = sum(row["outside_s"] for row in rows)
    jobs_after = sum(row["jobs"] for row in after)
    after_wall = sum(row["wall_s"] for row in after)
    return {
        "run_dir": str(run_dir),
        "attempts": len(attempts),
        "server_start_s": sum(a.get("server_s", 0.0) for a in attempts),
        "wall_s": round(wall, 1),
        "after_approval_wall_s": round(after_wall, 1),
        "outside_jobs_s": round(outside_all, 1),
        "outside_jobs_after_approval_s": round(outside_after, 1),
        "overhead_pct": round(100.0 * outside_all / wall, 2) if wall else None,
        "overhead_after_approval_pct": round(100.0 * outside_after / after_wall, 2) if after_wall else None,
        "outside_per_job_s": round(outside_after / jobs_after, 2) if jobs_after else None,
        "between_tasks_per_job_s": _between_per_job(after, jobs_after),
        "jobs": len(jobs),
        "gpu_sampled": bool(records.samples),
        "phases": rows,
        "startup": startup_summary(jobs),
        "kpi": kpi_rows(run_dir),
        "deliverable": deliverable_row(run_dir),
        "job_list": [{**job, "start": round(job["start"], 3)} for job in jobs],
    }


def _between_per_job(rows: list[dict[str, Any]], jobs: int) -> float | None:
    values = [row["between_tasks_s"] for row in rows]
    if not jobs or not values or any(value is None for value in values):
        return None
    return round(sum(values) / jobs, 2)


def _cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value}{unit}"


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value <= limit else "MISSED"


def goal_lines(data: dict[str, Any]) -> list[str]:
    wall_min = data["wall_s"] / 60.0 if data["wall_s"] else None
    return [
        f"Goal: orchestration overhead <= {GOAL_OVERHEAD_PCT:g} % of the wall-clock: "
        f"{_cell(data['overhead_pct'], ' %')} ({data['outside_jobs_s']} s outside jobs of {data['wall_s']} s, "
        f"pre-approval included; {_cell(data['overhead_after_approval_pct'], ' %')} from approval to the handoff) -- "
        f"{_verdict(data['overhead_pct'], GOAL_OVERHEAD_PCT)}",
        f"Goal: <= {GOAL_OUTSIDE_PER_JOB_S:g} s per job outside the job's process (after approval): "
        f"{_cell(data['outside_per_job_s'], ' s')} over {data['jobs']} jobs, "
        f"{_cell(data['between_tasks_per_job_s'], ' s')} of it between Prefect tasks -- "
        f"{_verdict(data['outside_per_job_s'], GOAL_OUTSIDE_PER_JOB_S)}",
        f"Goal: whole run <= {GOAL_WALL_MIN:g} min: {_cell(None if wall_min is None else round(wall_min, 1), ' min')} "
        f"in {data['attempts']} attempt(s) -- {_verdict(wall_min, GOAL_WALL_MIN)}",
    ]


def markdown(data: dict[str, Any]) -> list[str]:
    """The report's tables (Markdown, as benchmarks/README.md holds them) and the goals."""
    lines = [
        "| phase | wall s | jobs | in jobs s | outside s | outside per job s | between tasks s | GPU busy % "
        "| GPU util mean % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("phase", "wall_s", "jobs", "in_jobs_s", "outside_s", "outside_per_job_s", "between_tasks_s")
    for row in data["phases"]:
        cells = [*(row[key] for key in keys), row["gpu_busy_pct"], row["gpu_util_mean_pct"]]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += ["", "| job action | jobs | median job s | start-up s (median / max) | training set-up s (median / max) |"]
    lines.append("|---|---|---|---|---|")
    for row in data["startup"]:
        lines.append(
            f"| {row['action']} | {row['jobs']} | {_cell(row['median_job_s'])} | {_cell(row['median_startup_s'])} / "
            f"{_cell(row['max_startup_s'])} | {_cell(row['median_setup_s'])} / {_cell(row['max_setup_s'])} |"
        )
    lines += ["", "| stage | Phase 1 validation FAR % | confirm % (contract) | steer % | whole KPI FAR@99 % | @100 % |"]
    lines.append("|---|---|---|---|---|---|")
    for row in data["kpi"]:
        cells = ["stage", "validation_far_pct", "confirm_pct", "steer_pct", "whole_far_at_99", "whole_far_at_100"]
        lines.append("| " + " | ".join(_cell(row[key]) for key in cells) + " |")
    lines.append(
        f"\npre-approval = the private Prefect server's start ({data['server_start_s']:.1f} s), the command's start, "
        "pre-flight and the gate; after handoff = the run report, the flow's end and the command's exit; outside = "
        "wall-clock minus the union of the jobs' process times (Prefect, the launcher and the in-process stages); "
        "between tasks = the part of it outside every Prefect task run too (orchestration and the flows' own code)."
    )
    best = data["deliverable"]
    if best is not None:
        lines += [
            "",
            f"Deliverable: {best['iteration']}, {best['confirm_pct']} % on the {best['figures_on']} "
            f"({best['confirm_boards']} boards; steer part {_cell(best['steer_pct'], ' %')}), "
            f"target {'met' if best['passed'] else 'not met'}",
        ]
    check = data.get("rescored")
    if check is not None:
        lines.append(
            f"Re-scored from its inference spec alone (a new process, the whole KPI set): {check['rescored_pct']} % "
            f"on the same {check['rows']} confirm rows (best_model.json: {check['best_model_pct']} %)"
        )
    return [*lines, "", *goal_lines(data)]
