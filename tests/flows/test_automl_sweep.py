"""The `automl-sweep` flow: trials as task runs through the run's runner, the winner, resume without reruns.

The runner is a fake that writes what jobs write: training leaves one checkpoint and its status.json, and
validation inference scores every row so that the FAR falls with the trial's learning rate (the fake's rule,
chosen here), so the best trial is known without trusting the code under test.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoi_pipeline.core.spec.keys import get_key


class ScoringRunner:
    """train: a checkpoint; inference: PASS rows scored `lr * 1000` apart from defects, so a higher lr ranks better."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def run(self, job: Any) -> Any:
        from aoi_pipeline.jobs.job import JobResult

        self.jobs.append(job)
        out = job.results_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.yaml").write_text(yaml.safe_dump(dict(job.spec)), encoding="utf-8")
        (out / "job.log").write_text("log\n", encoding="utf-8")
        if job.action == "train":
            (out / "model_epoch_000_step_00010.pth").write_bytes(b"w")
            line = {"status": "RUNNING", "epoch": 0, "max_epoch": 0, "kpi": {"val_loss": 0.5}}
            (out / "status.json").write_text(json.dumps(line) + "\n", encoding="utf-8")
        else:
            self._score(job, out)
        now = datetime.now(UTC)
        return JobResult(job, 0, "success", None, now, now, 0.0, out / "job.log", out / "spec.yaml")

    @staticmethod
    def _score(job: Any, out: Path) -> None:
        spec = dict(job.spec)
        source = Path(get_key(spec, "dataset.classify.infer_dataset.csv_path"))
        # The learning rate the trial trained with travels in the inference spec (it is the training spec).
        lr = float(get_key(spec, "train.optim.lr"))
        with source.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with (out / "inference.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, [*rows[0], "siamese_score"])
            writer.writeheader()
            for index, row in enumerate(rows):
                # PASS rows spread over [0, 1); defects sit at 1 - lr*1000: a larger lr leaves fewer PASS above.
                score = index / len(rows) if row["label"] == "PASS" else 1.0 - lr * 1000
                writer.writerow({**row, "siamese_score": repr(score)})


def _far(rows: list[dict[str, str]], lr: float) -> float:
    """FAR at 100 % recall by hand, under the fake's scoring rule."""
    passes = [index / len(rows) for index, row in enumerate(rows) if row["label"] == "PASS"]
    threshold = 1.0 - lr * 1000
    return 100.0 * sum(score >= threshold for score in passes) / len(passes)


def test_the_sweep_runs_every_recommendation_and_returns_the_lowest_far(
    prefect_server: None, tiny_workspace: Path, tmp_path: Path, pipeline_config: Any
) -> None:
    from aoi_pipeline.core.spec.baseline import baseline_spec
    from aoi_pipeline.pipeline.context import RunContext
    from aoi_pipeline.pipeline.layout import RunLayout
    from aoi_pipeline.pipeline.trials import read_outcome
    from flows.automl_sweep import automl_sweep

    config = pipeline_config(tiny_workspace, tmp_path / "results", phase1={"recommendations": 3, "parallel": 2})
    runner = ScoringRunner()
    ctx = RunContext.from_config(config, RunLayout(tmp_path / "results" / "run_sweep"), runner, visible_gpus=0)
    winner = automl_sweep(ctx, "phase1", baseline_spec())

    outcomes = [read_outcome(ctx.layout.trial_dir("phase1", number)) for number in range(3)]
    assert all(outcome is not None and outcome.state == "complete" for outcome in outcomes)
    assert sorted(job.action for job in runner.jobs) == ["inference"] * 3 + ["train"] * 3
    with ctx.workspace.validation_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    expected = {outcome.number: _far(rows, outcome.params["train.optim.lr"]) for outcome in outcomes}
    assert {outcome.number: outcome.far_pct for outcome in outcomes} == pytest.approx(expected)
    assert winner is not None and winner.far_pct == pytest.approx(min(expected.values()))
    assert winner.number == min(expected, key=lambda number: (expected[number], number))

    # A rerun on the same run directory finds the budget spent: no job runs again, the same winner returns.
    again = automl_sweep(ctx.with_runner(ScoringRunner()), "phase1", baseline_spec())
    assert again == winner


def test_a_sweep_without_a_usable_trial_returns_none(
    prefect_server: None, tiny_workspace: Path, tmp_path: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aoi_pipeline.core.spec.baseline import baseline_spec
    from aoi_pipeline.pipeline import trials
    from aoi_pipeline.pipeline.context import RunContext
    from aoi_pipeline.pipeline.layout import RunLayout
    from flows.automl_sweep import automl_sweep

    monkeypatch.setattr(trials, "collapse_reason", lambda rows, far: "collapsed (planted)")
    config = pipeline_config(tiny_workspace, tmp_path / "results", phase3={"recommendations": 2, "parallel": 1})
    ctx = RunContext.from_config(config, RunLayout(tmp_path / "results" / "run_p3"), ScoringRunner(), visible_gpus=0)
    assert automl_sweep(ctx, "phase3", baseline_spec(), pretrained_model=tmp_path / "warm.pth") is None
    assert [
        json.loads(path.read_text())["state"] for path in sorted(ctx.layout.phase_dir("phase3").glob("*/trial.json"))
    ] == [
        "collapsed",
        "collapsed",
    ]
