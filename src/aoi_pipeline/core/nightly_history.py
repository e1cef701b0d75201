"""The nightly history (one row per night) and the rule that promotes a night's candidate over the deployed model.

Each night appends one JSON line to `history.jsonl` in the nightly directory: when it ran, its decision
(`trained`, `skipped: nothing new`, `skipped: busy`, `expired`, `rejected`, `failed`), why, the rows added by
source, the deployed model's KPI value before and the candidate's after (both on the confirm split), whether it
promoted and why, the jobs launched and the GPU-hours spent. The promotion rule is the issue's evidence bar: the
candidate must beat the deployed model on the confirm split by more than the run-to-run spread; without a
measured spread there is no evidence, and the deployed model stays. Pure: values and a JSON-lines file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aoi_pipeline.errors import StateError

HISTORY_FILE = "history.jsonl"
TRAINED = "trained"
SKIPPED_NOTHING_NEW = "skipped: nothing new"
SKIPPED_BUSY = "skipped: busy"
EXPIRED = "expired"
REJECTED = "rejected"
FAILED = "failed"
DECISIONS = (TRAINED, SKIPPED_NOTHING_NEW, SKIPPED_BUSY, EXPIRED, REJECTED, FAILED)


@dataclass(frozen=True)
class NightRecord:
    """One night of the history."""

    night: str
    started_at: str
    decision: str
    reason: str = ""
    rows_added: Mapping[str, int] = field(default_factory=dict)
    kpi_before: float | None = None
    kpi_after: float | None = None
    promoted: bool = False
    promotion_reason: str = ""
    jobs: int = 0
    gpu_hours: float = 0.0
    policy_hash: str | None = None
    drift: str = ""
    run_dir: str | None = None
    handoff_version: int | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise StateError.at(
                f"night {self.night}: decision", f"{self.decision!r} is not a decision", f"use one of {DECISIONS}"
            )

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["rows_added"] = dict(self.rows_added)
        return record


def append_night(nightly_dir: Path, record: NightRecord) -> Path:
    """Append the night's row (one JSON line, flushed and synced)."""
    path = Path(nightly_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
        handle.flush()
    return path


def read_history(nightly_dir: Path) -> list[NightRecord]:
    """Every recorded night, oldest first; empty when no night ran yet."""
    path = Path(nightly_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    nights = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            nights.append(NightRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise StateError.at(
                f"{path}: line {number}", f"is not a night record ({error})", "delete or repair that line"
            ) from None
    return nights


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def history_table(nights: Sequence[NightRecord]) -> list[dict[str, Any]]:
    """The history as table rows (the Prefect table artifact, the CLI and the run report show these columns)."""
    return [
        {
            "night": night.night,
            "started": night.started_at,
            "decision": night.decision,
            "rows added": ", ".join(f"{source} {count}" for source, count in night.rows_added.items() if count)
            or "none",
            "KPI before": _number(night.kpi_before),
            "KPI after": _number(night.kpi_after),
            "promoted": "yes" if night.promoted else "no",
            "why": night.promotion_reason or night.reason,
            "jobs": night.jobs,
            "GPU-hours": f"{night.gpu_hours:.3g}",
        }
        for night in nights
    ]


def render_history(nights: Sequence[NightRecord]) -> str:
    """The history as plain text, one night per line (the CLI)."""
    if not nights:
        return "No night has run yet."
    rows = history_table(nights)
    columns = list(rows[0])
    widths = {column: max(len(column), *(len(str(row[column])) for row in rows)) for column in columns}
    lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
    lines += ["  ".join(str(row[column]).ljust(widths[column]) for column in columns) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class Promotion:
    """Whether the night's candidate replaces the deployed model, and why."""

    promote: bool
    reason: str


def promotion(
    *,
    candidate: str,
    deployed_value: float,
    candidate_value: float,
    spread: float | None,
    lower_is_better: bool,
    unit: str = "",
) -> Promotion:
    """Promote only when the candidate beats the deployed model on the confirm split by more than the spread."""
    if candidate == "baseline":
        return Promotion(False, "no candidate of tonight beat the deployed model on the confirm split")
    margin = deployed_value - candidate_value if lower_is_better else candidate_value - deployed_value
    figures = (
        f"{candidate} {candidate_value:.4g}{unit} against deployed {deployed_value:.4g}{unit} on the confirm split"
    )
    if spread is None:
        return Promotion(
            False,
            f"{figures}, but the run-to-run spread is not measured (set deft.confirm_seeds to 2 or more); "
            "the deployed model stays",
        )
    if margin > spread:
        return Promotion(True, f"{figures}: better by {margin:.4g}{unit}, more than the spread {spread:.4g}{unit}")
    return Promotion(
        False, f"{figures}: better by {margin:.4g}{unit}, not more than the spread {spread:.4g}{unit}; deployed stays"
    )
