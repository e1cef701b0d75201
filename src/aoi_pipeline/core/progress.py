"""Where a run is, in one line: phase k/3, trial or iteration k/N, elapsed and estimated time left.

The time left is measured, never guessed: the mean duration of the units (trials, DEFT iterations) this
phase has finished, times the rounds still to run (parallel trials share a round). Before the first unit
of a phase has finished, the time left is "unknown until the first <unit> ends". The time left in the whole
run adds the phases still ahead, each from its own measured unit (this run's, else an earlier run's, scaled
to this run's epochs); while one of them has none, the run's time left is said to be unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aoi_pipeline.core.report_html import duration_text
from aoi_pipeline.core.state import stage_durations

#: Pipeline phase -> (its number of the three, what it does).
PHASES = {"phase1": (1, "AutoML"), "phase2": (2, "DEFT loop"), "phase3": (3, "AutoML refinement")}


@dataclass(frozen=True)
class PhaseAhead:
    """A phase still to run after the current one: its units, one unit's measured seconds (None: not yet)."""

    phase: str
    units: int
    unit_s: float | None
    parallel: int = 1

    @property
    def seconds(self) -> float | None:
        if self.units <= 0:
            return 0.0
        return None if self.unit_s is None else self.unit_s * math.ceil(self.units / max(1, self.parallel))


@dataclass(frozen=True)
class Progress:
    """One phase's progress: `done` of `total` units, the durations of the finished ones, the run's clock."""

    phase: str
    unit: str  # "trial" or "iteration"
    done: int
    total: int
    elapsed_s: float
    unit_seconds: Sequence[float] = ()
    parallel: int = 1
    ahead: Sequence[PhaseAhead] = ()

    @property
    def share_pct(self) -> float:
        """How much of this phase is done, 0 to 100."""
        return 100.0 if self.total <= 0 else min(100.0, 100.0 * self.done / self.total)

    @property
    def left_s(self) -> float | None:
        """Measured time left in this phase (None until a unit has finished)."""
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            return 0.0
        if not self.unit_seconds:
            return None
        mean = sum(self.unit_seconds) / len(self.unit_seconds)
        return mean * math.ceil(remaining / max(1, self.parallel))

    @property
    def run_left_s(self) -> float | None:
        """Measured time left in the whole run: this phase's and every phase ahead (None while one is unknown)."""
        parts = [self.left_s, *(phase.seconds for phase in self.ahead)]
        return None if any(part is None for part in parts) else sum(part for part in parts if part is not None)

    def line(self) -> str:
        """E.g. "phase 1/3 (AutoML) · trial 2/3 · elapsed 1m 20s · about 40.0 s left in this phase"."""
        number, name = PHASES.get(self.phase, (0, self.phase))
        left = self.left_s
        if left is None:
            estimate = f"time left unknown until the first {self.unit} ends"
        else:
            measured = len(self.unit_seconds)
            estimate = f"about {duration_text(left)} left in this phase (from {measured} measured {self.unit}(s))"
        return (
            f"phase {number}/3 ({name}) · {self.unit} {self.done}/{self.total} · "
            f"elapsed {duration_text(self.elapsed_s)} · {estimate}{self._run_estimate()}"
        )

    def _run_estimate(self) -> str:
        if not self.ahead or self.left_s is None:  # an unknown phase already says the run's time is unknown
            return ""
        run_left = self.run_left_s
        if run_left is not None:
            return f" · about {duration_text(run_left)} left in the run"
        unmeasured = [_phase_name(phase.phase) for phase in self.ahead if phase.seconds is None]
        return f" · time left in the run unknown: nothing measured yet for {', '.join(unmeasured)}"


def _phase_name(phase: str) -> str:
    number, name = PHASES.get(phase, (0, phase))
    return f"phase {number} ({name})"


def trial_seconds(table: Sequence[Mapping[str, Any]]) -> list[float]:
    """Durations of the finished trials of a trials table (rows with a `duration_s` and a final state)."""
    return [
        float(row["duration_s"])
        for row in table
        if row.get("state") != "running" and isinstance(row.get("duration_s"), int | float)
    ]


def iteration_seconds(state: Mapping[str, Any]) -> list[float]:
    """Durations of the DEFT iterations (`iter<N>`) whose evaluation is committed: the sum of their stages."""
    totals: dict[str, float] = {}
    evaluated = set()
    for item in stage_durations(state):
        if not item.iter_label.startswith("iter"):
            continue
        totals[item.iter_label] = totals.get(item.iter_label, 0.0) + item.seconds
        if item.stage == "evaluate" and item.status == "ok":
            evaluated.add(item.iter_label)
    return [totals[label] for label in sorted(evaluated)]
