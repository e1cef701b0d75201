"""The Phase 2 (DEFT loop) part of the run report, rendered from the run state; also a page of its own.

The run report (`core.run_report`) embeds `phase2_parts` and `phase2_facts`, and is re-rendered after every
stage commit, so a person can open it at any point of a run, online or not: it holds its own CSS and inline
SVG charts and references nothing outside itself (no scripts, fonts, style sheets or images). Everything
comes from `deft_state.json`; the flow may add what the state does not record (`extras`: training-set rows
by source, RCA gaps, SDG and mining counts, the share of the pool used), and a section whose input is
missing says "not recorded". Output is a pure function of its input (no clock, sorted iteration labels),
and every text from disk is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aoi_pipeline.core.report_charts import SOURCE_COLOURS, duration_bars, kpi_chart, stacked_bars
from aoi_pipeline.core.report_extras import ReportExtras
from aoi_pipeline.core.report_honest import honest_section
from aoi_pipeline.core.report_html import (
    NOT_RECORDED,
    delta_text,
    duration_text,
    html_attr,
    html_document,
    html_table,
    html_text,
    is_finite,
    metric_value_text,
    number_text,
    plain_text,
)
from aoi_pipeline.core.report_view import Evaluated, Metric, RunView, label_order
from aoi_pipeline.core.stages import BASELINE
from aoi_pipeline.core.state import next_stage, stage_durations
from aoi_pipeline.core.state_entries import IterationEntry
from aoi_pipeline.errors import Problem, StateError

_REQUIRED_STATE_KEYS = ("status", "kpi_target", "metric_contract", "max_iterations", "iterations", "events")
_HANDOFF_KEYS = ("iteration", "checkpoint", "threshold", "training_spec", "images_dir", "backbone", "backbone_type")


# ---------------------------------------------------------------------------------------------------------
# Public API


def render_report(state: Mapping[str, Any], *, extras: Mapping[str, Any] | None = None) -> str:
    """Phase 2 alone as one HTML document (the run report embeds the same `phase2_parts`); raises
    `StateError`/`ConfigError` for unusable input.

    `extras` (every key optional):
      - `training_rows_by_source`: `{label: {source: rows}}`, e.g.
        `{"iter1": {"base": 480, "sdg": 20, "mined": 35}}`;
      - `rca_gaps`: `{label: [{"label", "missed", "forced_far_pct", "lowest"}, ...]}`, top gaps first;
      - `sdg_and_mining`: `{label: {count name: number}}`, SDG and mining counts of each iteration
        (e.g. `sdg_generated`, `mining_candidates`, `mining_below_min_similarity`);
      - `pool_share_used_pct`: rows mined so far as a percentage of the resolved pool's rows;
      - `handoff`: the content of `best_model.json`;
      - `automl_trials`: `{phase: {state: trials}}`, e.g. `{"phase1": {"complete": 6, "pruned": 5}}`.
    """
    parts = phase2_parts(state, extras=extras)
    view = RunView.of(state)
    checked = ReportExtras.checked(extras)
    automl = _automl_section(checked.automl_trials)
    body = [_header(state, view), *parts, automl, _handoff_section(state, view, checked.handoff)]
    title = f"DEFT Loop Report · {Path(str(state.get('results_dir', ''))).name or 'run'}"
    return html_document(title, "\n".join(part for part in body if part))


def phase2_parts(state: Mapping[str, Any], *, extras: Mapping[str, Any] | None = None) -> list[str]:
    """The Phase 2 sections (hard stop, KPI chart, iterations, growth, durations, RCA, SDG and mining), each a
    `<section>` with an `<h2>`; input is checked first (`StateError`/`ConfigError`), nothing is rendered."""
    _check_state(state)
    checked = ReportExtras.checked(extras)
    view = RunView.of(state)
    parts = [
        _hard_stop(state),
        _kpi_section(view),
        _iterations_section(view),
        honest_section(state),
        _growth_section(checked.training_rows_by_source),
        _durations_section(state),
        _rca_section(view, checked.rca_gaps),
        _augmentation_section(view, checked.sdg_and_mining, checked.pool_share_used_pct),
    ]
    return [part for part in parts if part]


def phase2_facts(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Phase 2 at a glance as (name, plain text): status, target, stop reason, iterations, times, best."""
    _check_state(state)
    view = RunView.of(state)
    rows = [
        ("Status", str(state["status"])),
        ("KPI target", view.target_text),
        ("Stop reason", _stop_reason(state)),
        ("Iterations", f"{state.get('current_iteration', 0)} of {state['max_iterations']}"),
        ("Started", str(state.get("started_at", NOT_RECORDED))),
        ("Completed", str(state.get("completed_at", "—"))),
    ]
    best = view.result_of(view.best_label) if view.best_label is not None else None
    if best is not None:
        rows.append(("Best so far", f"{best.label}: {metric_value_text(best.value, view.metric.unit)}"))
    return rows


# ---------------------------------------------------------------------------------------------------------
# Checking the input


def _check_state(state: object) -> None:
    if not isinstance(state, Mapping):
        raise StateError.at("state", f"must be a mapping, got {type(state).__name__}", _STATE_FIX)
    problems = [
        Problem(f"state.{key}", "required key is missing", _STATE_FIX)
        for key in _REQUIRED_STATE_KEYS
        if key not in state
    ]
    for key, expected in (("iterations", Mapping), ("events", list), ("metric_contract", Mapping)):
        if key in state and not isinstance(state[key], expected):
            problems.append(Problem(f"state.{key}", f"has type {type(state[key]).__name__}", _STATE_FIX))
    if not problems:
        problems.extend(
            Problem(f"state.events[{index}]", "is not an event with seq, iter, stage and status", _STATE_FIX)
            for index, event in enumerate(state["events"])
            if not isinstance(event, Mapping) or not {"seq", "iter", "stage", "status"} <= event.keys()
        )
    if problems:
        raise StateError(problems, summary="the run state cannot be reported")


_STATE_FIX = "render from the document `read_state` returns for the run directory"


# ---------------------------------------------------------------------------------------------------------
# Sections


def _header(state: Mapping[str, Any], view: RunView) -> str:
    items = []
    for name, value in [("Run directory", str(state.get("results_dir", NOT_RECORDED))), *phase2_facts(state)]:
        shown = html_text(value)
        if name == "Status":
            shown = f'<span class="status status-{html_attr(value)}">{shown}</span>'
        items.append(f"<dt>{html_text(name)}</dt><dd>{shown}</dd>")
    return f'<header id="run">\n<h1>DEFT Loop Report</h1>\n<dl class="facts">{"".join(items)}</dl>\n</header>'


def _stop_reason(state: Mapping[str, Any]) -> str:
    status = state["status"]
    if status == "complete":
        reason = state.get("stop_reason")
        final = _last_event(state, lambda event: event.get("stage") == "loop_stop")
        at = f" at {final['iter']}" if final else ""
        text = {
            "metric_met": f"the KPI target was met{at}",
            "max_iterations": f"the iteration budget ({state['max_iterations']}) was used up{at}",
        }.get(str(reason), f"complete ({reason or 'no stop reason recorded'})")
        failed = _after_loop_error(state)
        return text if failed is None else f"{text}; then {failed.get('summary', 'a hard stop')}"
    if status == "failed":
        failing = _failing_event(state)
        where = f"{failing.get('iter')}/{failing.get('stage')}" if failing else "an unrecorded stage"
        return f"hard stop at {where}"
    try:
        step = next_stage(state)
    except (KeyError, TypeError, ValueError):
        return "running"
    return f"running; next stage {step.label}/{step.stage}"


def _hard_stop(state: Mapping[str, Any]) -> str:
    if state["status"] != "failed":
        return ""
    failing = _failing_event(state)
    if failing is None:
        body = "<p>The run is failed, but no error event records which stage stopped it.</p>"
    else:
        facts = [
            ("Stage", f"{failing.get('iter')}/{failing.get('stage')}"),
            ("Event", f"#{failing.get('seq')} at {failing.get('ts', NOT_RECORDED)}"),
        ]
        details = failing.get("details")
        if isinstance(details, Mapping):
            facts.extend((f"Detail: {name}", plain_text(value)) for name, value in sorted(details.items()))
        items = "".join(f"<dt>{html_text(name)}</dt><dd>{html_text(value)}</dd>" for name, value in facts)
        body = f'<p class="reason">{html_text(failing.get("summary", ""))}</p>\n<dl class="facts">{items}</dl>'
    return (
        '<section id="hard-stop" class="hard-stop">\n<h2>Hard stop: the run ended here</h2>\n'
        f"{body}\n<p>Nothing restarts by itself: fix the cause, then retry this stage.</p>\n</section>"
    )


def _after_loop_error(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The error that ended a complete run's Phase 3 (its last event), if any; Phase 2's result stands."""
    last = _last_event(state, lambda event: True)
    return last if last is not None and last.get("status") == "error" else None


def _failing_event(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return _last_event(state, lambda event: event.get("status") == "error")


def _last_event(state: Mapping[str, Any], wanted: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any] | None:
    return next((e for e in reversed(state["events"]) if isinstance(e, Mapping) and wanted(e)), None)


def _kpi_section(view: RunView) -> str:
    if not view.evaluated:
        chart = f'<p class="empty">No evaluated iteration yet; the KPI chart is {NOT_RECORDED}.</p>'
    else:
        chart = kpi_chart(view)
    direction = "Lower" if view.metric.lower_is_better else "Higher"
    return (
        f'<section id="kpi">\n<h2>KPI per iteration</h2>\n{chart}\n'
        f'<p class="note">{direction} is better. Target: {html_text(view.target_text)}.</p>\n</section>'
    )


def _iterations_section(view: RunView) -> str:
    if not view.labels:
        return _empty_section("iterations", "Iterations", "No iteration has been committed yet.")
    unit = view.metric.unit
    baseline = view.result_of(BASELINE)
    head = [
        "Phase",
        view.metric.axis_title,
        "Δ vs baseline",
        "Threshold",
        "Constraints",
        "Passed",
        "Checkpoint",
        "Status",
    ]
    rows = []
    for label in view.labels:
        entry = view.entries[label]
        item = view.result_of(label)
        status = f"{entry.status or NOT_RECORDED} ({entry.stage_completed or 'nothing committed'})"
        phase = f"{label} ★ best" if label == view.best_label else label
        if item is None:
            rows.append([phase, "—", "—", "—", "—", "—", "—", status])
            continue
        delta = "—" if baseline is None or label == BASELINE else delta_text(item.value - baseline.value, unit)
        rows.append(
            [
                phase,
                metric_value_text(item.value, unit),
                delta,
                number_text(item.threshold),
                _constraints_text(item),
                "yes" if item.passed else "no",
                item.checkpoint_kind,
                status,
            ]
        )
    best = [label == view.best_label for label in view.labels]
    return f'<section id="iterations">\n<h2>Iterations</h2>\n{html_table(head, rows, highlight=best)}\n</section>'


def _constraints_text(item: Evaluated) -> str:
    if not item.constraints:
        return "—"
    parts = []
    for name, value in sorted(item.constraints.items()):
        mark = " (failed)" if name in item.failed_constraints else ""
        parts.append(f"{name} {number_text(value)}{mark}")
    missing = [name for name in item.failed_constraints if name.endswith(":missing")]
    return ", ".join(parts + missing)


def _growth_section(training_rows: Mapping[str, Mapping[str, int]] | None) -> str:
    title = "Training-set growth by source"
    if not training_rows:
        return _empty_section("growth", title, f"Training-set rows by source: {NOT_RECORDED}.")
    labels = sorted(training_rows, key=label_order)
    sources = _source_order(training_rows)
    head = ["Phase", *sources, "Total", "Δ"]
    rows = []
    previous: int | None = None
    for label in labels:
        total = sum(training_rows[label].values())
        delta = "—" if previous is None else f"{total - previous:+d}"
        rows.append([label, *(number_text(training_rows[label].get(source)) for source in sources), str(total), delta])
        previous = total
    chart = stacked_bars(labels, sources, training_rows)
    return f'<section id="growth">\n<h2>{title}</h2>\n{chart}\n{html_table(head, rows)}\n</section>'


def _source_order(training_rows: Mapping[str, Mapping[str, int]]) -> list[str]:
    seen = {source for sources in training_rows.values() for source in sources}
    known = [source for source in SOURCE_COLOURS if source in seen]
    return known + sorted(seen - set(known))


def _durations_section(state: Mapping[str, Any]) -> str:
    title = "Stage durations"
    durations = stage_durations(state) if state["events"] else []
    if not durations:
        return _empty_section("durations", title, "No stage has been committed yet.")
    summaries = {event.get("seq"): event.get("summary", "") for event in state["events"] if isinstance(event, Mapping)}
    head = ["#", "Phase", "Stage", "Status", "Duration", "Summary"]
    rows = [
        [str(d.seq), d.iter_label, d.stage, d.status, duration_text(d.seconds), str(summaries.get(d.seq, ""))]
        for d in durations
    ]
    total = sum(d.seconds for d in durations)
    rows.append(["", "", "all stages", "", duration_text(total), ""])
    chart = duration_bars(durations)
    return f'<section id="durations">\n<h2>{title}</h2>\n{chart}\n{html_table(head, rows)}\n</section>'


def _rca_section(view: RunView, rca_gaps: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> str:
    title = "Root-cause analysis: top gaps"
    parts = []
    gaps = rca_gaps or {}
    analysed = {label for label in view.labels if view.entries[label].rca_gaps_csv is not None}
    for label in sorted(set(gaps) | analysed, key=label_order):
        entry = view.entries.get(label, IterationEntry(label))
        threshold = entry.rca_threshold
        targets = entry.rca_target_defects
        lines = [f"<h3>{html_text(label)}</h3>"]
        if threshold is not None:
            lines.append(f"<p>Threshold at the contract's recall: {html_text(number_text(threshold))}</p>")
        if targets:
            lines.append(f"<p>Target defect types: {html_text(', '.join(str(t) for t in targets))}</p>")
        if gaps.get(label):
            head = ["Defect type", "Missed", "Forced FAR (%)", "Lowest score"]
            rows = [
                [
                    str(g["label"]),
                    number_text(g.get("missed")),
                    number_text(g.get("forced_far_pct")),
                    number_text(g.get("lowest")),
                ]
                for g in gaps[label]
            ]
            lines.append(html_table(head, rows))
        else:
            lines.append(f'<p class="empty">Gaps table: {NOT_RECORDED}.</p>')
        parts.append("\n".join(lines))
    if not parts:
        return _empty_section("rca", title, f"RCA: {NOT_RECORDED}.")
    return f'<section id="rca">\n<h2>{title}</h2>\n' + "\n".join(parts) + "\n</section>"


def _augmentation_section(
    view: RunView,
    augmentation: Mapping[str, Mapping[str, float]] | None,
    pool_share_pct: float | None,
) -> str:
    title = "SDG and mining counts"
    counts = augmentation or {}
    labels = sorted(
        set(counts) | {label for label in view.labels if _has_augmentation(view.entries[label])}, key=label_order
    )
    names = sorted({name for values in counts.values() for name in values})
    parts = []
    if labels:
        head = ["Phase", "SDG allocated", "Mined rows", *names]
        rows = []
        for label in labels:
            entry = view.entries.get(label, IterationEntry(label))
            sdg = "skipped" if entry.anomalygen_skipped else number_text(entry.anomalygen_amp_allocated)
            mined = "skipped" if entry.data_mining_skipped else number_text(entry.mining_mined_count)
            extra = counts.get(label, {})
            rows.append([label, sdg, mined, *(number_text(extra.get(name)) for name in names)])
        parts.append(html_table(head, rows))
        if not counts:
            parts.append(f'<p class="empty">Detailed SDG and mining counts: {NOT_RECORDED}.</p>')
    else:
        parts.append(f'<p class="empty">SDG and mining counts: {NOT_RECORDED}.</p>')
    parts.append(f"<p>Share of the mining pool used: {html_text(_pool_share(view, pool_share_pct))}</p>")
    return f'<section id="augmentation">\n<h2>{title}</h2>\n' + "\n".join(parts) + "\n</section>"


def _has_augmentation(entry: IterationEntry) -> bool:
    recorded = (entry.anomalygen_amp_allocated, entry.mining_mined_count)
    return entry.anomalygen_skipped or entry.data_mining_skipped or any(value is not None for value in recorded)


def _pool_share(view: RunView, share_pct: float | None) -> str:
    mined = sum(entry.mining_mined_count or 0 for entry in view.entries.values())
    share = NOT_RECORDED if share_pct is None else f"{share_pct:.1f}%"
    return f"{share} ({mined} rows mined in total)"


def _automl_section(trials: Mapping[Any, Mapping[str, int]] | None) -> str:
    """Phase 1 and Phase 3 trials by how they ended; pruned trials were stopped early by the pruner."""
    if not trials:
        return ""
    states = sorted({state for counts in trials.values() for state in counts})
    head = ["phase", *states, "all"]
    rows = [
        [phase, *(str(counts.get(s, 0)) for s in states), str(sum(counts.values()))] for phase, counts in trials.items()
    ]
    note = "<p>A pruned trial was stopped at an epoch where its validation FAR trailed the others'.</p>"
    return f'<section id="automl">\n<h2>AutoML trials</h2>\n{note}\n{html_table(head, rows)}\n</section>'


def _handoff_section(state: Mapping[str, Any], view: RunView, handoff: Mapping[str, Any] | None) -> str:
    title = "Final handoff"
    facts: list[tuple[str, str]] = []
    artifacts = state.get("final_artifacts")
    if isinstance(artifacts, Mapping):
        facts.extend((f"File: {name}", plain_text(path)) for name, path in sorted(artifacts.items()))
    if handoff:
        facts.extend(_handoff_facts(handoff, view.metric))
    elif state["status"] == "complete":
        facts.append(("best_model.json content", NOT_RECORDED))
    if not facts:
        best = f"; best so far: {view.best_label}" if view.best_label else ""
        return _empty_section("handoff", title, f"The run has not handed off a model yet{best}.")
    items = "".join(f"<dt>{html_text(name)}</dt><dd>{html_text(value)}</dd>" for name, value in facts)
    return f'<section id="handoff">\n<h2>{title}</h2>\n<dl class="facts">{items}</dl>\n</section>'


def _handoff_facts(handoff: Mapping[str, Any], metric: Metric) -> list[tuple[str, str]]:
    facts = [(key, plain_text(handoff[key])) for key in _HANDOFF_KEYS if key in handoff]
    result = handoff.get("metric_result")
    if isinstance(result, Mapping) and is_finite(result.get("value")):
        facts.append((metric.display_name, metric_value_text(float(result["value"]), metric.unit)))
        facts.append(("Passed", "yes" if result.get("passed") is True else "no"))
    shown = {*_HANDOFF_KEYS, "metric_result", "metric_contract"}
    facts.extend(
        (key, plain_text(value))
        for key, value in sorted(handoff.items())
        if key not in shown and not isinstance(value, Mapping | list)
    )
    return facts


def _empty_section(section_id: str, title: str, message: str) -> str:
    heading = f"<h2>{html_text(title)}</h2>"
    return f'<section id="{section_id}">\n{heading}\n<p class="empty">{html_text(message)}</p>\n</section>'
