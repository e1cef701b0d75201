"""The inline SVG charts of the run report: KPI per iteration, rows by source, durations, optimisation history.

An SVG inside HTML needs no namespace declaration; each chart carries a text label and per-point titles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from aoi_pipeline.core.report_html import GREEN, GREY, INK, RED, duration_text, html_attr, html_text, metric_value_text
from aoi_pipeline.core.report_view import RunView
from aoi_pipeline.core.state import StageDuration

SOURCE_COLOURS = {"base": "#5b6b7f", "sdg": "#f0a020", "mined": "#3a86c8"}
_EXTRA_COLOURS = ("#8e6bbf", "#2a9d8f", "#e76f51", "#6d6875")


def kpi_chart(view: RunView) -> str:
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
            f'stroke="{RED}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="{RED}">target {html_text(view.metric.operator)} '
            f"{html_text(metric_value_text(target, unit))}</text>"
        )
    for index in range(1, len(values)):
        before, after = values[index - 1], values[index]
        better = after < before if view.metric.lower_is_better else after > before
        colour = GREEN if better else (GREY if after == before else RED)
        parts.append(
            f'<line class="segment" x1="{x_of(index - 1):.1f}" y1="{y_of(before):.1f}" x2="{x_of(index):.1f}" '
            f'y2="{y_of(after):.1f}" stroke="{colour}" stroke-width="2"/>'
        )
    for index, item in enumerate(view.evaluated):
        x, y = x_of(index), y_of(item.value)
        colour = GREEN if item.label == view.best_label else GREY
        shown = metric_value_text(item.value, unit)
        parts.append(
            f'<circle class="kpi-point" data-label="{html_attr(item.label)}" data-value="{item.value!r}" '
            f'cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}" stroke="{INK}">'
            f"<title>{html_text(item.label)}: {html_text(shown)}</title></circle>"
        )
        parts.append(f'<text x="{x:.1f}" y="{y - 10:.1f}" text-anchor="middle">{html_text(shown)}</text>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 20}" text-anchor="middle">{html_text(item.label)}</text>')
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
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="{INK}"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>',
    ]
    for value in ticks:
        y = y_of(value)
        lines.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e4e7eb"/>'
        )
        lines.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{html_text(metric_value_text(value, unit))}</text>"
        )
    middle = top + plot_h / 2
    lines.append(
        f'<text x="16" y="{middle:.1f}" transform="rotate(-90 16 {middle:.1f})" text-anchor="middle">'
        f"{html_text(title)}</text>"
    )
    return "\n".join(lines)


def stacked_bars(labels: Sequence[str], sources: Sequence[str], rows: Mapping[str, Mapping[str, int]]) -> str:
    width, height, left, right, top, bottom = 720, 280, 70, 130, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max(sum(rows[label].values()) for label in labels) or 1
    scale = plot_h / (highest * 1.1)
    slot = plot_w / len(labels)
    bar = min(60.0, slot * 0.6)
    colours = _source_colours(sources)
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>']
    parts.append(f'<text x="{left - 6}" y="{top + plot_h + 4}" text-anchor="end">0</text>')
    parts.append(
        f'<text x="{left - 6}" y="{top + plot_h - highest * scale + 4:.1f}" text-anchor="end">{highest}</text>'
    )
    for index, label in enumerate(labels):
        x = left + slot * index + (slot - bar) / 2
        base: float = top + plot_h
        for source in sources:
            rows_of_source = rows[label].get(source, 0)
            if not rows_of_source:
                continue
            segment = rows_of_source * scale
            base -= segment
            parts.append(
                f'<rect class="bar-segment" data-label="{html_attr(label)}" data-source="{html_attr(source)}" '
                f'x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{segment:.3f}" fill="{colours[source]}">'
                f"<title>{html_text(label)} {html_text(source)}: {rows_of_source}</title></rect>"
            )
        total = sum(rows[label].values())
        centre = x + bar / 2
        parts.append(f'<text x="{centre:.1f}" y="{base - 5:.1f}" text-anchor="middle">{total}</text>')
        parts.append(f'<text x="{centre:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{html_text(label)}</text>')
    for index, source in enumerate(sources):
        y = top + 16 * index
        parts.append(f'<rect x="{left + plot_w + 16}" y="{y}" width="12" height="12" fill="{colours[source]}"/>')
        parts.append(f'<text x="{left + plot_w + 34}" y="{y + 10}">{html_text(source)}</text>')
    return _svg(width, height, "Training-set rows by source per phase", parts)


def _source_colours(sources: Sequence[str]) -> dict[str, str]:
    others = [source for source in sources if source not in SOURCE_COLOURS]
    colours = {source: _EXTRA_COLOURS[index % len(_EXTRA_COLOURS)] for index, source in enumerate(others)}
    return {**colours, **{s: c for s, c in SOURCE_COLOURS.items() if s in sources}}


def duration_bars(durations: Sequence[StageDuration]) -> str:
    row_h, left, bar_w, top = 20, 200, 420, 10
    width, height = left + bar_w + 90, top * 2 + row_h * len(durations)
    longest = max(d.seconds for d in durations) or 1.0
    parts = []
    for index, item in enumerate(durations):
        y = top + row_h * index
        length = bar_w * item.seconds / longest
        colour = RED if item.status == "error" else "#3a86c8"
        name = f"#{item.seq} {item.iter_label}/{item.stage}"
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{html_text(name)}</text>')
        parts.append(
            f'<rect class="duration-bar" data-seq="{item.seq}" data-seconds="{item.seconds!r}" x="{left}" '
            f'y="{y + 3}" width="{length:.3f}" height="{row_h - 6}" fill="{colour}"/>'
        )
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 14}">{html_text(duration_text(item.seconds))}</text>')
    return _svg(width, height, "Duration of every committed stage", parts)


def history_chart(trials: Sequence[tuple[int, float | None]], unit: str, title: str) -> str:
    """An optimisation history: each trial's value by trial number (a failed trial, value None, as a red
    cross on the axis) and the best value so far as a green step line; lower is better."""
    width, height, left, right, top, bottom = 720, 280, 80, 30, 20, 50
    values = [value for _, value in trials if value is not None]
    low, high, ticks = _axis_scale(values or [0.0])
    plot_w, plot_h = width - left - right, height - top - bottom

    def y_of(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    def x_of(index: int) -> float:
        return left + plot_w * (index + 0.5) / len(trials)

    parts = [_axes(left, top, plot_w, plot_h, ticks, unit, y_of, title)]
    best: float | None = None
    steps: list[str] = []
    for index, (number, value) in enumerate(trials):
        x = x_of(index)
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{number}</text>')
        if value is None:
            y = top + plot_h
            parts.append(
                f'<path class="trial-failed" data-trial="{number}" d="M{x - 4:.1f},{y - 4:.1f} l8,8 m0,-8 l-8,8" '
                f'stroke="{RED}" stroke-width="2"><title>trial {number}: no value (failed)</title></path>'
            )
            continue
        best = value if best is None else min(best, value)
        steps.append(f"{x:.1f},{y_of(best):.1f}")
        parts.append(
            f'<circle class="trial-point" data-trial="{number}" data-value="{value!r}" cx="{x:.1f}" '
            f'cy="{y_of(value):.1f}" r="5" fill="{GREY}" stroke="{INK}">'
            f"<title>trial {number}: {html_text(metric_value_text(value, unit))}</title></circle>"
        )
    if steps:
        parts.append(
            f'<polyline class="best-so-far" points="{" ".join(steps)}" fill="none" stroke="{GREEN}" stroke-width="2"/>'
        )
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">trial</text>')
    return _svg(width, height, f"{title} per trial, and the best so far", parts)


def _svg(width: int, height: int, label: str, parts: Sequence[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{html_attr(label)}">\n' + "\n".join(parts) + "\n</svg>"
    )
