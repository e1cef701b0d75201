"""The run report, `<run dir>/run_report.html`: the whole run on one self-contained page.

What is on it, top to bottom: the run at a glance, the pre-flight plan and the approval record, Phase 1's
AutoML trials (table and optimisation history), Phase 2's DEFT iterations (`core.report`), Phase 3's
refinement and the final handoff. It is rendered from `RunFacts`, what the run directory records (gathered by
`pipeline.run_report`), and re-rendered as the run goes, so it can be opened at any time; a part the run has
not reached says so. The deliverable it names is chosen from `deft_state.json` by `core.deliverable`, the
rule `best_model.json` is written from, so the report and the handoff cannot disagree; if `best_model.json`
names another model (a stale file), the handoff section says so in red.

Adding a section: write `def my_section(facts: RunFacts) -> str | None` returning the section's inner HTML
(None: "not recorded yet"; escape every text from disk with `html_text`, build tables with `html_table` and
charts with `core.report_charts`), then add `Section("my-id", "My title", my_section)` to `SECTIONS` where it
belongs in the page. If it needs data the run directory has but `RunFacts` lacks, add a field to `RunFacts`
(default empty) and fill it in `pipeline.run_report.gather_run_facts`. A section may return `""` to leave
itself out of the page (e.g. a nightly-only section in a manual run). The table of contents follows
`SECTIONS`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aoi_pipeline.core.deliverable import best_completed
from aoi_pipeline.core.report import phase2_facts, phase2_parts
from aoi_pipeline.core.report_charts import history_chart
from aoi_pipeline.core.report_html import (
    NOT_RECORDED,
    delta_text,
    duration_text,
    html_attr,
    html_document,
    html_table,
    html_text,
    metric_value_text,
    number_text,
    plain_text,
)
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML

RUN_REPORT_FILE = "run_report.html"
#: The name of the Phase 2 report before there was a run report; it now holds a link to `RUN_REPORT_FILE`.
LEGACY_REPORT_FILE = "DEFT_Loop_Report.html"
AUTOML_PHASES = ("phase1", "phase3")
_PIPELINE_PHASES = ("phase1", "handoff_1_2", "phase2", "phase3", "handoff")  # as pipeline_state.json records them


@dataclass(frozen=True)
class TrialFacts:
    """One AutoML trial as `trial.json` records it; `value` is its validation FAR in percent."""

    number: int
    state: str
    value: float | None
    val_loss: float | None
    params: Mapping[str, Any]
    duration_s: float
    reason: str = ""


@dataclass(frozen=True)
class RunFacts:
    """Everything the run report shows, as recorded in the run directory (absent parts empty or None)."""

    run_name: str
    run_dir: str
    objective: str  # what a trial's value is, e.g. "FAR@100% recall on validation"
    phases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # pipeline_state.json "phases"
    plan_markdown: str | None = None  # preflight.md: the plan that was approved
    approval: Mapping[str, Any] | None = None  # approval.json
    trials: Mapping[str, Sequence[TrialFacts]] = field(default_factory=dict)  # by AutoML phase
    deft_state: Mapping[str, Any] | None = None  # deft_state.json
    deft_extras: Mapping[str, Any] | None = None  # `core.report` extras (rows by source, RCA gaps, counts)
    handoff: Mapping[str, Any] | None = None  # best_model.json
    handoff_path: str | None = None
    # A nightly run's history (`core.nightly_history.history_table` rows, oldest first); empty in a manual run.
    nightly_history: Sequence[Mapping[str, Any]] = ()


SectionBody = Callable[[RunFacts], "str | None"]


@dataclass(frozen=True)
class Section:
    """One part of the page: its anchor id, its heading and the function that renders its content."""

    id: str
    title: str
    body: SectionBody


def render_run_report(facts: RunFacts, sections: Sequence[Section] | None = None) -> str:
    """The run report as one HTML document; deterministic for the same facts."""
    chosen = SECTIONS if sections is None else sections
    rendered = [(section, section.body(facts)) for section in chosen]
    shown = [(section, body) for section, body in rendered if body != ""]
    contents = "".join(f'<li><a href="#{html_attr(s.id)}">{html_text(s.title)}</a></li>' for s, _ in shown)
    parts = [f"<h1>Run report · {html_text(facts.run_name)}</h1>", f'<nav><ol class="toc">{contents}</ol></nav>']
    for section, body in shown:
        inner = body if body is not None else f'<p class="empty">{html_text(NOT_RECORDED)} yet.</p>'
        parts.append(
            f'<section id="{html_attr(section.id)}">\n<h2>{html_text(section.title)}</h2>\n{inner}\n</section>'
        )
    return html_document(f"Run report · {facts.run_name}", "\n".join(parts))


def legacy_report_page() -> str:
    """The page left under the old Phase 2 report name: a link (and redirect) to the run report."""
    link = f'<a href="{RUN_REPORT_FILE}">{RUN_REPORT_FILE}</a>'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="0; url={RUN_REPORT_FILE}">\n<title>Run report</title>\n</head>\n'
        f"<body>\n<p>The DEFT loop is now part of the run report: {link}.</p>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------------------
# Sections


def _summary(facts: RunFacts) -> str:
    rows: list[tuple[str, str]] = [("Run directory", facts.run_dir), ("Status", _run_status(facts))]
    chosen = _deliverable(facts)
    if chosen is not None:
        rows.append(("Deliverable" if "handoff" in facts.phases else "Best so far", _candidate_text(facts, chosen)))
    if facts.approval:
        rows.append(("Approved plan", f"{facts.approval.get('plan_hash')} by {facts.approval.get('reviewer')}"))
    if facts.deft_state is not None:
        rows.append(("KPI target", str(facts.deft_state.get("kpi_target", NOT_RECORDED))))
    phases = [f"{name}: {entry.get('status')}" for name, entry in facts.phases.items()]
    rows.append(("Phases recorded", ", ".join(phases) or "none yet"))
    return _facts_list(rows)


def _run_status(facts: RunFacts) -> str:
    state = facts.deft_state or {}
    failed = next((name for name, entry in facts.phases.items() if entry.get("status") == "failed"), None)
    if failed is not None:
        entry = facts.phases[failed]
        return f"failed in {failed}: {entry.get('reason') or NOT_RECORDED} (fix: {entry.get('fix') or NOT_RECORDED})"
    if state.get("status") == "failed":
        return "failed (hard stop in Phase 2: see below)"
    if "handoff" in facts.phases:
        return "complete"
    if facts.approval and facts.approval.get("decision") == "reject":
        return "rejected"
    if not facts.phases and facts.deft_state is None and not any(facts.trials.values()):
        return "approved, not started"
    done = {name for name, entry in facts.phases.items() if entry.get("status") in ("complete", "skipped")}
    running = next(name for name in _PIPELINE_PHASES if name not in done)
    return f"in progress ({running})"


def _plan_and_approval(facts: RunFacts) -> str | None:
    if facts.approval is None and facts.plan_markdown is None:
        return None
    parts = []
    if facts.approval is not None:
        keys = ("decision", "reviewer", "comment", "plan_hash", "decided_at", "source")
        parts.append(_facts_list([(key, plain_text(facts.approval.get(key))) for key in keys]))
    if facts.plan_markdown is not None:
        parts.append(
            "<details><summary>The pre-flight plan that was approved (nine sections)</summary>\n"
            f'<pre class="plan">{html_text(facts.plan_markdown)}</pre>\n</details>'
        )
    return "\n".join(parts)


def _phase1(facts: RunFacts) -> str | None:
    return _automl_body(facts, "phase1")


def _phase2(facts: RunFacts) -> str | None:
    state = facts.deft_state
    if state is None:
        return None
    # The Phase 2 parts are whole sections with <h2>/<h3> headings; inside this section they are one level
    # lower. Texts from disk are escaped, so the only heading tags in them are the report's own.
    nested = "\n".join(phase2_parts(state, extras=facts.deft_extras))
    nested = nested.replace("<h3>", "<h4>").replace("</h3>", "</h4>").replace("<h2>", "<h3>").replace("</h2>", "</h3>")
    return _facts_list(phase2_facts(state)) + "\n" + nested


def _phase3(facts: RunFacts) -> str | None:
    body = _automl_body(facts, "phase3")
    record = facts.phases.get("phase3", {})
    state = facts.deft_state
    if state is None or FINAL_AUTOML not in state["iterations"]:
        return body
    lines = [body or ""]
    if record.get("warm_start"):
        lines.append(f"<p>Every trial warm-started from Phase 2's best, {html_text(record['warm_start'])}.</p>")
    lines.append(f"<p>{html_text(_phase3_verdict(state))}</p>")
    return "\n".join(line for line in lines if line)


def _phase3_verdict(state: Mapping[str, Any]) -> str:
    """Phase 3's winner against Phase 2's best, both on the KPI set, and which one the handoff takes."""
    refined = best_completed(state) if FINAL_AUTOML in state["iterations"] else None
    phase2 = best_completed(state, exclude=(FINAL_AUTOML,))
    entry = state["iterations"].get(FINAL_AUTOML, {})
    if phase2 is None or not isinstance(entry.get("metric_result"), Mapping):
        return "Phase 3's winner has not been evaluated on the KPI set yet."
    unit = str(state["metric_contract"].get("unit") or "")
    value = float(entry["metric_result"]["value"])
    base = phase2[0]
    gap = delta_text(value - base.result.value, unit)
    shown = f"{metric_value_text(value, unit)} against Phase 2's best ({base.label}) at "
    shown += f"{metric_value_text(base.result.value, unit)} on the KPI set ({gap})"
    if refined is not None and refined[0].label == FINAL_AUTOML:
        return f"Phase 3's winner (final_automl): {shown}; it is the deliverable."
    return f"Phase 3's winner (final_automl): {shown}; it did not beat Phase 2's best, which stands."


def _handoff(facts: RunFacts) -> str | None:
    chosen = _deliverable(facts)
    if chosen is None:
        return None
    state = facts.deft_state
    assert state is not None  # a deliverable comes from the state
    candidate, entry = chosen
    unit = str(state["metric_contract"].get("unit") or "")
    rows = [
        ("Deliverable", _candidate_text(facts, chosen)),
        ("Passes the KPI target", "yes" if candidate.result.passed else "no"),
        ("Threshold", number_text(entry.get("threshold"))),
        ("Checkpoint", plain_text(entry.get("best_ckpt_path"))),
        ("Training spec", plain_text(entry.get("training_spec"))),
    ]
    parts = [_agreement(facts, candidate.label, str(entry.get("best_ckpt_path"))), _facts_list(rows)]
    parts.append(_trajectory_table(facts, state, unit))
    return "\n".join(part for part in parts if part)


def _agreement(facts: RunFacts, label: str, checkpoint: str) -> str:
    if facts.handoff is None:
        if "handoff" in facts.phases:
            return f'<p class="warning">best_model.json: {NOT_RECORDED}.</p>'
        return '<p class="note">The run has not written best_model.json yet; this is the best so far.</p>'
    named = facts.handoff.get("iteration"), str(facts.handoff.get("checkpoint"))
    where = html_text(facts.handoff_path or "best_model.json")
    if named != (label, checkpoint):
        return (
            f'<p class="warning">{where} names {html_text(named[0])} ({html_text(named[1])}), not the run\'s '
            f"best {html_text(label)}: it is out of date; re-run the handoff.</p>"
        )
    return f'<p class="note">{where} names this model.</p>'


def _trajectory_table(facts: RunFacts, state: Mapping[str, Any], unit: str) -> str:
    head = ["Stage", "Set", "Value", "Δ vs baseline", "Passes"]
    rows: list[list[str]] = []
    phase1 = [t.value for t in facts.trials.get("phase1", ()) if t.value is not None]
    if phase1:
        rows.append(["Phase 1 best trial", "validation", metric_value_text(min(phase1), "%"), "—", "—"])
    results = {
        label: entry["metric_result"]
        for label, entry in state["iterations"].items()
        if isinstance(entry.get("metric_result"), Mapping)
    }
    baseline = results.get(BASELINE, {}).get("value")
    chosen = _deliverable(facts)
    highlight = [False] * len(rows)
    for label in sorted(results, key=_stage_order):
        value = float(results[label]["value"])
        delta = "—" if baseline is None or label == BASELINE else delta_text(value - float(baseline), unit)
        passed = "yes" if results[label].get("passed") else "no"
        rows.append([_stage_name(label), "KPI", metric_value_text(value, unit), delta, passed])
        highlight.append(chosen is not None and chosen[0].label == label)
    return html_table(head, rows, highlight=highlight)


# ---------------------------------------------------------------------------------------------------------
# AutoML phases


def _automl_body(facts: RunFacts, phase: str) -> str | None:
    trials = sorted(facts.trials.get(phase, ()), key=lambda trial: trial.number)
    record = facts.phases.get(phase, {})
    if not trials:
        return "<p>Disabled in the config.</p>" if record.get("status") == "skipped" else None
    winner = record.get("trial")
    best = min((t.value for t in trials if t.value is not None), default=None)
    head = ["Trial", "State", facts.objective, "Δ vs best", "Validation loss", "Duration", "Parameters"]
    rows = []
    for trial in trials:
        value = "—" if trial.value is None else metric_value_text(trial.value, "%")
        delta = "—" if trial.value is None or best is None else delta_text(trial.value - best, "%")
        state = trial.state if not trial.reason else f"{trial.state}: {trial.reason}"
        params = ", ".join(f"{key}={plain_text(value)}" for key, value in sorted(trial.params.items()))
        number = f"{trial.number} ★ winner" if trial.number == winner else str(trial.number)
        row = [number, state, value, delta, number_text(trial.val_loss), duration_text(trial.duration_s), params]
        rows.append(row)
    ended = Counter(trial.state for trial in trials)
    by_state = ", ".join(f"{count} {state}" for state, count in sorted(ended.items()))
    summary = f"{len(trials)} trial(s) finished ({by_state}); objective: {facts.objective}, lower is better."
    won = next((t for t in trials if t.number == winner), None)
    if won is not None and won.value is not None:
        summary += f" Winner: trial {won.number} at {metric_value_text(won.value, '%')}"
        summary += " (its checkpoint is Phase 2's baseline)." if phase == "phase1" else "."
    summary = f"<p>{html_text(summary)}</p>"
    chart = history_chart([(t.number, t.value) for t in trials], "%", facts.objective)
    table = html_table(head, rows, highlight=[t.number == winner for t in trials])
    return "\n".join([summary, chart, table])


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _deliverable(facts: RunFacts) -> tuple[Any, Mapping[str, Any]] | None:
    if facts.deft_state is None:
        return None
    return best_completed(facts.deft_state)


def _candidate_text(facts: RunFacts, chosen: tuple[Any, Mapping[str, Any]]) -> str:
    candidate = chosen[0]
    state = facts.deft_state or {}
    unit = str(state.get("metric_contract", {}).get("unit") or "")
    return f"{_stage_name(candidate.label)}: {metric_value_text(candidate.result.value, unit)} on the KPI set"


def _stage_name(label: str) -> str:
    if label == BASELINE:
        return "baseline (Phase 2 start)"
    if label == FINAL_AUTOML:
        return "final_automl (Phase 3 winner)"
    return f"{label} (Phase 2)"


def _stage_order(label: str) -> tuple[int, int]:
    if label == BASELINE:
        return (0, 0)
    if label.startswith("iter") and label[4:].isdigit():
        return (1, int(label[4:]))
    return (2, 0)


def _facts_list(rows: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{html_text(name)}</dt><dd>{html_text(value)}</dd>" for name, value in rows)
    return f'<dl class="facts">{items}</dl>'


#: The page's sections in order (see the module docstring to add one).
def _nightly_history(facts: RunFacts) -> str | None:
    """One row per night (this run's highlighted), and whether this night replaced the deployed model."""
    if not facts.nightly_history:
        return ""  # a manual run: no nightly section
    head = list(facts.nightly_history[0])
    rows = [[str(row.get(column, "")) for column in head] for row in facts.nightly_history]
    mine = [row.get("night") == facts.run_name for row in facts.nightly_history]
    verdict = (facts.handoff or {}).get("nightly")
    lead = ""
    if isinstance(verdict, Mapping):
        outcome = "promoted (a new handoff version)" if verdict.get("promoted") else "kept the deployed model"
        lead = f"<p>This night {html_text(outcome)}: {html_text(verdict.get('reason', ''))}</p>\n"
    return lead + html_table(head, rows, highlight=mine)


SECTIONS: tuple[Section, ...] = (
    Section("summary", "The run at a glance", _summary),
    Section("approval", "Pre-flight plan and approval", _plan_and_approval),
    Section("phase1", "Phase 1: AutoML", _phase1),
    Section("phase2", "Phase 2: DEFT loop", _phase2),
    Section("phase3", "Phase 3: AutoML refinement", _phase3),
    Section("handoff", "Final handoff", _handoff),
    Section("nightly", "Nightly history", _nightly_history),
)
