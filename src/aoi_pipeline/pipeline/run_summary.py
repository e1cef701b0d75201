"""A readable account of one run directory: phases done, where Phase 2 resumes, the last events."""

from __future__ import annotations

import json
from pathlib import Path

from aoi_pipeline.core.state import STATE_FILE, last_events, next_stage, read_state
from aoi_pipeline.pipeline.layout import PHASES, PipelineRecord, RunLayout


def describe_run_dir(root: Path) -> str:
    """Phases with their status, Phase 2's next stage and last five events, and the deliverable if any."""
    layout = RunLayout(root)
    phases = PipelineRecord(layout).read()["phases"]
    lines = [f"Run {root}"]
    for phase in PHASES:
        entry = phases.get(phase)
        lines.append(f"  {phase:12} {entry['status'] if entry else 'pending'}")
    if (root / STATE_FILE).exists():
        state = read_state(root)
        step = next_stage(state)
        lines.append(f"Phase 2: {state['status']}; next: {step.label}/{step.stage}")
        for event in last_events(state):
            lines.append(
                f"  #{event['seq']} {event['ts']} {event['iter']}/{event['stage']} {event['status']}: "
                f"{event['summary']}"
            )
    if layout.best_model.exists():
        best = json.loads(layout.best_model.read_text(encoding="utf-8"))
        lines.append(f"Deliverable: {best['checkpoint']} ({best['iteration']}, threshold {best['threshold']})")
    return "\n".join(lines)
