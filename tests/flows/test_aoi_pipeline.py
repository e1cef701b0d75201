"""The `aoi-pipeline` flow on a Prefect test server: the gate, its three outcomes, resume, the handoff."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoi_pipeline.errors import AoiPipelineError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _plan_hash(config: Any, run_name: str) -> str:
    from aoi_pipeline.pipeline.preflight import run_preflight

    return run_preflight(config, run_name=run_name).plan_hash


class _FlowInThread:
    """Runs the flow in a thread (the gate blocks it) and keeps its result or error."""

    def __init__(self, config: Any, run_name: str) -> None:
        from flows.aoi_pipeline import aoi_pipeline

        self.state: Any = None
        self.error: BaseException | None = None
        flow = aoi_pipeline.with_options(flow_run_name=run_name)
        context = contextvars.copy_context()

        def target() -> None:
            try:
                self.state = context.run(
                    flow, config=config, run_name=run_name, approval_timeout_hours=0.1, return_state=True
                )
            except BaseException as error:  # the test thread re-raises it
                self.error = error

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join_state(self) -> Any:
        self.thread.join(timeout=240)
        assert not self.thread.is_alive(), "the flow did not finish"
        if self.error is not None:
            raise self.error
        return self.state

    def join(self) -> dict[str, Any]:
        result: dict[str, Any] = self.join_state().result()
        return result


def _wait_until_paused(run_name: str) -> None:
    from aoi_pipeline.control import list_runs

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(run.name == run_name and run.paused for run in list_runs(limit=20)):
            return
        time.sleep(0.5)
    raise AssertionError(f"{run_name} never paused for approval")


def _assert_paused_on_the_bound_plan(run_name: str, plan: str) -> None:
    """The state message names the plan, the form has no hash to edit, the run holds the plan it waits on."""
    from prefect.input.actions import read_flow_run_input

    from aoi_pipeline.control import list_runs, waiting_plan

    (info,) = list_runs(run=run_name)
    assert info.message.startswith(f"Waiting for approval of plan {plan}: FAR < 50% at Recall=100% on "), info.message
    waiting = waiting_plan(info)
    assert waiting.plan_hash == plan and waiting.summary in info.message
    schema = read_flow_run_input("paused-plan-approval-schema", flow_run_id=info.id)
    assert set(schema["properties"]) == {"decision", "reviewer", "comment"}
    assert set(schema["required"]) == {"decision", "reviewer"}


def test_the_gate_holds_everything_until_approved_then_the_run_completes(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    from aoi_pipeline.control import decide

    results = tmp_path / "results"
    config = pipeline_config(tiny_workspace, results)
    before = _files(tiny_workspace)
    running = _FlowInThread(config, "run_gate_approve")
    _wait_until_paused("run_gate_approve")
    _assert_paused_on_the_bound_plan("run_gate_approve", _plan_hash(config, "run_gate_approve"))

    assert not results.exists(), "something was written under the results root before approval"
    assert _files(tiny_workspace) == before, "the workspace changed before approval"
    assert _calls(fake_runtime) == [], "a job was launched before approval"

    decide("run_gate_approve", reviewer="alice", comment="looks right")
    result = running.join()

    assert result["status"] == "complete"
    run_dir = results / "run_gate_approve"
    approval = json.loads((run_dir / "approval.json").read_text())
    assert (approval["decision"], approval["reviewer"], approval["source"]) == (
        "approve",
        "alice",
        "prefect-ui-or-cli",
    )
    assert approval["plan_hash"] == result["plan_hash"]
    best = json.loads((run_dir / "best_model.json").read_text())
    assert Path(best["checkpoint"]).is_file()
    assert best["iteration"] in ("baseline", "final_automl")
    actions = [call["action"] for call in _calls(fake_runtime)]
    # Phase 1: 2 trials x (train + validation inference); baseline: 1 KPI inference (one pre-seeded
    # checkpoint); Phase 3: 1 trial x 2; final_automl: 1 KPI inference.
    assert actions.count("train") == 3
    assert actions.count("inference") == 5
    state = json.loads((run_dir / "deft_state.json").read_text())
    assert state["status"] == "complete"
    assert state["iterations"]["baseline"]["source"] == "automl_phase1"
    assert state["iterations"]["final_automl"]["status"] == "complete"
    assert [event["seq"] for event in state["events"]] == list(range(1, len(state["events"]) + 1))
    spec = yaml.safe_load((run_dir / "best_model_inference_spec.yaml").read_text())
    deliverable = json.loads((run_dir / "best_model.json").read_text())
    assert spec["inference"]["checkpoint"] == deliverable["checkpoint"]  # filled in, not a placeholder
    assert not (tiny_workspace / ".aoi-pipeline.lock").exists(), "the workspace lock was not released"


def test_a_rejected_plan_ends_the_run_cancelled_and_writes_nothing(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    from aoi_pipeline.control import decide, list_runs

    results = tmp_path / "results"
    before = _files(tiny_workspace)
    running = _FlowInThread(pipeline_config(tiny_workspace, results), "run_gate_reject")
    _wait_until_paused("run_gate_reject")
    decide("run_gate_reject", reviewer="bob", comment="wrong target", reject=True)
    state = running.join_state()

    assert state.is_cancelled(), state
    assert state.message == "Rejected by bob: wrong target"
    (info,) = list_runs(run="run_gate_reject")
    assert (info.state_type, info.message) == ("CANCELLED", "Rejected by bob: wrong target")
    assert not results.exists()
    assert _files(tiny_workspace) == before
    assert _calls(fake_runtime) == []


def test_a_preapproval_runs_only_the_plan_it_names(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    from flows.aoi_pipeline import aoi_pipeline

    results = tmp_path / "results"
    config = pipeline_config(tiny_workspace, results)
    with pytest.raises(AoiPipelineError, match="pre-approval is for plan 'not-this-plan'"):
        aoi_pipeline(config=config, run_name="run_wrong_hash", preapproved_plan_hash="not-this-plan")
    assert not results.exists()
    assert _calls(fake_runtime) == []

    plan = _plan_hash(config, "run_preapproved")
    result = aoi_pipeline(
        config=config, run_name="run_preapproved", preapproved_plan_hash=plan, preapproved_by="nightly"
    )
    assert result["status"] == "complete"
    approval = json.loads((results / "run_preapproved" / "approval.json").read_text())
    assert (approval["source"], approval["reviewer"], approval["plan_hash"]) == (
        "pre-approval",
        "nightly",
        plan,
    )

    # A second run on the same run directory resumes: every phase is recorded as done, nothing is relaunched.
    launched = len(_calls(fake_runtime))
    again = aoi_pipeline(config=config, run_name="run_preapproved", preapproved_plan_hash=plan)
    assert again["best_model"] == result["best_model"]
    assert len(_calls(fake_runtime)) == launched


def test_blockers_end_the_run_before_the_gate(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    from flows.aoi_pipeline import aoi_pipeline

    results = tmp_path / "results"
    config = pipeline_config(tiny_workspace, results, kpi_target="FAR < 5% at Recall=100%", gpus=4)
    with pytest.raises(AoiPipelineError, match="pre-flight found blockers"):
        aoi_pipeline(config=config, run_name="run_blocked", preapproved_plan_hash="whatever")
    assert not results.exists()
    assert _calls(fake_runtime) == []


def test_the_control_helpers_work_inside_a_running_event_loop_as_in_jupyter(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    import asyncio

    from aoi_pipeline.control import decide, list_runs

    running = _FlowInThread(pipeline_config(tiny_workspace, tmp_path / "results"), "run_notebook")
    _wait_until_paused("run_notebook")

    async def notebook_cell() -> list[Any]:
        # A Jupyter cell runs inside an event loop; Prefect's dual functions would return coroutines here.
        runs = list_runs(limit=20, paused_only=True)
        decide("run_notebook", reviewer="nb", reject=True)
        return runs

    runs = asyncio.run(notebook_cell())
    assert "run_notebook" in [run.name for run in runs]
    assert running.join_state().is_cancelled()


def test_a_phase3_without_a_usable_trial_leaves_phase2s_best_standing(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aoi_pipeline.pipeline import trials
    from flows.aoi_pipeline import aoi_pipeline

    monkeypatch.setattr(trials, "collapse_reason", lambda rows, far: "collapsed (planted for Phase 3)")
    results = tmp_path / "results"
    config = pipeline_config(tiny_workspace, results, phase1={"enabled": False})
    result = aoi_pipeline(config=config, run_name="run_p3", preapproved_plan_hash=_plan_hash(config, "run_p3"))
    assert result["status"] == "complete"
    assert result["iteration"] == "baseline"
    state = json.loads((results / "run_p3" / "deft_state.json").read_text())
    assert "final_automl" not in state["iterations"]
    phases = json.loads((results / "run_p3" / "pipeline_state.json").read_text())["phases"]
    assert phases["phase3"]["trial"] is None
