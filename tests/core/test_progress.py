"""The progress line: phase k/3, unit k/N, elapsed and the time left measured from finished units."""

from __future__ import annotations

from report_run import Run

from aoi_pipeline.core.progress import PhaseAhead, Progress, iteration_seconds, trial_seconds


def test_the_time_left_is_the_mean_measured_duration_times_the_rounds_left():
    progress = Progress("phase1", "trial", done=2, total=5, elapsed_s=130.0, unit_seconds=[50.0, 70.0], parallel=2)
    # 3 trials left on 2 slots: 2 rounds of the 60 s mean
    assert progress.left_s == 120.0
    assert progress.share_pct == 40.0
    assert progress.line() == (
        "phase 1/3 (AutoML) · trial 2/5 · elapsed 2m 10s · about 2m 00s left in this phase (from 2 measured trial(s))"
    )


def test_before_the_first_unit_ends_the_time_left_is_unknown_and_a_finished_phase_has_none_left():
    waiting = Progress("phase2", "iteration", done=0, total=3, elapsed_s=5.0)
    assert waiting.left_s is None
    assert waiting.line().startswith("phase 2/3 (DEFT loop) · iteration 0/3 · elapsed 5.0 s")
    assert waiting.line().endswith("time left unknown until the first iteration ends")
    done = Progress("phase3", "trial", done=1, total=1, elapsed_s=5.0)
    assert done.left_s == 0.0 and done.share_pct == 100.0


def test_finished_trials_are_the_measured_units_of_an_automl_phase():
    table = [
        {"number": 0, "state": "complete", "duration_s": 40.0},
        {"number": 1, "state": "failed", "duration_s": 10.0},
        {"number": 2, "state": "running", "duration_s": None},
    ]
    assert trial_seconds(table) == [40.0, 10.0]


def test_an_evaluated_iteration_lasts_the_sum_of_its_stages(complete_run: Run):
    # commits: baseline train, evaluate, rca (0-2); iter1 routing .. evaluate, rca (3-9); iter2 .. loop_stop (10-16)
    durations = complete_run.durations
    assert iteration_seconds(complete_run.state) == [sum(durations[3:10]), sum(durations[10:17])]


def test_an_iteration_not_yet_evaluated_is_not_measured(failed_run: Run):
    assert iteration_seconds(failed_run.state) == []


def test_the_time_left_in_the_run_adds_each_phase_ahead_from_its_measured_unit():
    ahead = [PhaseAhead("phase2", units=2, unit_s=100.0), PhaseAhead("phase3", units=3, unit_s=40.0, parallel=2)]
    progress = Progress("phase1", "trial", 1, 2, 50.0, unit_seconds=[30.0], ahead=ahead)
    # 30 s left here + 2 iterations x 100 s + 2 rounds of 40 s
    assert progress.run_left_s == 310.0
    assert progress.line().endswith("left in this phase (from 1 measured trial(s)) · about 5m 10s left in the run")


def test_the_time_left_in_the_run_is_unknown_while_a_phase_ahead_has_no_measured_unit():
    ahead = [PhaseAhead("phase2", units=2, unit_s=None), PhaseAhead("phase3", units=3, unit_s=40.0)]
    progress = Progress("phase1", "trial", 1, 2, 50.0, unit_seconds=[30.0], ahead=ahead)
    assert progress.run_left_s is None
    assert progress.line().endswith(" · time left in the run unknown: nothing measured yet for phase 2 (DEFT loop)")
    last_phase = Progress("phase3", "trial", 1, 2, 50.0, unit_seconds=[30.0])
    assert "in the run" not in last_phase.line()
