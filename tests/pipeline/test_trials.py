"""One AutoML trial: train, validation inference, FAR, collapse detection and failure handling.

A fake job runner stands in for the launcher: it writes what real jobs write (spec.yaml and job.log in the
job's results dir, status.json lines and checkpoints for train, inference.csv for inference), so each test
chooses the validation losses, the scores and the failures and derives the expected FAR by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoi_pipeline.config import AutomlSettings, DatasetSettings, DeftSettings, Images
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import SpecError, StateError, TrialCancelledError, TrialInfrastructureError
from aoi_pipeline.jobs.failures import Failure
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.pipeline.context import JobDefaults, RunContext
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.trials import TRIAL_FILE, TrialOutcome, read_outcome, run_trial

CONTRACT = parse_target("FAR < 5% at Recall=100%")
SETTINGS = AutomlSettings(num_epochs=3, batch_size=4, spec_overrides=("dataset.classify.image_width=64",))
PARAMS = {"train.optim.lr": 3e-5, "model.classify.learnable_difference_modules": 2}
# Four PASS rows and two defects. At 100 % recall the threshold is the weakest defect's score (0.5); the
# PASS rows at or above it are 0.6 and 0.8, so FAR = 2 / 4 = 50 %.
LABELS = ("PASS", "PASS", "PASS", "PASS", "short", "open")
SCORES = (0.1, 0.2, 0.6, 0.8, 0.5, 0.9)
VAL_LOSSES = {1: 0.7, 2: 0.4, 3: 0.5}


class FakeRunner:
    """Runs jobs by writing the files a real job leaves behind; records every job it was given."""

    def __init__(
        self,
        *,
        scores: Sequence[float] = SCORES,
        val_losses: dict[int, float] | None = None,
        failures: dict[str, Failure] | None = None,
        cancelled: Sequence[str] = (),
        write_inference_csv: bool = True,
    ) -> None:
        self.scores = scores
        self.val_losses = VAL_LOSSES if val_losses is None else val_losses
        self.failures = failures or {}
        self.cancelled = cancelled
        self.write_inference_csv = write_inference_csv
        self.jobs: list[TaoJob] = []

    def run(self, job: TaoJob) -> JobResult:
        self.jobs.append(job)
        results = job.results_dir
        # The launcher refuses a results dir that is not empty; so does the fake.
        assert not results.exists() or not any(results.iterdir())
        results.mkdir(parents=True, exist_ok=True)
        spec_path, log_path = results / "spec.yaml", results / "job.log"
        spec_path.write_text(yaml.safe_dump(dict(job.spec)), encoding="utf-8")
        log_path.write_text("log\n", encoding="utf-8")
        failure = self.failures.get(job.action)
        if job.action in self.cancelled:
            status = "cancelled"
        elif failure is not None:
            status = "failed"
        else:
            status = "success"
            (self._train if job.action == "train" else self._infer)(job)
        now = datetime.now(UTC)
        return JobResult(
            job=job,
            exit_code=0 if status == "success" else 1,
            status=status,
            failure=failure,
            started_at=now,
            finished_at=now,
            duration_s=0.0,
            log_path=log_path,
            spec_path=spec_path,
        )

    def _train(self, job: TaoJob) -> None:
        lines = []
        for epoch, loss in self.val_losses.items():
            kpi = {"val_loss": loss, "val_acc": 0.5 + epoch / 100}
            lines.append({"status": "RUNNING", "epoch": epoch, "max_epoch": 3, "kpi": kpi})
            (job.results_dir / f"model_epoch_{epoch:03d}_step_{epoch * 10:05d}.pth").write_bytes(b"w")
        if not self.val_losses:
            (job.results_dir / "model_epoch_002_step_00030.pth").write_bytes(b"w")
        lines.append({"status": "SUCCESS", "message": "Training finished successfully."})
        text = "".join(json.dumps(line) + "\n" for line in lines)
        (job.results_dir / "status.json").write_text(text, encoding="utf-8")

    def _infer(self, job: TaoJob) -> None:
        if not self.write_inference_csv:
            return
        source = Path(get_key(dict(job.spec), "dataset.classify.infer_dataset.csv_path"))
        with source.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with (job.results_dir / "inference.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, [*rows[0], "siamese_score"])
            writer.writeheader()
            for row, score in zip(rows, self.scores, strict=True):
                writer.writerow({**row, "siamese_score": repr(score)})


def write_validation_csv(path: Path, labels: Sequence[str] = LABELS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input_path", "golden_path", "label", "object_name"])
        for index, label in enumerate(labels):
            writer.writerow([f"b{index}/test", f"b{index}/golden", label, f"c{index}"])
    return path


@pytest.fixture
def validation_csv(tmp_path: Path) -> Path:
    return write_validation_csv(tmp_path / "validation_set.csv")


def trial(
    tmp_path: Path,
    validation_csv: Path,
    runner: FakeRunner,
    number: int = 3,
    *,
    params: dict[str, Any] = PARAMS,
    contract: MetricContract = CONTRACT,
    pretrained_model: Path | None = None,
) -> TrialOutcome:
    """Phase 1 trial `number` of a run in tmp_path/run, scored on `validation_csv`."""
    workspace = dataclasses.replace(
        Workspace.at(tmp_path / "ws"), validation_csv=validation_csv, images_dir=tmp_path / "images"
    )
    ctx = RunContext(
        layout=RunLayout(tmp_path / "run"),
        contract=contract,
        workspace=workspace,
        jobs=JobDefaults(image="nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt", runtime="reference"),
        runner=runner,
        dataset=DatasetSettings(),
        images=Images(),
        deft=DeftSettings(),
        phase1=SETTINGS,
        phase3=AutomlSettings(),
    )
    return run_trial(
        ctx, phase="phase1", number=number, params=params, base_spec=baseline_spec(), pretrained_model=pretrained_model
    )


def test_the_trial_value_is_the_hand_computed_far_on_the_validation_csv(tmp_path, validation_csv):
    runner = FakeRunner()
    outcome = trial(tmp_path, validation_csv, runner)
    assert outcome.state == "complete"
    assert outcome.far_pct == pytest.approx(50.0)
    assert outcome.recall_pct == pytest.approx(100.0)
    assert outcome.threshold == pytest.approx(0.5)
    assert outcome.val_loss == pytest.approx(0.4)
    assert outcome.reason == ""
    assert [job.action for job in runner.jobs] == ["train", "inference"]
    inference = dict(runner.jobs[1].spec)
    assert get_key(inference, "dataset.classify.infer_dataset.csv_path") == str(validation_csv)
    assert outcome.inference_csv == runner.jobs[1].results_dir / "inference.csv"


def test_the_far_is_taken_at_the_contracts_recall(tmp_path, validation_csv):
    # Recall 50 % of two defects keeps one: the threshold is the strongest defect (0.9), which no PASS
    # row reaches.
    contract = parse_target("FAR < 5% at Recall=50%")
    outcome = trial(tmp_path, validation_csv, FakeRunner(), contract=contract)
    assert (outcome.far_pct, outcome.recall_pct, outcome.threshold) == (0.0, 50.0, 0.9)


def test_the_outcome_is_written_to_trial_json(tmp_path, validation_csv):
    outcome = trial(tmp_path, validation_csv, FakeRunner())
    trial_dir = tmp_path / "run" / "phase1" / "trial_003"
    record = json.loads((trial_dir / TRIAL_FILE).read_text(encoding="utf-8"))
    assert record["state"] == "complete"
    assert record["far_pct"] == pytest.approx(50.0)
    assert record["params"] == PARAMS
    assert record["checkpoint"] == str(outcome.checkpoint)
    assert read_outcome(trial_dir) == outcome


def test_the_training_spec_pins_the_budget_and_carries_params_and_warm_start(tmp_path, validation_csv):
    pretrained = tmp_path / "iter1" / "train" / "model_epoch_004_step_00050.pth"
    params = {**PARAMS, "train.num_epochs": 99}
    runner = FakeRunner()
    outcome = trial(tmp_path, validation_csv, runner, params=params, pretrained_model=pretrained)
    train, inference = (dict(job.spec) for job in runner.jobs)
    assert get_key(train, "train.num_epochs") == 3
    assert get_key(train, "dataset.classify.batch_size") == 4
    assert get_key(train, "train.pretrained_model_path") == str(pretrained)
    assert get_key(train, "train.optim.lr") == 3e-5
    assert get_key(train, "dataset.classify.image_width") == 64
    assert get_key(train, "train.results_dir") == str(runner.jobs[0].results_dir)
    # Inference uses the exact training spec: the searched architecture travels with the checkpoint.
    assert get_key(inference, "model.classify.learnable_difference_modules") == 2
    assert get_key(inference, "inference.checkpoint") == str(outcome.checkpoint)
    assert outcome.checkpoint is not None and outcome.checkpoint.parent == runner.jobs[0].results_dir
    assert outcome.train_spec_path == runner.jobs[0].results_dir / "spec.yaml"


def test_without_validations_the_latest_checkpoint_scores_and_val_loss_is_unknown(tmp_path, validation_csv):
    outcome = trial(tmp_path, validation_csv, FakeRunner(val_losses={}))
    assert outcome.state == "complete"
    assert outcome.val_loss is None
    assert outcome.checkpoint is not None and outcome.checkpoint.name == "model_epoch_002_step_00030.pth"


def test_every_row_with_one_score_is_a_collapsed_trial(tmp_path, validation_csv):
    outcome = trial(tmp_path, validation_csv, FakeRunner(scores=[0.5] * len(LABELS)))
    assert outcome.state == "collapsed"
    assert "same score" in outcome.reason
    assert outcome.far_pct == 100.0  # measured and kept for the record, but not a value to rank
    assert read_outcome(outcome.inference_csv.parent.parent).state == "collapsed"


def test_a_far_of_100_percent_is_ranked_not_rejected(tmp_path, validation_csv):
    # Every PASS score (0.6..0.8) is at or above the weakest defect (0.55): FAR 100 %, yet the scores rank.
    scores = (0.6, 0.7, 0.75, 0.8, 0.55, 0.9)
    outcome = trial(tmp_path, validation_csv, FakeRunner(scores=scores))
    assert outcome.state == "complete"
    assert outcome.far_pct == 100.0


def test_a_program_failure_in_training_fails_only_this_trial(tmp_path, validation_csv):
    failure = Failure("program", "the experiment spec or an override is invalid", "omegaconf.errors...")
    runner = FakeRunner(failures={"train": failure})
    outcome = trial(tmp_path, validation_csv, runner)
    assert outcome.state == "failed"
    assert "the experiment spec or an override is invalid" in outcome.reason
    assert outcome.far_pct is None and outcome.checkpoint is None
    assert [job.action for job in runner.jobs] == ["train"]
    assert read_outcome(tmp_path / "run" / "phase1" / "trial_003").state == "failed"


def test_a_program_failure_in_inference_keeps_what_training_produced(tmp_path, validation_csv):
    failure = Failure("program", "the program raised KeyError: 'radio'", "Traceback ...")
    outcome = trial(tmp_path, validation_csv, FakeRunner(failures={"inference": failure}))
    assert outcome.state == "failed"
    assert "validation inference failed" in outcome.reason
    assert outcome.val_loss == pytest.approx(0.4)
    assert outcome.checkpoint is not None


def test_an_inference_job_that_wrote_no_scores_fails_the_trial(tmp_path, validation_csv):
    outcome = trial(tmp_path, validation_csv, FakeRunner(write_inference_csv=False))
    assert outcome.state == "failed"
    assert "inference.csv" in outcome.reason


def test_an_infrastructure_failure_raises_and_a_retry_gets_fresh_job_dirs(tmp_path, validation_csv):
    failure = Failure("infrastructure", "the disk is full (No space left on device)", "[Errno 28]")
    trial_dir = tmp_path / "run" / "phase1" / "trial_003"
    with pytest.raises(TrialInfrastructureError, match="No space left") as raised:
        trial(tmp_path, validation_csv, FakeRunner(failures={"train": failure}))
    assert raised.value.failure == failure
    assert not (trial_dir / TRIAL_FILE).exists()

    outcome = trial(tmp_path, validation_csv, FakeRunner())
    assert outcome.state == "complete"
    assert (trial_dir / "train.attempt1" / "job.log").is_file()


def test_a_cancelled_job_raises_and_records_no_outcome(tmp_path, validation_csv):
    with pytest.raises(TrialCancelledError):
        trial(tmp_path, validation_csv, FakeRunner(cancelled=("inference",)))
    assert read_outcome(tmp_path / "run" / "phase1" / "trial_003") is None


def test_a_recorded_trial_is_not_run_again(tmp_path, validation_csv):
    first = trial(tmp_path, validation_csv, FakeRunner())
    again = FakeRunner()
    assert trial(tmp_path, validation_csv, again) == first
    assert again.jobs == []
    with pytest.raises(StateError, match="other parameters"):
        trial(tmp_path, validation_csv, FakeRunner(), params={"train.optim.lr": 1e-4})


def test_a_parameter_the_spec_does_not_know_stops_before_any_job(tmp_path, validation_csv):
    runner = FakeRunner()
    with pytest.raises(SpecError):
        trial(tmp_path, validation_csv, runner, params={"train.optim.no_such_key": 1.0})
    assert runner.jobs == []
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ the real runtime

_REAL_RUNTIME = importlib.util.find_spec("aoi_pipeline.changenet.cli") is not None and (
    importlib.util.find_spec("aoi_pipeline.synth.workspace") is not None
)


@pytest.mark.slow
@pytest.mark.skipif(not _REAL_RUNTIME, reason="the aoi-changenet runtime or the synth generator is absent")
def test_a_real_tiny_trial_with_the_reference_runtime(tmp_path):
    pytest.importorskip("torch")
    from aoi_pipeline.config import DatasetSettings, PipelineConfig
    from aoi_pipeline.core.workspace import Workspace
    from aoi_pipeline.jobs.local import LocalLauncher
    from aoi_pipeline.pipeline.run_specs import workspace_base_spec
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    root = write_workspace(tmp_path / "ws", SynthSpec(boards=12, size=32, tiles_per_board=8)).root
    workspace = Workspace.at(root)
    config = PipelineConfig(workspace=root, dataset=DatasetSettings(image_ext=".png"))
    # The module itself, so the test does not depend on the console script being installed.
    launcher = LocalLauncher(
        command_resolver=lambda job: [sys.executable, "-m", "aoi_pipeline.changenet.cli", job.action]
    )

    class Launcher:
        def run(self, job: TaoJob) -> JobResult:
            return launcher.run(job, log=lambda _line: None)

    settings = AutomlSettings(
        num_epochs=1,
        batch_size=8,
        spec_overrides=("dataset.classify.image_width=32", "dataset.classify.image_height=32"),
    )
    config = config.model_copy(update={"phase1": settings})
    ctx = RunContext.from_config(config, RunLayout(tmp_path / "run"), Launcher(), visible_gpus=0)
    ctx = dataclasses.replace(ctx, jobs=JobDefaults(image="local", runtime="reference"))
    outcome = run_trial(
        ctx, phase="phase1", number=0, params={"train.optim.lr": 1e-3}, base_spec=workspace_base_spec(config, workspace)
    )
    assert outcome.state in ("complete", "collapsed"), outcome.reason
    assert outcome.checkpoint is not None and outcome.checkpoint.is_file()
    # FAR by brute force: the share of PASS rows scoring at or above the weakest defect.
    with outcome.inference_csv.open(newline="", encoding="utf-8") as handle:
        rows = [(row["label"], float(row["siamese_score"])) for row in csv.DictReader(handle)]
    weakest = min(score for label, score in rows if label != "PASS")
    passes = [score for label, score in rows if label == "PASS"]
    assert outcome.far_pct == pytest.approx(100.0 * sum(s >= weakest for s in passes) / len(passes))
    assert read_outcome(tmp_path / "run" / "phase1" / "trial_000") == outcome


def test_a_trial_is_in_flight_while_a_work_pool_job_of_it_may_still_run(tmp_path: Path) -> None:
    from aoi_pipeline.jobs.dispatch import DispatchRecord, write_dispatch
    from aoi_pipeline.pipeline.trials import trial_in_flight

    trial_dir = tmp_path / "phase1" / "trial_002"
    assert not trial_in_flight(trial_dir)
    record = DispatchRecord("t", "docker", "tao-job/docker", "key", state="running", flow_run_id="1")
    write_dispatch(trial_dir / "train", record)
    assert trial_in_flight(trial_dir)
    write_dispatch(trial_dir / "train", record.with_(state="success"))
    assert not trial_in_flight(trial_dir)
    write_dispatch(trial_dir / "val_inference", record.with_(state="submitted"))
    assert trial_in_flight(trial_dir)
