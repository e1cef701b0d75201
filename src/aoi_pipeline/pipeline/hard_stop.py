"""Recording a hard stop: every failed stage of every phase leaves an error event in the run state.

A stage that fails (a DEFT stage, the baseline training, an evaluation, the Phase 2 handoff) commits an
`error` event to deft_state.json under its own label and stage, with the reason and the fix as the event's
details, so the state is `failed` (not `in_progress`) and the report names the stop. A failure outside a
stage (a whole Phase 1 or Phase 3 sweep, the 1->2 handoff, the deployment handoff) is committed at the stage
the state expects next: Phase 1 and the 1->2 handoff under `baseline/train` (the state is started first when
Phase 1 failed before it), Phase 3 under `final_automl` (which leaves Phase 2's result standing). Where the
state accepts no commit (the deployment handoff after a registered Phase 3) the failure is recorded in
pipeline_state.json alone. A rerun retries the failed stage once, as the state's commit rules allow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aoi_pipeline.core.stages import FINAL_AUTOML
from aoi_pipeline.core.state import StageCommit, commit_stage, expected_commit, read_state, state_path
from aoi_pipeline.errors import AoiPipelineError, StateError
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout

MAX_REASON_CHARS = 800
UNEXPECTED_FIX = (
    "read the flow run's log for the traceback; fix the cause, then run the flow again with the same run "
    "name: it resumes at this stage"
)


def error_parts(error: BaseException) -> dict[str, str]:
    """`where`, `reason` and `fix` of an error, each one line: an `AoiPipelineError` names all three."""
    if isinstance(error, AoiPipelineError):
        first = error.problems[0]
        where, fix = first.where, first.fix
        reason = error.render() if len(error.problems) > 1 else first.what
    else:
        where, fix, reason = "", UNEXPECTED_FIX, f"{type(error).__name__}: {error}"
    return {name: _line(value) for name, value in (("where", where), ("reason", reason), ("fix", fix))}


def record_stage_failure(
    root: Path, label: str, stage: str, error: BaseException, started: float, *, phase: str = "phase2"
) -> dict[str, Any]:
    """Commit the failed stage as the run's hard stop (an error event with reason and fix); the new state."""
    parts = error_parts(error)
    summary = f"HARD STOP in {stage}: {parts['reason']}"
    duration = max(time.monotonic() - started, 0.001)
    commit = StageCommit(label, stage, "error", summary, duration, {"phase": phase, **parts})
    return commit_stage(root, commit)


@contextmanager
def stage_failures_recorded(root: Path, label: str, stage: str, *, phase: str = "phase2") -> Iterator[None]:
    """Run a stage; an exception is committed as its hard stop, then raised on."""
    started = time.monotonic()
    try:
        yield
    except Exception as error:
        record_stage_failure(root, label, stage, error, started, phase=phase)
        raise


def record_phase_failure(
    layout: RunLayout, phase: str, error: BaseException, started: float, *, start_state: Any = None
) -> None:
    """Record a failed phase: an error event at the stage the state expects (unless a stage of the phase
    already recorded it), the phase marked failed in pipeline_state.json, and the report refreshed.

    `start_state` (a callable) starts deft_state.json when the phase failed before any state existed.
    """
    parts = error_parts(error)
    if not state_path(layout.root).exists() and start_state is not None and layout.root.is_dir():
        start_state()
    if state_path(layout.root).exists() and not _already_recorded(layout.root):
        _commit_at_expected(layout.root, phase, error, started)
    if layout.root.is_dir():
        PipelineRecord(layout).mark(phase, "failed", **parts)
        _refresh_report(layout)


@contextmanager
def phase_failures_recorded(layout: RunLayout, phase: str, *, start_state: Any = None) -> Iterator[None]:
    """Run a phase; an exception is recorded as the run's hard stop (`record_phase_failure`), then raised on."""
    started = time.monotonic()
    try:
        yield
    except Exception as error:
        record_phase_failure(layout, phase, error, started, start_state=start_state)
        raise


def _already_recorded(root: Path) -> bool:
    """Whether the state's last event is an error: the failed stage recorded itself."""
    try:
        events = read_state(root)["events"]
    except StateError:
        return True  # an unreadable state cannot take a commit; its own error says why
    return bool(events) and events[-1].get("status") == "error"


def _commit_at_expected(root: Path, phase: str, error: BaseException, started: float) -> None:
    state = read_state(root)
    label = FINAL_AUTOML if phase in ("phase3", "handoff") and state["status"] == "complete" else None
    expected = expected_commit(state, label)
    if expected is None:
        return  # nothing left to commit to (a registered Phase 3): pipeline_state.json records it
    # A refused commit leaves the state unchanged; pipeline_state.json still records the failure.
    with contextlib.suppress(StateError):
        record_stage_failure(root, expected[0], expected[1], error, started, phase=phase)


def _refresh_report(layout: RunLayout) -> None:
    # Imported here: the run report gathers Phase 2 through pipeline.deft, which imports this module.
    from aoi_pipeline.pipeline.run_report import write_run_report

    try:
        write_run_report(layout)
    except Exception:  # the report is a view of the state; the failure is already recorded there
        return


def _line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_REASON_CHARS else f"{flat[:MAX_REASON_CHARS]}..."
