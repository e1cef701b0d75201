"""The run-step tasks: each passes the run's context (and only what varies) to one pipeline function."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.phases as phases
from aoi_pipeline.approval import record_from_preapproval
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.pipeline.trials import TrialOutcome

OUTCOME = TrialOutcome(7, {"train.optim.lr": 1e-4}, "complete", 12.5, 100.0, 0.4, 0.3, None, None, None, 1.0)


def recorder(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, returns: Any = None) -> list[tuple]:
    """Replace `target.name` by a function recording (args, kwargs) and returning `returns`."""
    calls: list[tuple] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return returns

    monkeypatch.setattr(target, name, record)
    return calls


def test_the_trial_task_runs_the_trial_in_the_runs_context_and_returns_its_outcome(ctx, task_log, monkeypatch):
    calls = recorder(monkeypatch, phases, "run_trial", OUTCOME)
    spec, warm = baseline_spec(), Path("/ckpt/best.pth")
    outcome = phases.trial.fn(
        ctx, phase="phase3", number=7, params=OUTCOME.params, base_spec=spec, pretrained_model=warm
    )
    assert outcome is OUTCOME
    assert calls == [
        (
            (ctx,),
            {"phase": "phase3", "number": 7, "params": OUTCOME.params, "base_spec": spec, "pretrained_model": warm},
        )
    ]
    assert "phase3 trial 7: complete, FAR 12.5" in task_log.text


def test_the_trial_task_lets_an_infrastructure_failure_propagate(ctx, task_log, monkeypatch):
    from aoi_pipeline.errors import TrialInfrastructureError

    def lost_node(*_: Any, **__: Any) -> TrialOutcome:
        raise TrialInfrastructureError.at("trial 1", "node lost", "retry")

    monkeypatch.setattr(phases, "run_trial", lost_node)
    with pytest.raises(TrialInfrastructureError):
        phases.trial.fn(ctx, phase="phase1", number=1, params={}, base_spec=baseline_spec(), pretrained_model=None)


def test_start_run_writes_the_run_directory_and_logs_it(ctx, task_log):
    approval = record_from_preapproval("abc123", "abc123", reviewer="ops")
    phases.start_run.fn(ctx.layout, approval, "# plan\n", baseline_spec())
    assert ctx.layout.approval.is_file() and ctx.layout.preflight.read_text() == "# plan\n"
    assert ctx.layout.base_spec.is_file()
    assert f"run directory {ctx.layout.root}" in task_log.text


def test_the_phase1_handoff_passes_the_contract_budget_and_state_config(ctx, monkeypatch):
    calls = recorder(monkeypatch, phases.handoff, "handoff_phase1_to_phase2", Path("/merged.yaml"))
    spec = baseline_spec()
    assert phases.handoff_1_2.fn(ctx, spec, OUTCOME) == Path("/merged.yaml")
    ((args, kwargs),) = calls
    assert args == ()
    assert kwargs["layout"] == ctx.layout and kwargs["base_spec"] is spec and kwargs["winner"] is OUTCOME
    assert kwargs["contract"] == ctx.contract and kwargs["max_iterations"] == 3
    assert kwargs["state_config"] == phases.run_steps.state_config(ctx)


def test_train_baseline_and_register_phase3_hand_the_context_down(ctx, monkeypatch):
    trained = recorder(monkeypatch, phases.run_steps, "train_baseline", Path("/baseline.pth"))
    registered = recorder(monkeypatch, phases.phases, "register_phase3")
    spec = baseline_spec()
    assert phases.train_baseline.fn(ctx, spec) == Path("/baseline.pth")
    assert trained == [((ctx, spec), {})]
    assert phases.register_phase3.fn(ctx, OUTCOME) is None
    assert registered == [((ctx, OUTCOME), {})]


def test_evaluate_commits_the_label_and_logs_the_contracts_summary(ctx, task_log, monkeypatch):
    evaluation = SimpleNamespace(summary=lambda contract: f"Evaluate: value under {contract.display_name}")
    calls = recorder(monkeypatch, phases, "evaluate_and_commit", evaluation)
    assert phases.evaluate.fn(ctx, "iter2") is None
    assert calls == [((ctx, "iter2"), {})]
    assert f"Evaluate: value under {ctx.contract.display_name}" in task_log.text


def test_finalize_phase2_returns_the_handed_off_iteration(ctx, monkeypatch):
    calls = recorder(monkeypatch, phases.run_steps, "finalize_phase2", SimpleNamespace(iteration="iter1"))
    assert phases.finalize_phase2.fn(ctx.layout, "iter2", "max_iterations") == "iter1"
    assert calls == [((ctx.layout,), {"label": "iter2", "stop_reason": "max_iterations"})]


def test_publish_trials_refreshes_the_phases_table_artifact(artifacts):
    table = [{"number": 0, "state": "COMPLETE", "value": 3.0}]
    phases.publish_trials("phase1", table)
    assert artifacts == [
        ("create_table_artifact", table, {"key": "phase1-trials", "description": "phase1 AutoML trials"})
    ]


def test_a_sweep_starts_with_trial_0_of_its_budget_and_no_time_left_yet(ctx, task_log, artifacts):
    phases.sweep_started(ctx, "phase3")
    ((kind, share, options),) = artifacts
    assert (kind, share) == ("create_progress_artifact", 0.0)
    assert options["description"].startswith("phase 3/3 (AutoML refinement) · trial 0/3 · elapsed")
    assert options["description"].endswith("time left unknown until the first trial ends")


def test_after_a_trial_the_table_the_progress_line_and_the_report_are_refreshed(ctx, task_log, artifacts, monkeypatch):
    refreshed: list[Any] = []
    monkeypatch.setattr(phases, "refresh_report", refreshed.append)
    table = [{"number": 0, "state": "complete", "duration_s": 30.0}, {"number": 1, "state": "running"}]
    phases.after_trial(ctx, "phase1", table)
    assert [kind for kind, _, _ in artifacts] == ["create_table_artifact", "create_progress_artifact"]
    line = artifacts[1][2]["description"]
    # the default budget is 3 recommendations, one at a time: 2 trials left of 30 s each
    assert line.startswith("phase 1/3 (AutoML) · trial 1/3 · elapsed")
    assert "about 1m 00s left in this phase (from 1 measured trial(s))" in line
    # no DEFT iteration has been measured in this run or an earlier one
    assert line.endswith(
        "time left in the run unknown: nothing measured yet for phase 2 (DEFT loop), phase 3 (AutoML refinement)"
    )
    assert f"progress: {line}" in task_log.text
    assert refreshed == [ctx]


def test_the_deployment_handoff_returns_the_deliverable_and_publishes_the_trajectory(
    ctx, task_log, artifacts, monkeypatch
):
    best = SimpleNamespace(iteration="iter2", result=SimpleNamespace(value=1.5, unit="%", passed=True))
    handed = recorder(monkeypatch, phases.handoff, "write_deployment_handoff", best)
    trajectory = ctx.layout.root / "trajectory.txt"
    trajectory.parent.mkdir(parents=True)
    trajectory.write_text("Phase 1 best 4.0 -> baseline 3.0 -> iter2 1.5\n", encoding="utf-8")
    traced = recorder(monkeypatch, phases.handoff, "write_trajectory", trajectory)
    monkeypatch.setattr(phases, "read_state", lambda root: {"status": "complete"})
    result = phases.deployment_handoff.fn(ctx.layout, 4.0)
    assert result == {
        "run_dir": str(ctx.layout.root),
        "best_model": str(ctx.layout.best_model),
        "inference_spec": str(ctx.layout.best_model_inference_spec),
        "iteration": "iter2",
        "value": 1.5,
        "unit": "%",
        "passed": True,
        "report": str(ctx.layout.root / "run_report.html"),
        "deft_status": "complete",
    }
    assert handed == [((ctx.layout,), {})]
    assert traced == [((ctx.layout,), {"phase1_best": 4.0, "best": best})]
    ((kind, text, options),) = artifacts
    assert (kind, options["key"]) == ("create_markdown_artifact", "aoi-trajectory")
    assert text == trajectory.read_text(encoding="utf-8")
