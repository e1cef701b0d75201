"""The pre-flight's result and its two renderings: markdown (Prefect artifact, approval gate) and plain text.

Sections hold markdown lines; the plain-text rendering aligns their tables in columns and drops the marks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aoi_pipeline.errors import Problem


@dataclass(frozen=True)
class PreflightSection:
    """One of the nine sections; `lines` are markdown."""

    number: int
    title: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class PreflightReport:
    """The outcome of the pre-flight: the nine sections, what blocks approval, and the plan to approve."""

    sections: tuple[PreflightSection, ...]
    blockers: tuple[Problem, ...]
    warnings: tuple[str, ...]
    plan: dict[str, Any]
    plan_hash: str
    run_name: str

    @property
    def ok(self) -> bool:
        return not self.blockers

    def status_line(self) -> str:
        if self.ok:
            return f"READY FOR APPROVAL: plan {self.plan_hash}"
        return f"BLOCKED: {len(self.blockers)} problem(s) to fix before the run can be approved"

    def summary(self) -> str:
        """The plan in one line: the paused run's state message and `aoi-pipeline approve`'s prompt show it."""
        config: dict[str, Any] = self.plan.get("config") or {}

        def sweep(phase: str) -> str:
            settings = config.get(phase) or {}
            count = settings.get("recommendations", 0)
            return f"{count} trial{'s' if count != 1 else ''}" if settings.get("enabled", True) else "off"

        deft = (config.get("deft") or {}).get("max_iterations", 0)
        gpus = (self.plan.get("gpus") or {}).get("count", 0)
        return (
            f"{self.plan.get('kpi_target') or 'no KPI target'} on {config.get('workspace', '?')}; "
            f"Phase 1 {sweep('phase1')}, DEFT up to {deft} iteration{'s' if deft != 1 else ''}, "
            f"Phase 3 {sweep('phase3')}; {self.plan.get('platform', '?')} platform, "
            f"{self.plan.get('runtime', '?')} runtime, {gpus} GPU{'s' if gpus != 1 else ''}"
        )

    def markdown(self) -> str:
        """The plan for the Prefect markdown artifact and the approval gate."""
        out = [f"# Pre-flight of {self.run_name}", "", f"**{self.status_line()}**", ""]
        if self.blockers:
            out += [f"## Blockers ({len(self.blockers)})", ""]
            out += [f"- **{md(p.where)}**: {md(p.what)}. Fix: {md(p.fix)}" for p in self.blockers]
            out.append("")
        if self.warnings:
            out += [f"## Warnings ({len(self.warnings)})", "", *(f"- {md(w)}" for w in self.warnings), ""]
        for section in self.sections:
            out += [f"## {section.number}. {section.title}", "", *section.lines, ""]
        return "\n".join(out).rstrip() + "\n"

    def text(self) -> str:
        """The same plan for a terminal: plain lines, aligned tables, no markdown."""
        out = [f"PRE-FLIGHT {self.run_name}", self.status_line(), ""]
        if self.blockers:
            out.append(f"Blockers ({len(self.blockers)}):")
            for problem in self.blockers:
                out += [f"  - {problem.where}: {problem.what}", f"    Fix: {problem.fix}"]
            out.append("")
        if self.warnings:
            out += [f"Warnings ({len(self.warnings)}):", *(f"  - {w}" for w in self.warnings), ""]
        for section in self.sections:
            heading = f"{section.number}. {section.title}"
            out += [heading, "-" * len(heading), *plain(section.lines), ""]
        return "\n".join(out).rstrip() + "\n"


def md(text: str) -> str:
    """Text safe inside a markdown line or table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """A markdown table; columns listed in `right` are right-aligned."""
    rule = ["---:" if index in right else "---" for index in range(len(header))]
    lines = [header, rule, *rows]
    return ["| " + " | ".join(md(cell) if line is not rule else cell for cell in line) + " |" for line in lines]


_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_RULE_CELL = re.compile(r":?-{3,}:?")


def plain(lines: Sequence[str]) -> list[str]:
    """Markdown lines as plain text: tables aligned in columns, emphasis and code marks removed."""
    out: list[str] = []
    rows: list[list[str]] = []
    for line in [*lines, ""]:
        if line.startswith("|"):
            cells = [_unmark(cell.strip()) for cell in _CELL_SPLIT.split(line.strip()[1:-1])]
            if not all(_RULE_CELL.fullmatch(cell) for cell in cells):
                rows.append(cells)
            continue
        if rows:
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows]
            rows = []
        out.append(_unmark(line))
    return out[:-1]


def _unmark(text: str) -> str:
    return text.replace("**", "").replace("`", "").replace("\\|", "|")
