"""`aoi-pipeline status` of one run directory: phases, where Phase 2 resumes, last events, the deliverable."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.core.state import StageCommit, commit_stage, init_state
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.layout import PHASES, PipelineRecord, RunLayout
from aoi_pipeline.pipeline.run_summary import describe_run_dir

CONTRACT = parse_target("FAR < 5% at Recall=100%")


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    root = tmp_path / "run_20250101_000000"
    root.mkdir()
    return RunLayout(root)


def _phase_lines(text: str) -> dict[str, str]:
    lines = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in PHASES:
            lines[parts[0]] = parts[1]
    return lines


def _start_state(layout: RunLayout) -> None:
    init_state(
        layout.root,
        kpi_target=render_target(CONTRACT),
        metric_contract=CONTRACT.to_dict(),
        max_iterations=1,
        config={},
    )


def _train(layout: RunLayout, status: str, summary: str) -> None:
    train_dir = layout.train_dir("baseline")
    train_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = train_dir / "model_epoch_001_step_00010.pth"
    checkpoint.write_bytes(b"w")
    spec = layout.iteration_spec("baseline")
    spec.write_text("task: classify\n", encoding="utf-8")
    fields = {"best_ckpt_path": str(checkpoint), "training_spec": str(spec)} if status == "ok" else {}
    commit_stage(layout.root, StageCommit("baseline", "train", status, summary, 2.0, fields))


def test_a_fresh_run_lists_every_phase_as_pending(layout):
    text = describe_run_dir(layout.root)
    assert str(layout.root) in text.splitlines()[0]
    assert _phase_lines(text) == dict.fromkeys(PHASES, "pending")
    assert "Phase 2" not in text and "Deliverable" not in text


def test_recorded_phases_show_their_status(layout):
    record = PipelineRecord(layout)
    record.mark("phase1", "complete", trial=2)
    record.mark("handoff_1_2", "skipped")
    record.mark("phase2", "failed")
    assert _phase_lines(describe_run_dir(layout.root)) == {
        "phase1": "complete",
        "handoff_1_2": "skipped",
        "phase2": "failed",
        "phase3": "pending",
        "handoff": "pending",
    }


def test_phase2_shows_where_it_resumes_and_its_events(layout):
    _start_state(layout)
    _train(layout, "ok", "baseline trained 3 epochs")
    text = describe_run_dir(layout.root)
    assert "Phase 2: in_progress; next: baseline/evaluate" in text
    event = next(line for line in text.splitlines() if line.strip().startswith("#1 "))
    assert "baseline/train ok: baseline trained 3 epochs" in event


def test_a_hard_stopped_phase2_shows_the_failure_and_that_it_halts(layout):
    _start_state(layout)
    _train(layout, "error", "the train job failed: out of memory")
    text = describe_run_dir(layout.root)
    assert "Phase 2: failed; next: baseline/halt" in text
    assert "baseline/train error: the train job failed: out of memory" in text


def test_only_the_last_five_events_are_shown_oldest_first(layout):
    _start_state(layout)
    # A failed stage may be retried, each attempt is one event: five failed attempts, then one that works.
    for attempt in range(1, 6):
        _train(layout, "error", f"attempt {attempt} failed")
    _train(layout, "ok", "attempt 6 trained")
    text = describe_run_dir(layout.root)
    events = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    assert [event.split()[0] for event in events] == ["#2", "#3", "#4", "#5", "#6"]
    assert events[0].endswith("attempt 2 failed") and events[-1].endswith("attempt 6 trained")
    assert "attempt 1 failed" not in text
    assert "Phase 2: in_progress; next: baseline/evaluate" in text


def test_the_deliverable_is_shown_once_handed_off(layout):
    atomic_write_json(
        layout.best_model,
        {"checkpoint": "/r/final_automl/train/m.pth", "iteration": "final_automl", "threshold": 0.42},
    )
    text = describe_run_dir(layout.root)
    assert "Deliverable: /r/final_automl/train/m.pth (final_automl, threshold 0.42)" in text


def test_an_unreadable_state_is_an_error_naming_the_file(layout):
    (layout.root / "deft_state.json").write_text("{", encoding="utf-8")
    with pytest.raises(StateError) as raised:
        describe_run_dir(layout.root)
    assert str(layout.root / "deft_state.json") in str(raised.value)
