"""The run's KPI split: chosen once and kept in the run state, scored per part, covered by the leakage checks."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from run_support import make_context

from aoi_pipeline.core.kpi_split import BOARD_HASH_SOURCE, CONFIRM_SET_SOURCE, WHOLE_SET_SOURCE, board_of
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key
from aoi_pipeline.core.state import StageCommit, commit_stage, init_state, read_state
from aoi_pipeline.errors import StateError
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.pipeline.evaluation import commit_evaluation, evaluate_iteration
from aoi_pipeline.pipeline.kpi_parts import kpi_eval_csv, protected_kpi, run_kpi_split
from aoi_pipeline.pipeline.run_specs import training_spec

CONTRACT = parse_target("FAR < 30% at Recall=100%")
TYPES = ("open", "short", "spur")


def write_kpi(path: Path, boards: int = 18, first: int = 0) -> list[dict[str, str]]:
    """Per board: two PASS tiles and one defect of type i % 3."""
    rows = []
    for index in range(first, first + boards):
        board = f"b{index:04d}"
        for tile, label in (("T0", "PASS"), ("T1", "PASS"), ("T2", TYPES[index % 3])):
            rows.append(
                {"input_path": f"{board}/test", "golden_path": f"{board}/golden", "label": label, "object_name": tile}
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


class ScoringRunner:
    """Inference: every defect 0.5; PASS tiles T0 0.1, T1 0.9 on steer boards and 0.1 on confirm boards."""

    def __init__(self, confirm_boards: set[str]) -> None:
        self.confirm_boards = confirm_boards
        self.jobs: list[TaoJob] = []

    def run(self, job: TaoJob) -> JobResult:
        self.jobs.append(job)
        job.results_dir.mkdir(parents=True, exist_ok=True)
        source = Path(get_key(dict(job.spec), "dataset.classify.infer_dataset.csv_path"))
        with source.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with (job.results_dir / "inference.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, [*rows[0], "siamese_score"])
            writer.writeheader()
            for row in rows:
                steer_false_alarm = row["object_name"] == "T1" and board_of(row) not in self.confirm_boards
                score = 0.5 if row["label"] != "PASS" else (0.9 if steer_false_alarm else 0.1)
                writer.writerow({**row, "siamese_score": str(score)})
        (job.results_dir / "job.log").write_text("log\n", encoding="utf-8")
        now = datetime.now(UTC)
        return JobResult(
            job, 0, "success", None, now, now, 0.0, job.results_dir / "job.log", job.results_dir / "s.yaml"
        )


def start_state(layout) -> None:
    init_state(
        layout.root, kpi_target=render_target(CONTRACT), metric_contract=CONTRACT.to_dict(), max_iterations=1, config={}
    )


def train_dir(layout, label: str = "baseline") -> Path:
    folder = layout.train_dir(label)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_epoch_001_step_00010.pth").write_bytes(b"w")
    (folder / "status.json").write_text(json.dumps({"status": "SUCCESS"}) + "\n", encoding="utf-8")
    return folder


def test_the_split_is_chosen_once_recorded_and_kept_on_resume(workspace, layout):
    write_kpi(workspace.kpi_csv)
    start_state(layout)
    ctx = make_context(workspace, layout, deft={"kpi_split": "confirm_split"})
    split = run_kpi_split(ctx)
    assert split.source == BOARD_HASH_SOURCE
    assert read_state(layout.root)["kpi_split"]["confirm_boards"] == list(split.confirm_boards)
    # A resumed run with another share keeps the boards it started with.
    again = run_kpi_split(make_context(workspace, layout, deft={"kpi_split": "confirm_split", "confirm_share": 0.3}))
    assert again == split


def test_an_old_state_with_evaluations_keeps_the_whole_set(workspace, layout):
    write_kpi(workspace.kpi_csv)
    start_state(layout)
    state_file = layout.root / "deft_state.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state["iterations"]["baseline"] = {"metric_result": {"value": 1.0}}
    state_file.write_text(json.dumps(state), encoding="utf-8")
    split = run_kpi_split(make_context(workspace, layout, deft={"kpi_split": "confirm_split"}))
    assert split.source == WHOLE_SET_SOURCE


def test_the_contract_is_scored_on_the_confirm_part_and_the_steer_figure_is_recorded(workspace, layout):
    write_kpi(workspace.kpi_csv)
    start_state(layout)
    ctx = make_context(workspace, layout, deft={"kpi_split": "confirm_split"}, kpi_target=render_target(CONTRACT))
    split = run_kpi_split(ctx)
    folder = train_dir(layout)
    spec = training_spec(baseline_spec(), results_dir=folder, num_epochs=1, batch_size=4)
    spec_path = layout.iteration_spec("baseline")
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    commit_stage(
        layout.root,
        StageCommit(
            "baseline",
            "train",
            "ok",
            "t",
            1.0,
            {"best_ckpt_path": str(next(folder.glob("*.pth"))), "training_spec": str(spec_path)},
        ),
    )
    evaluation = evaluate_iteration(ctx.with_runner(ScoringRunner(set(split.confirm_boards))), "baseline", spec)
    # Confirm boards: no PASS tile reaches the defects' 0.5; steer boards: every T1 tile (half the PASS) does.
    assert evaluation.winner.result.value == pytest.approx(0.0)
    assert evaluation.winner.steer_result is not None
    assert evaluation.winner.steer_result.value == pytest.approx(50.0)
    commit_evaluation(layout, evaluation, contract=CONTRACT, training_spec=spec_path)
    entry = read_state(layout.root)["iterations"]["baseline"]
    assert entry["metric_result"]["value"] == pytest.approx(0.0)
    assert entry["steer_metric_result"]["value"] == pytest.approx(50.0)
    with open(entry["steer_inference_csv"], newline="", encoding="utf-8") as handle:
        assert {board_of(row) for row in csv.DictReader(handle)} == set(split.steer_boards)


def test_a_workspace_confirm_set_is_scored_and_protected(workspace, layout):
    kpi = write_kpi(workspace.kpi_csv)
    confirm = write_kpi(workspace.kpi_csv.parent / "confirm_set.csv", boards=6, first=100)
    start_state(layout)
    ctx = make_context(workspace, layout, deft={"kpi_split": "confirm_split"})
    split = run_kpi_split(ctx)
    assert split.source == CONFIRM_SET_SOURCE
    assert set(split.confirm_boards) == {board_of(row) for row in confirm}
    with kpi_eval_csv(ctx, split).open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(kpi) + len(confirm)
    assert len(protected_kpi(ctx).csv.rows) == len(kpi) + len(confirm)


def test_a_recorded_split_that_is_broken_is_refused(workspace, layout):
    write_kpi(workspace.kpi_csv)
    start_state(layout)
    state_file = layout.root / "deft_state.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state["kpi_split"] = {"source": "board_hash", "steer_boards": ["b1"], "confirm_boards": ["b1"]}
    state_file.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(StateError):
        run_kpi_split(make_context(workspace, layout, deft={"kpi_split": "confirm_split"}))
