"""Gathering what the run directory records into `RunFacts`, and writing the run report from it.

`write_run_report` is called after every trial, every DEFT stage commit and the deployment handoff, so the
page follows the run; it replaces `run_report.html` atomically and leaves a link to it under the old Phase 2
report name (`DEFT_Loop_Report.html`). A file that cannot be read leaves its part "not recorded" instead of
failing the report; an unusable `deft_state.json` raises `StateError` before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aoi_pipeline.core.files import atomic_write_text
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.nightly_history import history_table, read_history
from aoi_pipeline.core.run_report import (
    AUTOML_PHASES,
    LEGACY_REPORT_FILE,
    RUN_REPORT_FILE,
    RunFacts,
    TrialFacts,
    legacy_report_page,
    render_run_report,
)
from aoi_pipeline.core.state import read_state, state_path
from aoi_pipeline.errors import AoiPipelineError, StateError
from aoi_pipeline.pipeline import deft
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout
from aoi_pipeline.pipeline.nightly import NIGHTLY_DIR
from aoi_pipeline.pipeline.study import objective_name
from aoi_pipeline.pipeline.trials import TRIAL_FILE, read_outcome


def gather_run_facts(
    layout: RunLayout, *, objective: str | None = None, deft_extras: Mapping[str, Any] | None = None
) -> RunFacts:
    """What the run directory records, for the report (`objective` names the AutoML trials' value; by default
    it is read from the state's metric contract)."""
    deft_state = read_state(layout.root) if state_path(layout.root).exists() else None
    if objective is None:
        objective = objective_name(_recall(deft_state))
    try:
        phases = PipelineRecord(layout).read()["phases"]
    except StateError:
        phases = {}
    extras = {key: value for key, value in (deft_extras or {}).items() if key != "handoff"}
    return RunFacts(
        run_name=layout.root.name,
        run_dir=str(layout.root),
        objective=objective,
        phases=phases,
        plan_markdown=_text(layout.preflight),
        approval=_json(layout.approval),
        trials={phase: _trials(layout, phase) for phase in AUTOML_PHASES},
        deft_state=deft_state,
        deft_extras=extras or None,
        handoff=_json(layout.best_model),
        handoff_path=str(layout.best_model),
        nightly_history=_nightly_rows(layout),
    )


def write_run_report(
    layout: RunLayout, *, objective: str | None = None, deft_extras: Mapping[str, Any] | None = None
) -> Path:
    """Render and atomically replace `run_report.html` (and the link under the old name); returns its path."""
    text = render_run_report(gather_run_facts(layout, objective=objective, deft_extras=deft_extras))
    path = layout.root / RUN_REPORT_FILE
    atomic_write_text(path, text)
    legacy = layout.root / LEGACY_REPORT_FILE
    if not legacy.exists() or legacy.read_text(encoding="utf-8") != legacy_report_page():
        atomic_write_text(legacy, legacy_report_page())
    return path


def refresh_run_report(ctx: RunContext) -> Path:
    """Write the run report of a running pipeline: its layout, its objective, Phase 2's extras once started."""
    extras = deft.report_extras(ctx) if state_path(ctx.layout.root).exists() else None
    objective = objective_name(ctx.contract.recall_target_pct)
    return write_run_report(ctx.layout, objective=objective, deft_extras=extras)


def _nightly_rows(layout: RunLayout) -> tuple[dict[str, Any], ...]:
    """The nightly history beside a nightly run (`<results root>/nightly/`); empty for a manual run."""
    handoff = _json(layout.best_model) or {}
    if "nightly" not in handoff and not layout.root.name.startswith("nightly_"):
        return ()
    return tuple(history_table(read_history(layout.root.parent / NIGHTLY_DIR)))


def _trials(layout: RunLayout, phase: str) -> tuple[TrialFacts, ...]:
    found = []
    for record in sorted(layout.phase_dir(phase).glob(f"trial_*/{TRIAL_FILE}")):
        try:
            outcome = read_outcome(record.parent)
        except StateError:
            continue  # an unreadable trial is the trials table artifact's and the resume's business
        if outcome is None:
            continue
        value = outcome.far_pct if outcome.state == "complete" else None
        found.append(
            TrialFacts(
                number=outcome.number,
                state=outcome.state,
                value=value,
                val_loss=outcome.val_loss,
                params=outcome.params,
                duration_s=outcome.duration_s,
                reason=_reason(outcome.reason, outcome.pruned_epoch),
            )
        )
    return tuple(found)


def _reason(reason: str, pruned_epoch: int | None) -> str:
    if pruned_epoch is None:
        return reason
    at = f"stopped after epoch {pruned_epoch}"
    return f"{at}; {reason}" if reason else at


def _recall(state: Mapping[str, Any] | None) -> float | None:
    if state is None:
        return None
    try:
        return MetricContract.from_dict(state["metric_contract"]).recall_target_pct
    except AoiPipelineError:
        return None


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _json(path: Path) -> dict[str, Any] | None:
    text = _text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
