"""Seeds: the final candidate confirmed over several retrainings, and whether it really beats the runner-up.

Run-to-run noise on real AOI data is several points of FAR, so one training's figure cannot tell two
candidates apart. The final candidate is retrained `deft.confirm_seeds - 1` more times (same CSV, recipe and
warm start, other seeds) and scored on the confirm part; its figure becomes the mean, its spread the sample
standard deviation of the values. It is the winner only when it beats the runner-up (the contract's second
best candidate) by more than that spread; otherwise the two are not told apart, and the run hands off the
candidate that needed less added data (the earlier one), saying why. Pure arithmetic on recorded values.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aoi_pipeline.core.stages import iteration_number


@dataclass(frozen=True)
class SeedConfirmation:
    """The final candidate's value per seed (its own training first) against the runner-up's value."""

    candidate: str
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    lower_is_better: bool
    runner_up: str | None = None
    runner_up_value: float | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        """Sample standard deviation over the seeds (0 with a single value: no spread was measured)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def margin(self) -> float | None:
        """How much better the candidate's mean is than the runner-up (positive = better)."""
        if self.runner_up_value is None:
            return None
        difference = self.runner_up_value - self.mean
        return difference if self.lower_is_better else -difference

    @property
    def separated(self) -> bool:
        """True when there is no runner-up, or the candidate beats it by more than the spread."""
        return self.margin is None or self.margin > self.spread

    @property
    def deliverable(self) -> str:
        """The candidate, or the earlier of the two when they are not told apart."""
        if self.separated or self.runner_up is None:
            return self.candidate
        return min((self.candidate, self.runner_up), key=_order)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "values": list(self.values),
            "seeds": list(self.seeds),
            "mean": self.mean,
            "spread": self.spread,
            "spread_kind": "sample standard deviation" if len(self.values) > 1 else "single training: not measured",
            "runner_up": self.runner_up,
            "runner_up_value": self.runner_up_value,
            "margin": self.margin,
            "separated": self.separated,
            "deliverable": self.deliverable,
        }


def _order(label: str) -> tuple[int, int]:
    """Earlier candidates first: the baseline, the iterations in order, Phase 3 last."""
    if label == "final_automl":
        return (2, 0)
    return (0 if label == "baseline" else 1, iteration_number(label))


def runner_up(ranked: Sequence[tuple[str, float]], candidate: str) -> tuple[str, float] | None:
    """The best-ranked (label, value) other than `candidate` (ranked best first)."""
    return next(((label, value) for label, value in ranked if label != candidate), None)


def from_dict(raw: Mapping[str, Any], *, lower_is_better: bool) -> SeedConfirmation:
    """A confirmation recorded by `to_dict` (the run state keeps it, so a rerun does not retrain)."""
    return SeedConfirmation(
        candidate=str(raw["candidate"]),
        values=tuple(float(value) for value in raw["values"]),
        seeds=tuple(int(seed) for seed in raw["seeds"]),
        lower_is_better=lower_is_better,
        runner_up=raw.get("runner_up"),
        runner_up_value=raw.get("runner_up_value"),
    )
