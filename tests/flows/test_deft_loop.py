"""Phase 2 end to end on a Prefect test server (fake runtime): iterations, resume after a kill, hard stops."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.errors import AoiPipelineError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


class Killed(BaseException):
    """Stands for the process dying (SIGKILL, power loss): nothing after it runs."""


def _loop_config(pipeline_config: Any, workspace: Path, results: Path, **changes: Any) -> Any:
    small = {"recommendations": 1, "parallel": 1, "num_epochs": 1, "batch_size": 4}
    settings = {
        "kpi_target": "FAR < 0.01% at Recall=100%",
        "phase1": small,
        "phase3": {**small, "enabled": False},
        # Twelve boards and a 112-row pool: too few to judge on half of them or to mine a quarter each
        # iteration; these tests are about the loop's mechanics.
        "deft": {
            "max_iterations": 2,
            "num_epochs": 1,
            "num_sdg": 6,
            "top_k_per_target": 3,
            "min_similarity": 0.0,
            "kpi_split": "whole_set",
            "max_pool_share": 1.0,
        },
    }
    if "deft" in changes:
        changes["deft"] = {"kpi_split": "whole_set", "max_pool_share": 1.0, **changes["deft"]}
    settings.update(changes)
    # DEFT run directories live in the workspace (its training CSVs are workspace-relative).
    return pipeline_config(workspace, workspace / "results", **settings)


def _run(config: Any, run_name: str) -> dict[str, Any]:
    from aoi_pipeline.pipeline.preflight import run_preflight
    from flows.aoi_pipeline import aoi_pipeline

    plan = run_preflight(config, run_name=run_name).plan_hash
    return aoi_pipeline(config=config, run_name=run_name, preapproved_plan_hash=plan)


def _state(results: Path, run_name: str) -> dict[str, Any]:
    return json.loads((results / run_name / "deft_state.json").read_text())


def _rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _assert_gap_free(state: dict[str, Any]) -> None:
    assert [event["seq"] for event in state["events"]] == list(range(1, len(state["events"]) + 1))


def _stages(state: dict[str, Any], label: str) -> list[str]:
    return [event["stage"] for event in state["events"] if event["iter"] == label]


def test_the_loop_adds_sdg_and_mined_rows_each_iteration_and_hands_off(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    results = tiny_workspace / "results"
    result = _run(_loop_config(pipeline_config, tiny_workspace, results), "run_loop")
    assert result["status"] == "complete"
    state = _state(results, "run_loop")
    _assert_gap_free(state)
    assert state["status"] == "complete" and state["stop_reason"] == "max_iterations"
    for label in ("iter1", "iter2"):
        assert _stages(state, label)[:6] == ["routing", "anomalygen", "data_mining", "data_merge", "train", "evaluate"]
    base = len(_rows(tiny_workspace / "train/base/training_set.csv"))
    iter1 = _rows(state["iterations"]["iter1"]["combined_training_csv"])
    iter2 = _rows(state["iterations"]["iter2"]["combined_training_csv"])
    assert base < len(iter1) < len(iter2)
    assert all(row["input_path"].startswith(("images/", "results/")) for row in iter2)
    sources = {row["source"] for row in _rows(state["iterations"]["iter2"]["provenance_csv"])}
    assert {"sdg", "previous_iter_train"} <= sources
    allocation = json.loads(Path(state["iterations"]["iter1"]["anomalygen_allocation_json"]).read_text())
    assert sum(allocation.values()) == 6
    ledger = json.loads((results / "run_loop" / "mining_history.json").read_text())
    picked = [key for entry in ledger["iterations"] for key in entry.get("selected_filepaths", [])]
    assert len(picked) == len(set(picked)), "a pool row was mined twice"
    report = (results / "run_loop" / "run_report.html").read_text()
    assert "<svg" in report and "iter2" in report and "http" not in report
    assert "Forced FAR (%)" in report  # the RCA's per-type gaps reach the report
    for label in ("iter1", "iter2"):  # the mining rules' picks are recorded and shown
        entry = state["iterations"][label]
        assert sum(entry["mining_picked_by_rule"].values()) == entry["mining_mined_count"]
    assert "mined_neighbour" in report and "mined_explore" in report
    # the warm start: iter2 trains from iter1's best checkpoint
    spec = (results / "run_loop" / "iter2" / "iter2_spec.yaml").read_text()
    assert state["iterations"]["iter1"]["best_ckpt_path"] in spec


def test_a_kill_right_after_a_commit_resumes_at_the_next_stage(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.deft

    results = tiny_workspace / "results"
    config = _loop_config(
        pipeline_config, tiny_workspace, results, deft={"max_iterations": 1, "num_epochs": 1, "num_sdg": 4}
    )
    original = tasks.deft.STAGES["data_mining"]

    def mine_then_die(ctx: Any, label: str) -> dict:
        original(ctx, label)
        raise Killed

    monkeypatch.setitem(tasks.deft.STAGES, "data_mining", mine_then_die)
    with pytest.raises(Killed):
        _run(config, "run_kill")
    assert _stages(_state(results, "run_kill"), "iter1") == ["routing", "anomalygen", "data_mining"]

    monkeypatch.setitem(tasks.deft.STAGES, "data_mining", original)
    launched = len(fake_runtime.read_text().splitlines())
    _run(config, "run_kill")
    state = _state(results, "run_kill")
    _assert_gap_free(state)
    assert _stages(state, "iter1")[:5] == ["routing", "anomalygen", "data_mining", "data_merge", "train"]
    calls = [json.loads(line)["action"] for line in fake_runtime.read_text().splitlines()[launched:]]
    assert "embed" not in calls and "sdg" not in calls, "a committed stage was redone"


def test_a_kill_in_the_middle_of_a_stage_redoes_only_that_stage(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.deft

    results = tiny_workspace / "results"
    config = _loop_config(
        pipeline_config, tiny_workspace, results, deft={"max_iterations": 1, "num_epochs": 1, "num_sdg": 4}
    )
    original = tasks.deft.STAGES["anomalygen"]

    def die_halfway(ctx: Any, label: str) -> dict:
        partial = ctx.layout.iteration_dir(label) / "anomalygen" / "sdg" / "reconstructed_image"
        partial.mkdir(parents=True)
        (partial / "half-written.png").write_bytes(b"\x89PNG")
        raise Killed

    monkeypatch.setitem(tasks.deft.STAGES, "anomalygen", die_halfway)
    with pytest.raises(Killed):
        _run(config, "run_midstage")
    assert _stages(_state(results, "run_midstage"), "iter1") == ["routing"]

    monkeypatch.setitem(tasks.deft.STAGES, "anomalygen", original)
    _run(config, "run_midstage")
    state = _state(results, "run_midstage")
    _assert_gap_free(state)
    assert _stages(state, "iter1").count("anomalygen") == 1
    assert _stages(state, "iter1").count("routing") == 1
    assert (results / "run_midstage" / "iter1" / "anomalygen" / "sdg.interrupted1").is_dir()


def test_a_failing_job_is_a_hard_stop_that_a_rerun_retries_after_the_fix(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tiny_workspace / "results"
    config = _loop_config(
        pipeline_config, tiny_workspace, results, deft={"max_iterations": 1, "num_epochs": 1, "num_sdg": 4}
    )
    monkeypatch.setenv("FAKE_RUNTIME_FAIL", "sdg")
    with pytest.raises(AoiPipelineError):
        _run(config, "run_stop")
    state = _state(results, "run_stop")
    assert state["status"] == "failed"
    failure = state["events"][-1]
    assert (failure["iter"], failure["stage"], failure["status"]) == ("iter1", "anomalygen", "error")
    assert "HARD STOP" in failure["summary"] and "planted failure" in failure["summary"]
    report = (results / "run_stop" / "run_report.html").read_text()
    assert "planted failure" in report

    monkeypatch.delenv("FAKE_RUNTIME_FAIL")
    _run(config, "run_stop")
    state = _state(results, "run_stop")
    _assert_gap_free(state)
    assert state["status"] == "complete"
    assert [e["status"] for e in state["events"] if e["stage"] == "anomalygen"] == ["error", "ok"]


def test_leakage_found_at_merge_is_a_hard_stop(
    tiny_workspace: Path, tmp_path: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.deft

    results = tiny_workspace / "results"
    config = _loop_config(
        pipeline_config, tiny_workspace, results, deft={"max_iterations": 1, "num_epochs": 1, "num_sdg": 4}
    )
    leaked = _rows(tiny_workspace / "train/base/validation_set.csv")[0]
    original = tasks.deft.STAGES["data_merge"]

    def merge_with_a_validation_sample_mined(ctx: Any, label: str) -> dict:
        mined = Path(
            json.loads((ctx.layout.root / "deft_state.json").read_text())["iterations"][label]["mining_mined_csv"]
        )
        rows = _rows(mined)
        columns = list(rows[0]) if rows else ["input_path", "golden_path", "label", "object_name"]
        extra = {column: "" for column in columns}
        extra.update(
            {
                "input_path": f"images/{leaked['input_path']}",
                "golden_path": f"images/{leaked['golden_path']}",
                "label": leaked["label"],
                "object_name": leaked["object_name"],
            }
        )
        with mined.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows([*rows, extra])
        return original(ctx, label)

    monkeypatch.setitem(tasks.deft.STAGES, "data_merge", merge_with_a_validation_sample_mined)
    with pytest.raises(AoiPipelineError, match=r"(?i)leak"):
        _run(config, "run_leak")
    state = _state(results, "run_leak")
    assert state["status"] == "failed"
    assert (state["events"][-1]["stage"], state["events"][-1]["status"]) == ("data_merge", "error")
    report = json.loads((results / "run_leak" / "iter1" / "dataset" / "merge_validation.json").read_text())
    assert report["train_val_leakage_overlap_count"] >= 1


def test_a_pool_emptied_after_approval_is_a_hard_stop_at_routing(
    tmp_path: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.deft
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=12, size=32, seed=3))
    config = _loop_config(
        pipeline_config, workspace, workspace / "results", deft={"max_iterations": 1, "num_epochs": 1}
    )
    original = tasks.deft.STAGES["routing"]
    pool = workspace / "augmentation" / "mining_pool" / "mining_pool.csv"

    def empty_the_pool_then_route(ctx: Any, label: str) -> dict:
        # The pre-flight saw a full pool; someone truncates it while the run is going.
        pool.write_text(pool.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        return original(ctx, label)

    monkeypatch.setitem(tasks.deft.STAGES, "routing", empty_the_pool_then_route)
    with pytest.raises(AoiPipelineError, match=r"(?i)pool"):
        _run(config, "run_empty_pool")
    state = _state(workspace / "results", "run_empty_pool")
    assert state["status"] == "failed"
    failure = state["events"][-1]
    assert (failure["iter"], failure["stage"], failure["status"]) == ("iter1", "routing", "error")
    assert "HARD STOP" in failure["summary"]


@pytest.mark.parametrize(
    ("phase1_enabled", "failing", "stage", "phase"),
    [
        (False, "train", "train", "phase2"),
        (False, "inference", "evaluate", "phase2"),
        (True, "train", "train", "phase1"),
    ],
)
def test_a_failure_in_any_phase_is_a_recorded_hard_stop_with_reason_and_fix(
    tiny_workspace: Path,
    fake_runtime: Path,
    pipeline_config: Any,
    monkeypatch: pytest.MonkeyPatch,
    phase1_enabled: bool,
    failing: str,
    stage: str,
    phase: str,
) -> None:
    results = tiny_workspace / "results"
    small = {"recommendations": 1, "parallel": 1, "num_epochs": 1, "batch_size": 4, "enabled": phase1_enabled}
    config = _loop_config(pipeline_config, tiny_workspace, results, phase1=small, deft={"max_iterations": 0})
    run_name = f"run_fail_{failing}_{phase}"
    monkeypatch.setenv("FAKE_RUNTIME_FAIL", failing)
    with pytest.raises(AoiPipelineError):
        _run(config, run_name)

    state = _state(results, run_name)
    assert state["status"] == "failed"
    failure = state["events"][-1]
    assert (failure["iter"], failure["stage"], failure["status"]) == ("baseline", stage, "error")
    assert failure["details"]["phase"] == phase and failure["details"]["fix"]
    report = (results / run_name / "run_report.html").read_text()
    assert f"hard stop at baseline/{stage}" in report and failure["details"]["reason"][:40] in report
    pipeline_state = json.loads((results / run_name / "pipeline_state.json").read_text())
    assert pipeline_state["phases"][phase]["status"] == "failed"


def test_a_workspace_locked_after_the_preflight_is_refused_before_the_run_writes_anything(
    tiny_workspace: Path, fake_runtime: Path, pipeline_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.aoi_pipeline
    from aoi_pipeline.core.lock import WorkspaceLock
    from aoi_pipeline.errors import WorkspaceLockedError

    results = tiny_workspace / "results"
    config = _loop_config(pipeline_config, tiny_workspace, results)
    other = WorkspaceLock(tiny_workspace, owner="aoi-pipeline run_other")
    gate = flows.aoi_pipeline.approval_gate

    def approve_while_another_run_starts(**kwargs: Any) -> Any:
        other.acquire()  # another run takes the workspace while this one waits at the gate
        return gate(**kwargs)

    monkeypatch.setattr(flows.aoi_pipeline, "approval_gate", approve_while_another_run_starts)
    try:
        with pytest.raises(WorkspaceLockedError, match="run_other"):
            _run(config, "run_second")
    finally:
        other.release()
    assert not (results / "run_second").exists()


@pytest.mark.timeout(900)  # two more trainings than the other loop tests (the control and one seed)
def test_the_control_arm_and_the_seed_confirmation_are_recorded(
    tmp_path: Path, fake_runtime: Path, pipeline_config: Any
) -> None:
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=12, size=32, seed=3))
    deft = {"max_iterations": 1, "num_epochs": 1, "num_sdg": 4, "min_similarity": 0.0, "mining_min_z": None}
    config = _loop_config(
        pipeline_config, workspace, workspace / "results", deft={**deft, "control": "random", "confirm_seeds": 2}
    )
    _run(config, "run_control")
    state = _state(workspace / "results", "run_control")
    entry = state["iterations"]["iter1"]
    control = entry["control_metric_result"]
    added = len(_rows(entry["combined_training_csv"])) - len(_rows(workspace / "train/base/training_set.csv"))
    assert control["arm"] == "random" and control["random_rows"] == control["rows_added_by_loop"] == added
    control_rows = _rows(control["training_csv"])
    assert len(control_rows) == len(_rows(entry["combined_training_csv"]))
    assert not any(row["input_path"].startswith("results/") for row in control_rows)  # no synthetic rows
    confirmation = state["confirm_seeds"]
    assert len(confirmation["values"]) == 2 and len(set(confirmation["seeds"])) == 2
    handoff = json.loads((workspace / "results" / "run_control" / "best_model.json").read_text())
    assert handoff["confirm_seeds"] == confirmation
    assert handoff["iteration"] == confirmation["deliverable"]
