"""Evaluating one iteration on the KPI set: candidate checkpoints, the contract's winner, the state commit.

A fake runner writes what an inference job writes: `inference.csv` with the KPI rows plus a score per row
that the test chooses per candidate (best_val or latest), so each FAR is computed by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from aoi_pipeline.config import AutomlSettings, DatasetSettings, DeftSettings, Images
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key
from aoi_pipeline.core.state import StageCommit, commit_stage, init_state, next_stage, read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import AoiPipelineError, ProgramJobError
from aoi_pipeline.jobs.failures import Failure
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.pipeline.context import JobDefaults, RunContext
from aoi_pipeline.pipeline.evaluation import (
    METRIC_RESULT_FILE,
    candidate_checkpoints,
    commit_evaluation,
    evaluate_iteration,
)
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import training_spec

CONTRACT = parse_target("FAR < 30% at Recall=100%")
JOBS = JobDefaults(image="nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt", runtime="reference")
# Four PASS rows, two defects.
LABELS = ("PASS", "PASS", "PASS", "PASS", "open", "short")
# best_val: weakest defect 0.5; PASS rows at or above it: 0.6, 0.7 -> FAR 2/4 = 50 %.
SCORES_50 = (0.1, 0.2, 0.6, 0.7, 0.5, 0.9)
# latest: weakest defect 0.65; PASS rows at or above it: 0.7 -> FAR 1/4 = 25 %.
SCORES_25 = (0.1, 0.2, 0.6, 0.7, 0.65, 0.9)
# Another ordering with FAR 25 % too: weakest defect 0.4, PASS rows at or above it: 0.45.
SCORES_25_OTHER = (0.05, 0.1, 0.2, 0.45, 0.4, 0.8)


class InferenceRunner:
    """Writes inference.csv for each inference job, with the scores chosen for the job's candidate kind."""

    def __init__(self, scores: dict[str, Sequence[float]], failing: bool = False) -> None:
        self.scores = scores
        self.failing = failing
        self.jobs: list[TaoJob] = []

    def run(self, job: TaoJob) -> JobResult:
        self.jobs.append(job)
        job.results_dir.mkdir(parents=True, exist_ok=True)
        spec_path, log_path = job.results_dir / "spec.yaml", job.results_dir / "job.log"
        spec_path.write_text(yaml.safe_dump(dict(job.spec)), encoding="utf-8")
        log_path.write_text("log\n", encoding="utf-8")
        if not self.failing:
            kind = job.name.rsplit("-", 1)[-1]
            source = Path(get_key(dict(job.spec), "dataset.classify.infer_dataset.csv_path"))
            with source.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            with (job.results_dir / "inference.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, [*rows[0], "siamese_score"])
                writer.writeheader()
                for row, score in zip(rows, self.scores[kind], strict=True):
                    writer.writerow({**row, "siamese_score": repr(score)})
        now = datetime.now(UTC)
        failure = Failure("program", "the program raised ValueError", "Traceback ...") if self.failing else None
        return JobResult(
            job=job,
            exit_code=1 if self.failing else 0,
            status="failed" if self.failing else "success",
            failure=failure,
            started_at=now,
            finished_at=now,
            duration_s=0.0,
            log_path=log_path,
            spec_path=spec_path,
        )


def write_kpi_csv(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input_path", "golden_path", "label", "object_name"])
        for index, label in enumerate(LABELS):
            writer.writerow([f"b{index}/test", f"b{index}/golden", label, f"c{index}"])
    return path


def write_train_dir(train_dir: Path, val_losses: dict[int, float]) -> dict[int, Path]:
    """Periodic checkpoints for each epoch and status.json lines with their validation losses."""
    train_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = {}
    lines = []
    for epoch, loss in val_losses.items():
        checkpoints[epoch] = train_dir / f"model_epoch_{epoch:03d}_step_{epoch * 10:05d}.pth"
        checkpoints[epoch].write_bytes(b"weights %d" % epoch)
        lines.append({"status": "RUNNING", "epoch": epoch, "max_epoch": 3, "kpi": {"val_loss": loss}})
    lines.append({"status": "SUCCESS", "message": "Training finished successfully."})
    (train_dir / "status.json").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return checkpoints


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    return RunLayout(tmp_path / "run")


@pytest.fixture
def kpi_csv(tmp_path: Path) -> Path:
    return write_kpi_csv(tmp_path / "testing_set.csv")


def evaluate(
    layout: RunLayout, kpi_csv: Path, runner: InferenceRunner, label: str = "baseline", kpi_split: str = "whole_set"
):
    spec = training_spec(baseline_spec(), results_dir=layout.train_dir(label), num_epochs=3, batch_size=4)
    workspace = dataclasses.replace(Workspace.at(kpi_csv.parent), kpi_csv=kpi_csv, images_dir=kpi_csv.parent / "images")
    ctx = RunContext(
        layout=layout,
        contract=CONTRACT,
        workspace=workspace,
        jobs=JOBS,
        runner=runner,
        dataset=DatasetSettings(),
        images=Images(),
        deft=DeftSettings(kpi_split=kpi_split),
        phase1=AutomlSettings(),
        phase3=AutomlSettings(),
    )
    return evaluate_iteration(ctx, label, spec)


def test_the_best_validation_and_the_latest_checkpoint_are_both_candidates(layout):
    checkpoints = write_train_dir(layout.train_dir("baseline"), {1: 0.7, 2: 0.4, 3: 0.5})
    assert candidate_checkpoints(layout.train_dir("baseline")) == [
        ("best_val", checkpoints[2]),
        ("latest", checkpoints[3]),
    ]


def test_the_same_file_is_a_candidate_only_once(layout):
    checkpoints = write_train_dir(layout.train_dir("baseline"), {1: 0.7, 2: 0.5, 3: 0.4})
    assert candidate_checkpoints(layout.train_dir("baseline")) == [("best_val", checkpoints[3])]


def test_a_single_copied_checkpoint_is_the_only_candidate(layout):
    train_dir = layout.train_dir("baseline")
    train_dir.mkdir(parents=True)
    (train_dir / "model_epoch_004_step_00040.pth").write_bytes(b"w")
    assert candidate_checkpoints(train_dir) == [("latest", train_dir / "model_epoch_004_step_00040.pth")]


@pytest.mark.parametrize("content", [None, "status.json"])
def test_a_train_dir_without_checkpoints_is_an_error_naming_it(layout, content):
    train_dir = layout.train_dir("iter1")
    train_dir.mkdir(parents=True)
    if content:
        (train_dir / content).write_text('{"status": "SUCCESS"}\n', encoding="utf-8")
    with pytest.raises(AoiPipelineError) as raised:
        candidate_checkpoints(train_dir)
    assert str(train_dir) in str(raised.value)


def test_a_better_latest_checkpoint_wins_over_the_best_validation_one(layout, kpi_csv):
    checkpoints = write_train_dir(layout.train_dir("baseline"), {1: 0.7, 2: 0.4, 3: 0.5})
    runner = InferenceRunner({"best_val": SCORES_50, "latest": SCORES_25})
    evaluation = evaluate(layout, kpi_csv, runner)
    assert evaluation.winner.kind == "latest"
    assert evaluation.winner.checkpoint == checkpoints[3]
    assert evaluation.winner.result.value == pytest.approx(25.0)
    assert evaluation.winner.result.threshold == pytest.approx(0.65)
    assert evaluation.winner.result.passed  # 25 % < 30 % at 100 % recall
    assert [candidate.result.value for candidate in evaluation.candidates] == pytest.approx([50.0, 25.0])
    inferred = [get_key(dict(job.spec), "inference.checkpoint") for job in runner.jobs]
    assert inferred == [str(checkpoints[2]), str(checkpoints[3])]
    assert all(
        get_key(dict(job.spec), "dataset.classify.infer_dataset.csv_path") == str(kpi_csv) for job in runner.jobs
    )


def test_a_tie_goes_to_the_best_validation_checkpoint(layout, kpi_csv):
    checkpoints = write_train_dir(layout.train_dir("baseline"), {1: 0.7, 2: 0.4, 3: 0.5})
    evaluation = evaluate(layout, kpi_csv, InferenceRunner({"best_val": SCORES_25_OTHER, "latest": SCORES_25}))
    assert evaluation.winner.kind == "best_val"
    assert evaluation.winner.checkpoint == checkpoints[2]
    assert evaluation.winner.result.value == pytest.approx(25.0)


def test_each_candidate_writes_its_metric_result(layout, kpi_csv):
    write_train_dir(layout.train_dir("baseline"), {1: 0.7, 2: 0.4, 3: 0.5})
    evaluation = evaluate(layout, kpi_csv, InferenceRunner({"best_val": SCORES_50, "latest": SCORES_25}))
    for candidate, far in zip(evaluation.candidates, (50.0, 25.0), strict=True):
        assert candidate.metric_json == layout.inference_dir("baseline", candidate.kind) / METRIC_RESULT_FILE
        written = json.loads(candidate.metric_json.read_text(encoding="utf-8"))
        assert (written["name"], written["unit"]) == ("far_pct", "%")
        assert written["value"] == pytest.approx(far)
        assert written["constraints"]["recall_pct"] == pytest.approx(100.0)


def test_a_single_checkpoint_is_inferred_once(layout, kpi_csv):
    train_dir = layout.train_dir("baseline")
    train_dir.mkdir(parents=True)
    (train_dir / "model_epoch_002_step_00020.pth").write_bytes(b"w")
    runner = InferenceRunner({"latest": SCORES_50})
    evaluation = evaluate(layout, kpi_csv, runner)
    assert len(runner.jobs) == 1
    assert evaluation.winner.kind == "latest" and len(evaluation.candidates) == 1
    assert not evaluation.winner.result.passed  # 50 % is not < 30 %


def test_a_failed_inference_job_is_a_program_error_naming_the_job(layout, kpi_csv):
    write_train_dir(layout.train_dir("baseline"), {1: 0.7})
    with pytest.raises(ProgramJobError) as raised:
        evaluate(layout, kpi_csv, InferenceRunner({}, failing=True))
    assert "baseline-inference-best_val" in str(raised.value)


def test_committing_the_evaluation_records_the_winner_in_the_run_state(layout, kpi_csv):
    checkpoints = write_train_dir(layout.train_dir("baseline"), {1: 0.7, 2: 0.4, 3: 0.5})
    init_state(
        layout.root,
        kpi_target=render_target(CONTRACT),
        metric_contract=CONTRACT.to_dict(),
        max_iterations=0,
        config={"specs_file": str(layout.base_spec)},
    )
    spec_file = layout.iteration_spec("baseline")
    spec_file.write_text("task: classify\n", encoding="utf-8")
    commit_stage(
        layout.root,
        StageCommit(
            "baseline",
            "train",
            "ok",
            "trained",
            1.0,
            {"best_ckpt_path": str(checkpoints[2]), "training_spec": str(spec_file)},
        ),
    )
    evaluation = evaluate(layout, kpi_csv, InferenceRunner({"best_val": SCORES_50, "latest": SCORES_25}))
    commit_evaluation(layout, evaluation, contract=CONTRACT, training_spec=spec_file)
    state = read_state(layout.root)
    entry = state["iterations"]["baseline"]
    assert entry["stage_completed"] == "evaluate" and entry["status"] == "complete"
    assert entry["best_ckpt_path"] == str(checkpoints[3])
    assert entry["metric_result"]["value"] == pytest.approx(25.0)
    assert entry["metric_result"]["passed"] is True
    assert entry["threshold"] == pytest.approx(0.65)
    assert entry["inference_csv"] == str(layout.inference_dir("baseline", "latest") / "inference.csv")
    assert state["events"][-1]["stage"] == "evaluate"
    assert "latest" in state["events"][-1]["summary"]
    assert next_stage(state).stage == "finalize"
