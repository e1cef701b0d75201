"""What a check found: blockers (problems naming where, what and the fix) and warnings, in the order found."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aoi_pipeline.errors import Problem


@dataclass(frozen=True)
class Findings:
    """Blockers stop the approval; warnings are shown beside the plan and stop nothing."""

    blockers: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, blockers: Iterable[Problem] = (), warnings: Iterable[str] = ()) -> Findings:
        return cls(tuple(blockers), tuple(warnings))

    def __add__(self, other: Findings) -> Findings:
        return Findings(self.blockers + other.blockers, self.warnings + other.warnings)
