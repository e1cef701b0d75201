"""The DEFT loop report, `RD/DEFT_Loop_Report.html`: one self-contained HTML page rendered from the run state.

The page is re-rendered after every stage commit, so a person can open it at any point of a run, online or
not: it holds its own CSS and inline SVG charts and references nothing outside itself (no scripts, fonts,
style sheets or images). Everything comes from `deft_state.json`; the flow may add what the state does not
record (`extras`: training-set rows by source, RCA gaps, SDG and mining counts, the share of the pool used,
the `best_model.json` handoff), and a section whose input is missing says "not recorded". Output is a pure
function of its input (no clock, sorted iteration labels), and every text from disk is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from aoi_pipeline.core.files import atomic_write_text
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import Candidate, MetricResult, pick_best
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.state import (
    BASELINE,
    FINAL_AUTOML,
    ITER_LABEL_RE,
    StageDuration,
    next_stage,
    read_state,
    stage_durations,
)
from aoi_pipeline.errors import AoiPipelineError, ConfigError, Problem, StateError

REPORT_FILE = "DEFT_Loop_Report.html"
EXTRAS_KEYS = ("training_rows_by_source", "rca_gaps", "sdg_and_mining", "pool_share_used_pct", "handoff")
NOT_RECORDED = "not recorded"

_GREEN = "#76b900"
_RED = "#c2262d"
_GREY = "#b0b0b0"
_INK = "#1f2933"
_SOURCE_COLOURS = {"base": "#5b6b7f", "sdg": "#f0a020", "mined": "#3a86c8"}
_EXTRA_COLOURS = ("#8e6bbf", "#2a9d8f", "#e76f51", "#6d6875")
_REQUIRED_STATE_KEYS = ("status", "kpi_target", "metric_contract", "max_iterations", "iterations", "events")
_CHECKPOINT_KINDS = ("best_val", "latest")
_HANDOFF_KEYS = ("iteration", "checkpoint", "threshold", "training_spec", "images_dir", "backbone", "backbone_type")


# ---------------------------------------------------------------------------------------------------------
# Public API


def render_report(state: Mapping[str, Any], *, extras: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML document; raises `StateError`/`ConfigError` for unusable input.

    `extras` (every key optional):
      - `training_rows_by_source`: `{label: {source: rows}}`, e.g.
        `{"iter1": {"base": 480, "sdg": 20, "mined": 35}}`;
      - `rca_gaps`: `{label: [{"label", "missed", "forced_far_pct", "lowest"}, ...]}`, top gaps first;
      - `sdg_and_mining`: `{label: {count name: number}}`, SDG and mining counts of each iteration
        (e.g. `sdg_generated`, `mining_candidates`, `mining_below_min_similarity`);
      - `pool_share_used_pct`: rows mined so far as a percentage of the resolved pool's rows;
      - `handoff`: the content of `best_model.json`.
    """
    _check_state(state)
    extras = {} if extras is None else extras
    _check_extras(extras)
    view = _RunView.of(state)
    body = [
        _header(state, view),
        _hard_stop(state),
        _kpi_section(view),
        _iterations_section(view),
        _growth_section(extras.get("training_rows_by_source")),
        _durations_section(state),
        _rca_section(view, extras.get("rca_gaps")),
        _augmentation_section(view, extras.get("sdg_and_mining"), extras.get("pool_share_used_pct")),
        _handoff_section(state, view, extras.get("handoff")),
    ]
    title = f"DEFT Loop Report · {Path(str(state.get('results_dir', ''))).name or 'run'}"
    return _document(title, "\n".join(part for part in body if part))


def write_report(results_dir: Path, *, extras: Mapping[str, Any] | None = None) -> Path:
    """Render the report of the run in `results_dir` and replace `DEFT_Loop_Report.html` atomically.

    When `extras` has no `handoff` and the state records a `best_model.json`, that file is read for the
    handoff section. Bad input raises before anything is written, so the previous report stays in place.
    """
    results_dir = Path(results_dir)
    state = read_state(results_dir)
    merged = dict(extras or {})
    if "handoff" not in merged:
        handoff = _recorded_handoff(state)
        if handoff is not None:
            merged["handoff"] = handoff
    text = render_report(state, extras=merged)
    path = results_dir / REPORT_FILE
    atomic_write_text(path, text)
    return path


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


def _check_extras(extras: object) -> None:
    if not isinstance(extras, Mapping):
        raise ConfigError.at("extras", f"must be a mapping, got {type(extras).__name__}", "pass a dict or None")
    problems = [
        Problem(f"extras.{key}", "unknown key", f"use only {', '.join(EXTRAS_KEYS)}")
        for key in extras
        if key not in EXTRAS_KEYS
    ]
    checks: dict[str, Callable[[object], list[Problem]]] = {
        "training_rows_by_source": _training_rows_problems,
        "rca_gaps": _rca_gaps_problems,
        "sdg_and_mining": _augmentation_problems,
        "pool_share_used_pct": _pool_share_problems,
        "handoff": _handoff_problems,
    }
    for key, check in checks.items():
        if extras.get(key) is not None:
            problems.extend(check(extras[key]))
    if problems:
        raise ConfigError(problems, summary="the report extras are invalid; no report was written")


def _per_label_problems(where: str, value: object) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [Problem(where, f"must map iteration labels to values, got {type(value).__name__}", _LABEL_FIX)]
    return [
        Problem(f"{where}.{label}", f"{label!r} is not an iteration label", _LABEL_FIX)
        for label in value
        if not isinstance(label, str) or not ITER_LABEL_RE.fullmatch(label)
    ]


_LABEL_FIX = "key by baseline, iter<N> or final_automl"


def _training_rows_problems(value: object) -> list[Problem]:
    where = "extras.training_rows_by_source"
    problems = _per_label_problems(where, value)
    if problems:
        return problems
    assert isinstance(value, Mapping)
    for label, sources in value.items():
        if not isinstance(sources, Mapping):
            problems.append(
                Problem(f"{where}.{label}", f"{sources!r:.80} is not a mapping of sources", "pass {source: rows}")
            )
            continue
        problems.extend(
            Problem(f"{where}.{label}.{source}", f"{rows!r} is not a row count", "pass a non-negative integer")
            for source, rows in sources.items()
            if not isinstance(source, str) or not _is_count(rows)
        )
    return problems


def _rca_gaps_problems(value: object) -> list[Problem]:
    where = "extras.rca_gaps"
    problems = _per_label_problems(where, value)
    if problems:
        return problems
    assert isinstance(value, Mapping)
    for label, gaps in value.items():
        if not isinstance(gaps, Sequence) or isinstance(gaps, str):
            problems.append(Problem(f"{where}.{label}", f"{gaps!r:.80} is not a list", "pass a list of gap rows"))
            continue
        for index, gap in enumerate(gaps):
            problems.extend(_gap_problems(f"{where}.{label}[{index}]", gap))
    return problems


def _gap_problems(where: str, gap: object) -> list[Problem]:
    if not isinstance(gap, Mapping) or not isinstance(gap.get("label"), str) or not gap["label"].strip():
        return [Problem(where, f"{gap!r:.80} has no defect type text under 'label'", "give each gap a label")]
    problems = []
    if gap.get("missed") is not None and not _is_count(gap["missed"]):
        problems.append(Problem(f"{where}.missed", f"{gap['missed']!r} is not a count", "pass the missed rows"))
    for key in ("forced_far_pct", "lowest"):
        if gap.get(key) is not None and not _is_finite(gap[key]):
            problems.append(Problem(f"{where}.{key}", f"{gap[key]!r} is not a finite number", "pass a number"))
    return problems


def _augmentation_problems(value: object) -> list[Problem]:
    where = "extras.sdg_and_mining"
    problems = _per_label_problems(where, value)
    if problems:
        return problems
    assert isinstance(value, Mapping)
    for label, counts in value.items():
        if not isinstance(counts, Mapping):
            problems.append(
                Problem(f"{where}.{label}", f"{counts!r:.80} is not a mapping", "pass {count name: number}")
            )
            continue
        problems.extend(
            Problem(f"{where}.{label}.{name}", f"{count!r} is not a finite number", "pass a number")
            for name, count in counts.items()
            if not isinstance(name, str) or not _is_finite(count)
        )
    return problems


def _pool_share_problems(value: object) -> list[Problem]:
    if _is_finite(value) and 0.0 <= value <= 100.0:
        return []
    return [
        Problem(
            "extras.pool_share_used_pct",
            f"{value!r:.80} is not a percentage from 0 to 100",
            "pass 100 * rows mined so far / rows of the resolved pool",
        )
    ]


def _handoff_problems(value: object) -> list[Problem]:
    if isinstance(value, Mapping):
        return []
    return [Problem("extras.handoff", f"{value!r:.80} is not a mapping", "pass the content of best_model.json")]


def _recorded_handoff(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """`best_model.json` as recorded at loop_stop, or None when it is absent or unreadable."""
    artifacts = state.get("final_artifacts")
    path = artifacts.get("best_model_json") if isinstance(artifacts, Mapping) else None
    if not isinstance(path, str):
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------------------
# What the state says, in the shape the sections need


@dataclass(frozen=True)
class _Metric:
    name: str
    display_name: str
    operator: str
    target: float | None
    unit: str

    @property
    def lower_is_better(self) -> bool:
        return self.operator in ("<", "<=", "lt", "le", "lte")

    @property
    def axis_title(self) -> str:
        return f"{self.display_name} ({self.unit})" if self.unit else self.display_name


@dataclass(frozen=True)
class _Evaluated:
    label: str
    value: float
    threshold: float | None
    constraints: Mapping[str, Any]
    failed_constraints: tuple[str, ...]
    passed: bool
    checkpoint_kind: str


@dataclass(frozen=True)
class _RunView:
    metric: _Metric
    target_text: str
    labels: tuple[str, ...]
    evaluated: tuple[_Evaluated, ...]
    best_label: str | None
    entries: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> _RunView:
        contract = state["metric_contract"]
        metric = _metric_of(contract)
        entries = {label: entry for label, entry in state["iterations"].items() if isinstance(entry, Mapping)}
        labels = tuple(sorted(entries, key=_label_order))
        evaluated = tuple(item for item in (_evaluated(label, entries[label]) for label in labels) if item)
        target_text = _target_text(contract, str(state["kpi_target"]))
        return cls(metric, target_text, labels, evaluated, _best_label(contract, metric, evaluated), entries)

    def result_of(self, label: str) -> _Evaluated | None:
        return next((item for item in self.evaluated if item.label == label), None)


def _metric_of(contract: Mapping[str, Any]) -> _Metric:
    target = contract.get("target")
    return _Metric(
        name=str(contract.get("name", "metric")),
        display_name=str(contract.get("display_name") or contract.get("name") or "metric"),
        operator=str(contract.get("operator", "<")),
        target=float(target) if _is_finite(target) else None,
        unit=str(contract.get("unit") or ""),
    )


def _target_text(contract: Mapping[str, Any], kpi_target: str) -> str:
    try:
        rendered = render_target(MetricContract.from_dict(contract))
    except AoiPipelineError:
        return kpi_target
    return kpi_target if rendered == kpi_target else f"{kpi_target} (contract: {rendered})"


def _label_order(label: str) -> tuple[int, int, str]:
    if label == BASELINE:
        return (0, 0, label)
    match = re.fullmatch(r"iter([1-9][0-9]*)", label)
    if match:
        return (1, int(match.group(1)), label)
    return (2 if label == FINAL_AUTOML else 3, 0, label)


def _evaluated(label: str, entry: Mapping[str, Any]) -> _Evaluated | None:
    """The iteration's recorded result; a legacy entry with only `far_pct` counts as one (deft-spec §4.4)."""
    result = entry.get("metric_result")
    if isinstance(result, Mapping) and _is_finite(result.get("value")):
        value = float(result["value"])
        constraints = result.get("constraints") if isinstance(result.get("constraints"), Mapping) else {}
        failed = tuple(str(name) for name in result.get("failed_constraints") or ())
        passed = result.get("passed") is True
        threshold = entry.get("threshold", result.get("threshold"))
    elif _is_finite(entry.get("far_pct")):
        value, constraints, failed, passed = float(entry["far_pct"]), {}, (), False
        threshold = entry.get("threshold")
    else:
        return None
    return _Evaluated(
        label=label,
        value=value,
        threshold=float(threshold) if _is_finite(threshold) else None,
        constraints=constraints,
        failed_constraints=failed,
        passed=passed,
        checkpoint_kind=_checkpoint_kind(entry),
    )


def _checkpoint_kind(entry: Mapping[str, Any]) -> str:
    """The evaluated checkpoint: the inference folder the winner came from, else the kind train recorded.

    The kind recorded at train goes stale when evaluate picks the other checkpoint (deft-spec §14.15).
    """
    inference_csv = entry.get("inference_csv")
    if isinstance(inference_csv, str) and Path(inference_csv).parent.name in _CHECKPOINT_KINDS:
        return Path(inference_csv).parent.name
    kind = entry.get("best_ckpt_kind")
    return kind if isinstance(kind, str) and kind else NOT_RECORDED


def _best_label(contract: Mapping[str, Any], metric: _Metric, evaluated: Sequence[_Evaluated]) -> str | None:
    """The best evaluated phase by the contract's own selection rule (constraints first, then the value)."""
    candidates = [
        Candidate(
            item.label,
            MetricResult(
                name=metric.name,
                value=item.value,
                unit=metric.unit,
                threshold=item.threshold,
                constraints={},
                diagnostics={},
                passed=item.passed,
                failed_constraints=item.failed_constraints,
            ),
        )
        for item in evaluated
    ]
    try:
        best = pick_best(MetricContract.from_dict(contract), candidates)
    except AoiPipelineError:
        return None
    return None if best is None else best.label


# ---------------------------------------------------------------------------------------------------------
# Sections


def _header(state: Mapping[str, Any], view: _RunView) -> str:
    status = str(state["status"])
    rows = [
        ("Run directory", _text(state.get("results_dir", NOT_RECORDED))),
        ("Status", f'<span class="status status-{_attr(status)}">{_text(status)}</span>'),
        ("KPI target", _text(view.target_text)),
        ("Stop reason", _text(_stop_reason(state))),
        ("Iterations", _text(f"{state.get('current_iteration', 0)} of {state['max_iterations']}")),
        ("Started", _text(state.get("started_at", NOT_RECORDED))),
        ("Completed", _text(state.get("completed_at", "—"))),
    ]
    if view.best_label is not None:
        best = view.result_of(view.best_label)
        assert best is not None
        rows.append(("Best so far", _text(f"{view.best_label}: {_metric_value(best.value, view.metric.unit)}")))
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<header id="run">\n<h1>DEFT Loop Report</h1>\n<dl class="facts">{items}</dl>\n</header>'


def _stop_reason(state: Mapping[str, Any]) -> str:
    status = state["status"]
    if status == "complete":
        reason = state.get("stop_reason")
        final = _last_event(state, lambda event: event.get("stage") == "loop_stop")
        at = f" at {final['iter']}" if final else ""
        if reason == "metric_met":
            return f"the KPI target was met{at}"
        if reason == "max_iterations":
            return f"the iteration budget ({state['max_iterations']}) was used up{at}"
        return f"complete ({reason or 'no stop reason recorded'})"
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
            facts.extend((f"Detail: {name}", _plain(value)) for name, value in sorted(details.items()))
        items = "".join(f"<dt>{_text(name)}</dt><dd>{_text(value)}</dd>" for name, value in facts)
        body = f'<p class="reason">{_text(failing.get("summary", ""))}</p>\n<dl class="facts">{items}</dl>'
    return (
        '<section id="hard-stop" class="hard-stop">\n<h2>Hard stop: the run ended here</h2>\n'
        f"{body}\n<p>Nothing restarts by itself: fix the cause, then retry this stage.</p>\n</section>"
    )


def _failing_event(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return _last_event(state, lambda event: event.get("status") == "error")


def _last_event(state: Mapping[str, Any], wanted: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any] | None:
    return next((e for e in reversed(state["events"]) if isinstance(e, Mapping) and wanted(e)), None)


def _kpi_section(view: _RunView) -> str:
    if not view.evaluated:
        chart = f'<p class="empty">No evaluated iteration yet; the KPI chart is {NOT_RECORDED}.</p>'
    else:
        chart = _kpi_chart(view)
    direction = "Lower" if view.metric.lower_is_better else "Higher"
    return (
        f'<section id="kpi">\n<h2>KPI per iteration</h2>\n{chart}\n'
        f'<p class="note">{direction} is better. Target: {_text(view.target_text)}.</p>\n</section>'
    )


def _iterations_section(view: _RunView) -> str:
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
        status = f"{entry.get('status', NOT_RECORDED)} ({entry.get('stage_completed') or 'nothing committed'})"
        phase = f"{label} ★ best" if label == view.best_label else label
        if item is None:
            rows.append([phase, "—", "—", "—", "—", "—", "—", status])
            continue
        delta = "—" if baseline is None or label == BASELINE else _delta(item.value - baseline.value, unit)
        rows.append(
            [
                phase,
                _metric_value(item.value, unit),
                delta,
                _number(item.threshold),
                _constraints_text(item),
                "yes" if item.passed else "no",
                item.checkpoint_kind,
                status,
            ]
        )
    best = [label == view.best_label for label in view.labels]
    return f'<section id="iterations">\n<h2>Iterations</h2>\n{_table(head, rows, highlight=best)}\n</section>'


def _constraints_text(item: _Evaluated) -> str:
    if not item.constraints:
        return "—"
    parts = []
    for name, value in sorted(item.constraints.items()):
        mark = " (failed)" if name in item.failed_constraints else ""
        parts.append(f"{name} {_number(value)}{mark}")
    missing = [name for name in item.failed_constraints if name.endswith(":missing")]
    return ", ".join(parts + missing)


def _growth_section(training_rows: Mapping[str, Mapping[str, int]] | None) -> str:
    title = "Training-set growth by source"
    if not training_rows:
        return _empty_section("growth", title, f"Training-set rows by source: {NOT_RECORDED}.")
    labels = sorted(training_rows, key=_label_order)
    sources = _source_order(training_rows)
    head = ["Phase", *sources, "Total", "Δ"]
    rows = []
    previous: int | None = None
    for label in labels:
        total = sum(training_rows[label].values())
        delta = "—" if previous is None else f"{total - previous:+d}"
        rows.append([label, *(_number(training_rows[label].get(source)) for source in sources), str(total), delta])
        previous = total
    chart = _stacked_bars(labels, sources, training_rows)
    return f'<section id="growth">\n<h2>{title}</h2>\n{chart}\n{_table(head, rows)}\n</section>'


def _source_order(training_rows: Mapping[str, Mapping[str, int]]) -> list[str]:
    seen = {source for sources in training_rows.values() for source in sources}
    known = [source for source in _SOURCE_COLOURS if source in seen]
    return known + sorted(seen - set(known))


def _durations_section(state: Mapping[str, Any]) -> str:
    title = "Stage durations"
    durations = stage_durations(state) if state["events"] else []
    if not durations:
        return _empty_section("durations", title, "No stage has been committed yet.")
    summaries = {event.get("seq"): event.get("summary", "") for event in state["events"] if isinstance(event, Mapping)}
    head = ["#", "Phase", "Stage", "Status", "Duration", "Summary"]
    rows = [
        [str(d.seq), d.iter_label, d.stage, d.status, _duration(d.seconds), str(summaries.get(d.seq, ""))]
        for d in durations
    ]
    total = sum(d.seconds for d in durations)
    rows.append(["", "", "all stages", "", _duration(total), ""])
    chart = _duration_bars(durations)
    return f'<section id="durations">\n<h2>{title}</h2>\n{chart}\n{_table(head, rows)}\n</section>'


def _rca_section(view: _RunView, rca_gaps: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> str:
    title = "Root-cause analysis: top gaps"
    parts = []
    gaps = rca_gaps or {}
    analysed = {label for label in view.labels if "rca_gaps_parquet" in view.entries[label]}
    for label in sorted(set(gaps) | analysed, key=_label_order):
        entry = view.entries.get(label, {})
        threshold = entry.get("rca_threshold")
        targets = entry.get("rca_target_defects")
        lines = [f"<h3>{_text(label)}</h3>"]
        if _is_finite(threshold):
            lines.append(f"<p>Threshold at the contract's recall: {_text(_number(threshold))}</p>")
        if isinstance(targets, list) and targets:
            lines.append(f"<p>Target defect types: {_text(', '.join(str(t) for t in targets))}</p>")
        if gaps.get(label):
            head = ["Defect type", "Missed", "Forced FAR (%)", "Lowest score"]
            rows = [
                [str(g["label"]), _number(g.get("missed")), _number(g.get("forced_far_pct")), _number(g.get("lowest"))]
                for g in gaps[label]
            ]
            lines.append(_table(head, rows))
        else:
            lines.append(f'<p class="empty">Gaps table: {NOT_RECORDED}.</p>')
        parts.append("\n".join(lines))
    if not parts:
        return _empty_section("rca", title, f"RCA: {NOT_RECORDED}.")
    return f'<section id="rca">\n<h2>{title}</h2>\n' + "\n".join(parts) + "\n</section>"


def _augmentation_section(
    view: _RunView,
    augmentation: Mapping[str, Mapping[str, float]] | None,
    pool_share_pct: float | None,
) -> str:
    title = "SDG and mining counts"
    counts = augmentation or {}
    labels = sorted(
        set(counts) | {label for label in view.labels if _has_augmentation(view.entries[label])}, key=_label_order
    )
    names = sorted({name for values in counts.values() for name in values})
    parts = []
    if labels:
        head = ["Phase", "SDG allocated", "Mined rows", *names]
        rows = []
        for label in labels:
            entry = view.entries.get(label, {})
            sdg = "skipped" if entry.get("anomalygen_skipped") else _number(entry.get("anomalygen_amp_allocated"))
            mined = "skipped" if entry.get("data_mining_skipped") else _number(entry.get("mining_mined_count"))
            extra = counts.get(label, {})
            rows.append([label, sdg, mined, *(_number(extra.get(name)) for name in names)])
        parts.append(_table(head, rows))
        if not counts:
            parts.append(f'<p class="empty">Detailed SDG and mining counts: {NOT_RECORDED}.</p>')
    else:
        parts.append(f'<p class="empty">SDG and mining counts: {NOT_RECORDED}.</p>')
    parts.append(f"<p>Share of the mining pool used: {_text(_pool_share(view, pool_share_pct))}</p>")
    return f'<section id="augmentation">\n<h2>{title}</h2>\n' + "\n".join(parts) + "\n</section>"


def _has_augmentation(entry: Mapping[str, Any]) -> bool:
    keys = ("anomalygen_amp_allocated", "anomalygen_skipped", "mining_mined_count", "data_mining_skipped")
    return any(key in entry for key in keys)


def _pool_share(view: _RunView, share_pct: float | None) -> str:
    mined = sum(
        int(entry["mining_mined_count"])
        for entry in view.entries.values()
        if _is_count(entry.get("mining_mined_count"))
    )
    share = NOT_RECORDED if share_pct is None else f"{share_pct:.1f}%"
    return f"{share} ({mined} rows mined in total)"


def _handoff_section(state: Mapping[str, Any], view: _RunView, handoff: Mapping[str, Any] | None) -> str:
    title = "Final handoff"
    facts: list[tuple[str, str]] = []
    artifacts = state.get("final_artifacts")
    if isinstance(artifacts, Mapping):
        facts.extend((f"File: {name}", _plain(path)) for name, path in sorted(artifacts.items()))
    if handoff:
        facts.extend(_handoff_facts(handoff, view.metric))
    elif state["status"] == "complete":
        facts.append(("best_model.json content", NOT_RECORDED))
    if not facts:
        best = f"; best so far: {view.best_label}" if view.best_label else ""
        return _empty_section("handoff", title, f"The run has not handed off a model yet{best}.")
    items = "".join(f"<dt>{_text(name)}</dt><dd>{_text(value)}</dd>" for name, value in facts)
    return f'<section id="handoff">\n<h2>{title}</h2>\n<dl class="facts">{items}</dl>\n</section>'


def _handoff_facts(handoff: Mapping[str, Any], metric: _Metric) -> list[tuple[str, str]]:
    facts = [(key, _plain(handoff[key])) for key in _HANDOFF_KEYS if key in handoff]
    result = handoff.get("metric_result")
    if isinstance(result, Mapping) and _is_finite(result.get("value")):
        facts.append((metric.display_name, _metric_value(float(result["value"]), metric.unit)))
        facts.append(("Passed", "yes" if result.get("passed") is True else "no"))
    shown = {*_HANDOFF_KEYS, "metric_result", "metric_contract"}
    facts.extend(
        (key, _plain(value))
        for key, value in sorted(handoff.items())
        if key not in shown and not isinstance(value, Mapping | list)
    )
    return facts


def _empty_section(section_id: str, title: str, message: str) -> str:
    return f'<section id="{section_id}">\n<h2>{_text(title)}</h2>\n<p class="empty">{_text(message)}</p>\n</section>'


# ---------------------------------------------------------------------------------------------------------
# Charts (inline SVG; an SVG inside HTML needs no namespace declaration)


def _kpi_chart(view: _RunView) -> str:
    width, height, left, right, top, bottom = 720, 300, 80, 130, 20, 50
    values = [item.value for item in view.evaluated]
    target = view.metric.target
    low, high, ticks = _axis_scale([*values, *([target] if target is not None else [])])
    plot_w, plot_h = width - left - right, height - top - bottom

    def y_of(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    def x_of(index: int) -> float:
        return left + plot_w * (index + 0.5) / len(values)

    unit = view.metric.unit
    parts = [_axes(left, top, plot_w, plot_h, ticks, unit, y_of, view.metric.axis_title)]
    if target is not None:
        y = y_of(target)
        parts.append(
            f'<line class="target" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="{_RED}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="{_RED}">target {_text(view.metric.operator)} '
            f"{_text(_metric_value(target, unit))}</text>"
        )
    for index in range(1, len(values)):
        before, after = values[index - 1], values[index]
        better = after < before if view.metric.lower_is_better else after > before
        colour = _GREEN if better else (_GREY if after == before else _RED)
        parts.append(
            f'<line class="segment" x1="{x_of(index - 1):.1f}" y1="{y_of(before):.1f}" x2="{x_of(index):.1f}" '
            f'y2="{y_of(after):.1f}" stroke="{colour}" stroke-width="2"/>'
        )
    for index, item in enumerate(view.evaluated):
        x, y = x_of(index), y_of(item.value)
        colour = _GREEN if item.label == view.best_label else _GREY
        shown = _metric_value(item.value, unit)
        parts.append(
            f'<circle class="kpi-point" data-label="{_attr(item.label)}" data-value="{item.value!r}" '
            f'cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}" stroke="{_INK}">'
            f"<title>{_text(item.label)}: {_text(shown)}</title></circle>"
        )
        parts.append(f'<text x="{x:.1f}" y="{y - 10:.1f}" text-anchor="middle">{_text(shown)}</text>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 20}" text-anchor="middle">{_text(item.label)}</text>')
    return _svg(width, height, f"{view.metric.display_name} per iteration against the target", parts)


def _axis_scale(values: Sequence[float]) -> tuple[float, float, list[float]]:
    """An axis around `values` with some headroom, ending on round ticks: (low, high, ticks)."""
    low, high = min(values), max(values)
    # A flat series still needs a visible band around it.
    pad = (high - low) * 0.15 if high != low else abs(high) * 0.1 or 0.1
    padded_low, padded_high = low - pad, high + pad
    if low >= 0 > padded_low:  # a metric that never went negative keeps a non-negative axis
        padded_low = 0.0
    step = _round_step((padded_high - padded_low) / 5)
    first = math.floor(padded_low / step) * step
    last = math.ceil(padded_high / step) * step
    ticks = [round(first + step * index, 12) + 0.0 for index in range(round((last - first) / step) + 1)]
    return first, last, ticks


def _round_step(raw: float) -> float:
    """The smallest step of the form 1, 2, 2.5 or 5 times a power of ten that is at least `raw`."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(nice * power for nice in (1, 2, 2.5, 5, 10) if raw <= nice * power * (1 + 1e-9))


def _axes(
    left: float,
    top: float,
    plot_w: float,
    plot_h: float,
    ticks: Sequence[float],
    unit: str,
    y_of: Callable[[float], float],
    title: str,
) -> str:
    lines = [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="{_INK}"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{_INK}"/>',
    ]
    for value in ticks:
        y = y_of(value)
        lines.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e4e7eb"/>'
        )
        lines.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_text(_metric_value(value, unit))}</text>"
        )
    middle = top + plot_h / 2
    lines.append(
        f'<text x="16" y="{middle:.1f}" transform="rotate(-90 16 {middle:.1f})" text-anchor="middle">'
        f"{_text(title)}</text>"
    )
    return "\n".join(lines)


def _stacked_bars(labels: Sequence[str], sources: Sequence[str], rows: Mapping[str, Mapping[str, int]]) -> str:
    width, height, left, right, top, bottom = 720, 280, 70, 130, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max(sum(rows[label].values()) for label in labels) or 1
    scale = plot_h / (highest * 1.1)
    slot = plot_w / len(labels)
    bar = min(60.0, slot * 0.6)
    colours = _source_colours(sources)
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{_INK}"/>']
    parts.append(f'<text x="{left - 6}" y="{top + plot_h + 4}" text-anchor="end">0</text>')
    parts.append(
        f'<text x="{left - 6}" y="{top + plot_h - highest * scale + 4:.1f}" text-anchor="end">{highest}</text>'
    )
    for index, label in enumerate(labels):
        x = left + slot * index + (slot - bar) / 2
        base = top + plot_h
        for source in sources:
            rows_of_source = rows[label].get(source, 0)
            if not rows_of_source:
                continue
            segment = rows_of_source * scale
            base -= segment
            parts.append(
                f'<rect class="bar-segment" data-label="{_attr(label)}" data-source="{_attr(source)}" '
                f'x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{segment:.3f}" fill="{colours[source]}">'
                f"<title>{_text(label)} {_text(source)}: {rows_of_source}</title></rect>"
            )
        total = sum(rows[label].values())
        centre = x + bar / 2
        parts.append(f'<text x="{centre:.1f}" y="{base - 5:.1f}" text-anchor="middle">{total}</text>')
        parts.append(f'<text x="{centre:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{_text(label)}</text>')
    for index, source in enumerate(sources):
        y = top + 16 * index
        parts.append(f'<rect x="{left + plot_w + 16}" y="{y}" width="12" height="12" fill="{colours[source]}"/>')
        parts.append(f'<text x="{left + plot_w + 34}" y="{y + 10}">{_text(source)}</text>')
    return _svg(width, height, "Training-set rows by source per phase", parts)


def _source_colours(sources: Sequence[str]) -> dict[str, str]:
    others = [source for source in sources if source not in _SOURCE_COLOURS]
    colours = {source: _EXTRA_COLOURS[index % len(_EXTRA_COLOURS)] for index, source in enumerate(others)}
    return {**colours, **{s: c for s, c in _SOURCE_COLOURS.items() if s in sources}}


def _duration_bars(durations: Sequence[StageDuration]) -> str:
    row_h, left, bar_w, top = 20, 200, 420, 10
    width, height = left + bar_w + 90, top * 2 + row_h * len(durations)
    longest = max(d.seconds for d in durations) or 1.0
    parts = []
    for index, item in enumerate(durations):
        y = top + row_h * index
        length = bar_w * item.seconds / longest
        colour = _RED if item.status == "error" else "#3a86c8"
        name = f"#{item.seq} {item.iter_label}/{item.stage}"
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{_text(name)}</text>')
        parts.append(
            f'<rect class="duration-bar" data-seq="{item.seq}" data-seconds="{item.seconds!r}" x="{left}" '
            f'y="{y + 3}" width="{length:.3f}" height="{row_h - 6}" fill="{colour}"/>'
        )
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 14}">{_text(_duration(item.seconds))}</text>')
    return _svg(width, height, "Duration of every committed stage", parts)


def _svg(width: int, height: int, label: str, parts: Sequence[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_attr(label)}">\n' + "\n".join(parts) + "\n</svg>"
    )


# ---------------------------------------------------------------------------------------------------------
# HTML building blocks and formatting


_CSS = """
:root { --nvidia-green: #76b900; --red: #c2262d; --ink: #1f2933; --muted: #616e7c; --rule: #d9dee3; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1000px; padding: 24px; line-height: 1.45; }
h1 { border-bottom: 4px solid var(--nvidia-green); padding-bottom: 6px; }
h2 { margin-top: 32px; border-bottom: 1px solid var(--rule); padding-bottom: 4px; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
th, td { border: 1px solid var(--rule); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } tr.best td { background: #eef7dc; font-weight: 600; }
.status { padding: 2px 8px; border-radius: 4px; color: #fff; background: var(--muted); }
.status-complete { background: var(--nvidia-green); } .status-failed { background: var(--red); }
.status-in_progress { background: #3a86c8; }
.hard-stop { border: 3px solid var(--red); background: #fdecec; padding: 4px 16px 12px; margin-top: 24px; }
.hard-stop h2 { color: var(--red); border: none; } .hard-stop .reason { font-size: 18px; font-weight: 600; }
.empty, .note { color: var(--muted); }
svg.chart { max-width: 100%; height: auto; font-size: 12px; }
svg.chart text { fill: var(--ink); }
"""


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, highlight: Sequence[bool] = ()) -> str:
    header = "".join(f"<th>{_text(cell)}</th>" for cell in head)
    lines = [f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>"]
    for index, row in enumerate(rows):
        marked = index < len(highlight) and highlight[index]
        cells = "".join(f"<td>{_text(cell)}</td>" for cell in row)
        lines.append(f'<tr class="best">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    lines.append("</tbody>\n</table>")
    return "\n".join(lines)


def _text(value: object) -> str:
    return html.escape(str(value), quote=False)


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _plain(value: object) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "—" if value is None else str(value)


def _number(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _metric_value(value: float, unit: str) -> str:
    number = _number(float(value))
    if unit == "%":
        return f"{number}%"
    return f"{number} {unit}" if unit else number


def _delta(value: float, unit: str) -> str:
    number = f"{value:+.4g}"
    if unit == "%":
        return f"{number} pp"
    return f"{number} {unit}" if unit else number


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
