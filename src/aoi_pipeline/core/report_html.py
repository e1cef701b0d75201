"""HTML building blocks of the DEFT loop report: the page shell and its CSS, tables, escaping, number texts.

Every text that reaches the page goes through `html_text` or `html_attr` (the report embeds file paths,
labels and messages read from disk); number texts say "—" for a value that was not recorded.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeGuard

NOT_RECORDED = "not recorded"
GREEN = "#76b900"
RED = "#c2262d"
GREY = "#b0b0b0"
INK = "#1f2933"


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
.warning { color: var(--red); font-weight: 600; }
pre.plan { white-space: pre-wrap; background: #f3f5f7; padding: 8px 12px; font-size: 13px; }
nav ol.toc { columns: 2; margin: 8px 0 0; }
svg.chart { max-width: 100%; height: auto; font-size: 12px; }
svg.chart text { fill: var(--ink); }
"""


def html_document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html_text(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, highlight: Sequence[bool] = ()) -> str:
    header = "".join(f"<th>{html_text(cell)}</th>" for cell in head)
    lines = [f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>"]
    for index, row in enumerate(rows):
        marked = index < len(highlight) and highlight[index]
        cells = "".join(f"<td>{html_text(cell)}</td>" for cell in row)
        lines.append(f'<tr class="best">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    lines.append("</tbody>\n</table>")
    return "\n".join(lines)


def html_text(value: object) -> str:
    return html.escape(str(value), quote=False)


def html_attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def plain_text(value: object) -> str:
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "—" if value is None else str(value)


def number_text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def metric_value_text(value: float, unit: str) -> str:
    number = number_text(float(value))
    if unit == "%":
        return f"{number}%"
    return f"{number} {unit}" if unit else number


def delta_text(value: float, unit: str) -> str:
    number = f"{value:+.4g}"
    if unit == "%":
        return f"{number} pp"
    return f"{number} {unit}" if unit else number


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
