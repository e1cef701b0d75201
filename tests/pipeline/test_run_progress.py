"""The phases ahead of a running phase, with unit durations measured on this run or an earlier one."""

from __future__ import annotations

import json
from pathlib import Path

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_progress import phases_ahead
from aoi_pipeline.pipeline.trials import TrialOutcome


class _NoJobs:
    def run(self, job: object) -> object:
        raise AssertionError("no job is launched to estimate time")


def _finished_trial(run: Path, number: int, *, epochs: int, seconds: float) -> None:
    trial = run / "phase1" / f"trial_{number:03d}"
    trial.mkdir(parents=True)
    (trial / "spec.yaml").write_text(f"train:\n  num_epochs: {epochs}\n", encoding="utf-8")
    outcome = TrialOutcome(
        number=number,
        params={},
        state="complete",
        far_pct=3.0,
        recall_pct=100.0,
        threshold=0.5,
        val_loss=0.1,
        checkpoint=None,
        train_spec_path=trial / "spec.yaml",
        inference_csv=None,
        duration_s=seconds,
    )
    (trial / "trial.json").write_text(json.dumps(outcome.to_record()), encoding="utf-8")


def _ctx(tmp_path: Path, **sections: object) -> RunContext:
    config = config_from_mapping({"workspace": str(tmp_path / "ws"), "gpus": 0, **sections})
    layout = RunLayout(tmp_path / "results" / "run_20260101_000000")
    return RunContext.from_config(config, layout, _NoJobs(), visible_gpus=0)


def test_phase3_trials_ahead_take_this_runs_seconds_per_epoch_scaled_to_phase3s_epochs(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, phase3={"recommendations": 4, "parallel": 2, "num_epochs": 3}, deft={"max_iterations": 2})
    _finished_trial(ctx.layout.root, 0, epochs=2, seconds=40.0)  # 20 s per epoch

    phase2, phase3 = phases_ahead(ctx, "phase1")

    assert (phase2.phase, phase2.units, phase2.unit_s) == ("phase2", 2, None)  # no iteration measured anywhere
    assert (phase3.phase, phase3.units, phase3.unit_s, phase3.parallel) == ("phase3", 4, 60.0, 2)
    assert [ahead.phase for ahead in phases_ahead(ctx, "phase2")] == ["phase3"]
    assert phases_ahead(ctx, "phase3") == ()


def test_an_earlier_runs_trials_stand_in_until_this_run_has_its_own(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, phase3={"num_epochs": 2})
    _finished_trial(tmp_path / "results" / "run_20200101_000000", 0, epochs=4, seconds=40.0)  # 10 s per epoch
    assert phases_ahead(ctx, "phase2")[0].unit_s == 20.0
    _finished_trial(ctx.layout.root, 0, epochs=1, seconds=30.0)  # this run: 30 s per epoch
    assert phases_ahead(ctx, "phase2")[0].unit_s == 60.0


def test_a_disabled_phase3_is_not_ahead(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, phase3={"enabled": False})
    assert [ahead.phase for ahead in phases_ahead(ctx, "phase1")] == ["phase2"]
