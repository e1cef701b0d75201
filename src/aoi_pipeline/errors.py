"""The one error hierarchy of aoi-pipeline.

Every error the product raises on purpose is an `AoiPipelineError` made of one or more `Problem`s. A
problem names where the fault is (file, row, column or spec key), what is wrong (with the offending value)
and how to fix it, so a user can act on the message without reading code. Validators collect every problem
they find and raise once, so a user fixes a CSV in one pass instead of one error per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

# A message is read by a person: a part longer than this (a pasted file, an expanded YAML alias bomb) is cut.
MAX_PART_CHARS = 2000
MAX_LISTED_PROBLEMS = 200


def _capped(text: str) -> str:
    text = str(text)
    if len(text) <= MAX_PART_CHARS:
        return text
    return f"{text[:MAX_PART_CHARS]}... ({len(text) - MAX_PART_CHARS} more characters cut)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input."""

    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{_capped(self.where)}: {_capped(self.what)}. Fix: {_capped(self.fix)}"


class AoiPipelineError(Exception):
    """Root of every error aoi-pipeline raises on purpose."""

    def __init__(self, problems: Problem | Iterable[Problem], *, summary: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = (problems,) if isinstance(problems, Problem) else tuple(problems)
        if not self.problems:
            raise ValueError("an AoiPipelineError needs at least one Problem")
        self.summary = summary
        super().__init__(self.render())

    @classmethod
    def at(cls, where: str, what: str, fix: str) -> Self:
        """Build the error for a single problem."""
        return cls(Problem(where, what, fix))

    def render(self) -> str:
        """The message: one line per problem, after an optional summary line."""
        lines = [str(problem) for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"... and {len(self.problems) - MAX_LISTED_PROBLEMS} more problems not listed")
        if self.summary or len(lines) > 1:
            head = _capped(self.summary or f"{len(self.problems)} problems found")
            return "\n".join([head, *(f"  - {line}" for line in lines)])
        return lines[0]


class DatasetError(AoiPipelineError):
    """A dataset CSV, its images, the mining pool or the workspace layout is invalid."""


class LeakageError(DatasetError):
    """The same sample appears in two sets that must stay disjoint."""


class SpecError(AoiPipelineError):
    """A TAO experiment spec (or an override of one) is invalid."""


class MetricContractError(AoiPipelineError):
    """A KPI target, metric contract, evaluator result or inference CSV for scoring is invalid."""


class StateError(AoiPipelineError):
    """The run state file is unreadable, or a commit to it is invalid."""


class WorkspaceLockedError(StateError):
    """Another live run holds the workspace lock."""


class ConfigError(AoiPipelineError):
    """A pipeline configuration is invalid."""


class RuntimeJobError(AoiPipelineError):
    """A job of the reference runtime (`aoi-changenet`) failed while running, e.g. training diverged."""


class JobError(AoiPipelineError):
    """A TAO job (or its reference-runtime stand-in) did not succeed."""


class ProgramJobError(JobError):
    """The job's program failed (bad spec, data, code, a zero-step run): a hard stop, never retried."""


class InfrastructureJobError(JobError):
    """The machine, container runtime or scheduler failed the job: the caller may retry it."""


class TrialInfrastructureError(InfrastructureJobError):
    """An AutoML trial's job failed for a reason outside the program (lost node, full disk, no runtime).

    Retriable; `failure` holds the job's classified failure (`aoi_pipeline.jobs.failures.Failure`).
    """

    failure: Any = None


class TrialCancelledError(AoiPipelineError):
    """An AutoML trial's job was cancelled; the trial has no outcome and must not be retried."""


class PublishError(AoiPipelineError):
    """Publishing a run's deliverable to object storage failed; the deliverable stays in the workspace."""
