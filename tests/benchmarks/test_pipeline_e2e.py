"""The end-to-end benchmark (`benchmarks/pipeline_e2e.py`): its arithmetic on made-up records, and its CPU smoke
mode through the real flow (a private Prefect server, the reference runtime, a slice of DeepPCB-AOI)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
DEEPPCB = REPO / ".." / "shared" / "data" / "deeppcb-aoi"
sys.path.insert(0, str(BENCHMARKS))

import pipeline_e2e  # noqa: E402
import pipeline_e2e_report as report  # noqa: E402


def test_time_inside_jobs_counts_overlapping_jobs_once_and_only_inside_the_window() -> None:
    # Two packed trials overlap on [2, 4]; a third job runs past the window's end (6).
    intervals = [(0.0, 4.0), (2.0, 5.0), (5.5, 9.0)]
    assert report.busy_seconds(intervals, 1.0, 6.0) == pytest.approx((5.0 - 1.0) + (6.0 - 5.5))


def test_a_window_reports_what_the_jobs_leave_outside(tmp_path: Path) -> None:
    jobs = [
        {"start": 10.0, "duration_s": 4.0},
        {"start": 12.0, "duration_s": 4.0},  # packed beside the first
        {"start": 30.0, "duration_s": 1.0},  # after the window
    ]
    samples = [(11.0, 80.0), (15.0, 0.0), (17.0, 0.0), (19.0, 50.0), (31.0, 99.0)]
    tasks = [(9.5, 14.5), (16.0, 18.0)]  # a task around the first job, one with in-process work only
    row = report.window("phase1", 10.0, 20.0, report.Records(jobs, samples, tasks))
    assert (row["wall_s"], row["jobs"], row["job_process_s"], row["in_jobs_s"]) == (10.0, 2, 8.0, 6.0)
    assert (row["outside_s"], row["outside_per_job_s"]) == (4.0, 2.0)
    # Covered by a job or a task: [10, 18]; between tasks: [18, 20].
    assert row["between_tasks_s"] == 2.0
    assert (row["gpu_busy_pct"], row["gpu_util_mean_pct"]) == (50.0, 32.5)
    assert report.window("phase1", 10.0, 20.0, report.Records(jobs))["between_tasks_s"] is None
    assert report.gpu_share([], 0.0, 1.0) == {"gpu_busy_pct": None, "gpu_util_mean_pct": None}


def test_the_time_between_two_attempts_of_a_resumed_run_counts_in_no_window() -> None:
    attempts = [{"started": 0.0, "ended": 30.0}, {"started": 100.0, "ended": 150.0}]
    gaps = report.attempt_gaps(attempts)
    assert gaps == [(30.0, 100.0)]
    jobs = [{"start": 20.0, "duration_s": 5.0}, {"start": 110.0, "duration_s": 20.0}]
    row = report.window("phase2", 10.0, 140.0, report.Records(jobs, gaps=gaps))
    assert (row["wall_s"], row["in_jobs_s"], row["outside_s"]) == (130.0 - 70.0, 25.0, 35.0)


def test_start_up_is_read_from_the_dated_status_lines(tmp_path: Path) -> None:
    lines = [
        {"status": "STARTED", "message": "Starting Training Loop.", "timestamp": "2026-01-01T10:00:03+00:00"},
        {
            "status": "RUNNING",
            "message": "Training loop in progress",
            "time_per_epoch": "0:00:02.500000",
            "timestamp": "2026-01-01T10:00:10.500000+00:00",
        },
    ]
    (tmp_path / "status.json").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    process_start = report.ts("2026-01-01T10:00:00+00:00")
    # 3 s to the first line; the first epoch ended at 10.5 s after 2.5 s of steps, so set-up was 10.5-2.5-3 s.
    assert report.startup(tmp_path, process_start) == {"startup_s": 3.0, "setup_s": 5.0}
    assert report.parse_duration("1 day, 0:00:01.5") == pytest.approx(86401.5)


def test_the_slice_keeps_every_kth_board_of_each_set_with_its_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for index, relative in enumerate(pipeline_e2e.SETS):
        path = data / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        boards = [f"b{index}{n}" for n in range(5)]
        rows = [f"{b}/test,{b}/golden,PASS,T00,{b},0" for b in boards]
        path.write_text("input_path,golden_path,label,object_name,boardname,defect_count\n" + "\n".join(rows) + "\n")
        for board in boards:
            (data / "images" / board / "test").mkdir(parents=True)
            (data / "images" / board / "test" / "T00_SolderLight.png").write_bytes(board.encode())

    target = pipeline_e2e.prepare_workspace(data, tmp_path / "ws", keep_every=2)

    with (target / pipeline_e2e.SETS[0]).open(newline="") as handle:
        assert [row["boardname"] for row in csv.DictReader(handle)] == ["b00", "b02", "b04"]
    assert len(list((target / "images").iterdir())) == 4 * 3
    assert (target / "images" / "b02" / "test" / "T00_SolderLight.png").read_bytes() == b"b02"
    assert not (tmp_path / "ws.partial").exists()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_smoke_mode_runs_every_phase_and_leaves_the_deliverable_in_the_folder_it_names(tmp_path: Path) -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the end-to-end smoke run needs the DeepPCB-AOI workspace")
    out = tmp_path / "e2e"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    command = [sys.executable, str(BENCHMARKS / "pipeline_e2e.py"), "--out", str(out), "--smoke"]
    command += ["--data", str(DEEPPCB)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540, check=False)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    folder = out / "deliverable"
    assert done.stdout.strip().splitlines()[-1] == f"Deliverable folder: {folder}"
    data = json.loads((out / "report.json").read_text())
    rows = {row["phase"]: row for row in data["phases"]}
    assert set(rows) == {"pre-approval", "phase1", "handoff_1_2", "phase2", "phase3", "handoff", "after handoff"}
    assert sum(row["wall_s"] for row in rows.values()) == pytest.approx(data["wall_s"], abs=1.0)
    assert rows["phase1"]["jobs"] == 2 * 2  # two recommendations: a training and a validation inference each
    for phase in ("phase1", "phase2", "phase3"):
        assert 0 < rows[phase]["in_jobs_s"] <= rows[phase]["wall_s"] + 1.0  # phase ends are stored to the second
    assert data["gpu_sampled"] or all(row["gpu_busy_pct"] is None for row in data["phases"])
    train = next(row for row in data["startup"] if row["action"] == "train")
    assert train["median_startup_s"] > 0 and train["median_setup_s"] is not None
    for phase in ("phase1", "phase2", "phase3"):  # the task runs were read from the private server
        assert 0.0 <= rows[phase]["between_tasks_s"] <= rows[phase]["outside_s"] + 0.1
    assert [row["stage"] for row in data["kpi"]] == ["phase1_winner (baseline)", "iter1", "final_automl"]
    assert all(0.0 <= row["confirm_pct"] <= 100.0 and row["whole_far_at_99"] is not None for row in data["kpi"])
    best = json.loads((folder / "best_model.json").read_text())
    assert best["iteration"] == data["deliverable"]["iteration"]
    assert best["metric_result"]["value"] == pytest.approx(data["deliverable"]["confirm_pct"], abs=1e-3)
    checkpoint = folder / Path(best["checkpoint"]).name
    assert checkpoint.stat().st_size > 0
    assert (folder / "training_spec.yaml").is_file()
    assert f"checkpoint: {checkpoint}" in (folder / "inference_spec.yaml").read_text()
    # The deliverable's inference spec alone, in a new process, gives back the figure best_model.json states
    # (within one PASS row: the deployment spec scores at batch 1).
    rescored = data["rescored"]
    assert rescored["best_model_pct"] == pytest.approx(best["metric_result"]["value"], abs=1e-3)
    n_pass = best["metric_result"]["diagnostics"]["n_pass"]
    assert rescored["rows"] == n_pass + best["metric_result"]["diagnostics"]["n_defect"]
    assert rescored["rescored_pct"] == pytest.approx(rescored["best_model_pct"], abs=100.0 / n_pass + 1e-6)
    assert "Goal: whole run <= 15 min" in done.stdout
