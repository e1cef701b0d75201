"""The run directory layout and the pipeline-level phase record (`pipeline_state.json`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.layout import (
    PHASES,
    PIPELINE_STATE_FILE,
    PipelineRecord,
    RunLayout,
    new_run_name,
    run_name_for,
)


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    root = tmp_path / "results" / "run_20250101_000000"
    root.mkdir(parents=True)
    return RunLayout(root)


def test_a_run_is_named_after_its_utc_start_time():
    assert new_run_name(datetime(2025, 3, 7, 9, 5, 1, tzinfo=UTC)) == "run_20250307_090501"
    assert new_run_name().startswith("run_") and len(new_run_name()) == len("run_20250307_090501")


def test_the_run_directory_takes_the_requested_name_else_the_flow_runs_own_run_name():
    assert run_name_for("nightly_01", "run_20250307_090501") == "nightly_01"
    assert run_name_for(None, "run_20250307_090501") == "run_20250307_090501"
    generated = run_name_for(None, "impetuous-woodlouse")
    assert generated != "impetuous-woodlouse" and generated.startswith("run_") and len(generated) == 19


def test_every_path_lies_inside_the_run_directory_where_the_pipeline_expects_it(tmp_path):
    root = tmp_path / "run_x"
    layout = RunLayout(root)
    assert layout.approval == root / "approval.json"
    assert layout.preflight == root / "preflight.md"
    assert layout.pipeline_state == root / PIPELINE_STATE_FILE
    assert layout.base_spec == root / "specs" / "baseline_spec.yaml"
    assert layout.merged_spec.parent == root / "specs" and layout.merged_spec != layout.base_spec
    assert layout.study_storage("phase1") == root / "phase1" / "optuna_study.db"
    assert layout.trial_dir("phase3", 7) == root / "phase3" / "trial_007"
    assert layout.trial_dir("phase1", 123) == root / "phase1" / "trial_123"
    assert layout.train_dir("baseline") == root / "baseline" / "train"
    assert layout.inference_dir("iter2", "best_val") == root / "iter2" / "inference" / "best_val"
    assert layout.iteration_spec("iter2") == root / "iter2" / "iter2_spec.yaml"
    assert layout.final_automl_dir == root / "final_automl"
    assert layout.best_model == root / "best_model.json"
    assert layout.best_model_inference_spec == root / "best_model_inference_spec.yaml"
    assert layout.trajectory.parent == root
    assert not root.exists(), "computing paths must not create anything"


def test_a_run_without_a_record_has_no_phase_done_and_nothing_is_written(layout):
    record = PipelineRecord(layout)
    assert record.read() == {"phases": {}}
    assert all(not record.done(phase) for phase in PHASES)
    assert record.phase("phase1") is None
    assert list(layout.root.iterdir()) == []


def test_marked_phases_are_read_back_with_their_fields(layout):
    record = PipelineRecord(layout)
    record.mark("phase1", "complete", trial=3, far_pct=12.5)
    record.mark("handoff_1_2", "skipped")
    record.mark("phase2", "running")
    again = PipelineRecord(layout)
    phase1 = again.phase("phase1")
    assert phase1 is not None
    assert (phase1["status"], phase1["trial"], phase1["far_pct"]) == ("complete", 3, 12.5)
    assert datetime.fromisoformat(phase1["at"]).tzinfo is not None
    assert again.done("phase1") and again.done("handoff_1_2")
    assert not again.done("phase2") and not again.done("phase3")
    on_disk = json.loads(layout.pipeline_state.read_text(encoding="utf-8"))
    assert list(on_disk["phases"]) == ["phase1", "handoff_1_2", "phase2"]


def test_marking_a_phase_again_replaces_its_entry(layout):
    record = PipelineRecord(layout)
    record.mark("phase3", "failed", reason="no trial completed")
    record.mark("phase3", "complete", trial=1)
    entry = record.phase("phase3")
    assert entry is not None and entry["status"] == "complete" and "reason" not in entry


def test_an_unknown_phase_is_refused_and_nothing_is_written(layout):
    record = PipelineRecord(layout)
    with pytest.raises(StateError) as raised:
        record.mark("phase4", "complete")
    assert "phase4" in str(raised.value)
    assert not layout.pipeline_state.exists()
    record.mark("phase1", "complete")
    before = layout.pipeline_state.read_bytes()
    with pytest.raises(StateError):
        record.mark("deft", "complete")
    assert layout.pipeline_state.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b"\xff\xfe", b"[]", b'{"phases": []}', b'{"other": {}}'], ids=repr
)
def test_an_unusable_record_raises_a_state_error_naming_the_file(layout, content):
    layout.pipeline_state.write_bytes(content)
    record = PipelineRecord(layout)
    with pytest.raises(StateError) as raised:
        record.read()
    assert str(layout.pipeline_state) in str(raised.value)
    with pytest.raises(StateError):
        record.mark("phase1", "complete")
    assert layout.pipeline_state.read_bytes() == content


def test_marking_leaves_no_temporary_file_behind(layout):
    record = PipelineRecord(layout)
    for phase in PHASES:
        record.mark(phase, "complete")
    assert sorted(path.name for path in layout.root.iterdir()) == [PIPELINE_STATE_FILE]
    assert all(record.done(phase) for phase in PHASES)


def test_a_field_json_cannot_hold_leaves_the_record_as_it_was(layout):
    record = PipelineRecord(layout)
    record.mark("phase1", "complete", trial=1)
    before = layout.pipeline_state.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        record.mark("phase2", "complete", value=float("nan"))
    assert layout.pipeline_state.read_bytes() == before
    assert sorted(path.name for path in layout.root.iterdir()) == [PIPELINE_STATE_FILE]


BAD_RUN_NAMES = ["../../x", "..", "/tmp/x", "a/b", "", ".hidden", "run 1", "run\n1", "x" * 101, "ok..no", "-flag"]


@pytest.mark.parametrize("name", BAD_RUN_NAMES)
def test_a_run_name_that_is_not_one_safe_path_component_is_refused_with_place_and_fix(name: str, tmp_path: Path):
    from aoi_pipeline.errors import ConfigError
    from aoi_pipeline.pipeline.layout import check_run_name

    with pytest.raises(ConfigError) as refused:
        RunLayout.for_run(tmp_path / "results", name, where="--run-name")
    problem = refused.value.problems[0]
    assert problem.where == "--run-name" and "not a run name" in problem.what and "run_20260101" in problem.fix
    with pytest.raises(ConfigError):
        check_run_name(name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["run_20250101_000000", "nightly-3.a", "7", "0b5e9e5c-2f5c-4f4f-9d4e-0c1d2e3f4a5b"])
def test_a_plain_run_name_or_flow_run_id_names_a_folder_under_the_results_root(name: str, tmp_path: Path):
    assert RunLayout.for_run(tmp_path / "results", name).root == tmp_path / "results" / name
