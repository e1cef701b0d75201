"""The report's "Confirm split, control and seeds" section: what the run's figures were taken on and against.

Every KPI figure of the run is taken on the KPI set's confirm part (boards the loop never steered on) unless
the state says otherwise; this section names the split, shows per iteration the confirm figure beside the
steer figure (labelled as such: RCA and mining looked at those boards) and beside the control arm (the same
previous set plus as many random pool rows), and the final candidate's seed confirmation (mean, spread,
runner-up, whether it is told apart). It reads only the run state; a value not recorded is shown as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aoi_pipeline.core.report_html import html_table, html_text, is_finite
from aoi_pipeline.core.report_view import label_order

NOT_RECORDED = "not recorded"


def _value(entry: Mapping[str, Any], key: str) -> str:
    raw = entry.get(key)
    value = raw.get("value") if isinstance(raw, Mapping) else None
    return f"{value:.4g}" if is_finite(value) else "–"


def _split_text(split: object) -> str:
    if not isinstance(split, Mapping):
        return "KPI split: none recorded (a run of an earlier release): every figure is on the whole KPI set."
    source = split.get("source")
    if source == "whole_kpi_set":
        return "KPI split: none: the loop steered on the same KPI rows it is judged on, so its figures flatter it."
    origin = "kpi/confirm_set.csv" if source == "confirm_set_csv" else "a hash of the board name"
    return (
        f"KPI split by board ({origin}): {len(split.get('confirm_boards') or [])} confirm boards judge every "
        f"figure (gate, best iteration, handoff); {len(split.get('steer_boards') or [])} steer boards feed RCA "
        "and mining. No board is in both."
    )


def _seeds_text(seeds: object) -> str:
    if not isinstance(seeds, Mapping):
        return ""
    values = ", ".join(f"{value:.4g}" for value in seeds.get("values") or [])
    text = (
        f"Seeds: {html_text(seeds.get('candidate'))} over {len(seeds.get('values') or [])} trainings: "
        f"{values}; mean {seeds.get('mean', 0):.4g} ± {seeds.get('spread', 0):.4g} "
        f"({html_text(seeds.get('spread_kind'))})."
    )
    if seeds.get("runner_up") is not None:
        verdict = "beats it by more than the spread" if seeds.get("separated") else "is within the spread of it"
        text += (
            f" Runner-up {html_text(seeds.get('runner_up'))} at {seeds.get('runner_up_value', 0):.4g}: the candidate "
            f"{verdict}; the deliverable is {html_text(seeds.get('deliverable'))}."
        )
    return f"<p>{text}</p>"


def honest_section(state: Mapping[str, Any]) -> str:
    """The section's HTML (empty string before any iteration is evaluated)."""
    iterations = state.get("iterations") or {}
    evaluated = [
        label for label, entry in iterations.items() if isinstance(entry, Mapping) and "metric_result" in entry
    ]
    labels = sorted(evaluated, key=label_order)  # the page must not depend on the state's key order
    if not labels:
        return ""
    rows = [
        [
            html_text(label),
            _value(iterations[label], "metric_result"),
            _value(iterations[label], "steer_metric_result"),
            _value(iterations[label], "control_metric_result"),
        ]
        for label in labels
    ]
    head = ("iteration", "confirm (judged)", "steer (steered on)", "control: random rows")
    budget = state.get("pool_budget")
    budget_text = (
        f"<p>Pool budget: at most {budget.get('max_pool_share', 0):.0%} of {budget.get('pool_rows')} pool rows.</p>"
        if isinstance(budget, Mapping)
        else ""
    )
    return (
        '<section id="confirm-split">\n<h2>Confirm split, control and seeds</h2>\n'
        f"<p>{html_text(_split_text(state.get('kpi_split')))}</p>\n{html_table(head, rows)}\n"
        f"{_seeds_text(state.get('confirm_seeds'))}{budget_text}\n</section>"
    )
