"""What the flow may add to the report beyond the run state (`extras`), as one typed pydantic model.

`ReportExtras.checked` validates a mapping and turns every validation error into a `Problem` that names the
place (`extras.<key>.<label>...`), what is wrong and the fix, then raises one `ConfigError` listing all of
them, before anything is rendered or written. Every key is optional; a key set to None counts as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError, with_config
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from aoi_pipeline.core.stages import ITER_LABEL_RE
from aoi_pipeline.errors import ConfigError, Problem

IterationLabel = Annotated[str, Strict(), StringConstraints(pattern=f"^(?:{ITER_LABEL_RE.pattern})$")]
RowCount = Annotated[int, Strict(), Field(ge=0)]
FiniteNumber = Annotated[float, Strict(), Field(allow_inf_nan=False)]
DefectType = Annotated[str, Strict(), StringConstraints(pattern=r"\S")]


@with_config(ConfigDict(extra="ignore"))
class RcaGap(TypedDict):
    """One defect type's gap of an RCA, as the report's RCA table shows it (other keys are not shown)."""

    label: DefectType
    missed: NotRequired[RowCount | None]
    forced_far_pct: NotRequired[FiniteNumber | None]
    lowest: NotRequired[FiniteNumber | None]


class ReportExtras(BaseModel):
    """Per-iteration rows by source, RCA gaps, SDG and mining counts, the pool share used, the handoff, the
    AutoML phases' trials by how they ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    training_rows_by_source: dict[IterationLabel, dict[Annotated[str, Strict()], RowCount]] | None = None
    rca_gaps: dict[IterationLabel, list[RcaGap]] | None = None
    sdg_and_mining: dict[IterationLabel, dict[Annotated[str, Strict()], FiniteNumber]] | None = None
    pool_share_used_pct: Annotated[float, Strict(), Field(ge=0.0, le=100.0, allow_inf_nan=False)] | None = None
    handoff: dict[str, Any] | None = None
    # Trials of each AutoML phase by how they ended (complete, pruned, failed, ...).
    automl_trials: dict[Literal["phase1", "phase3"], dict[Annotated[str, Strict()], RowCount]] | None = None

    @classmethod
    def checked(cls, extras: object) -> ReportExtras:
        """The validated extras; `ConfigError` naming every bad key, label and value at once."""
        if extras is None:
            return cls()
        if not isinstance(extras, Mapping):
            raise ConfigError.at("extras", f"must be a mapping, got {type(extras).__name__}", "pass a dict or None")
        try:
            return cls.model_validate(dict(extras))
        except ValidationError as error:
            problems = [_problem(detail) for detail in error.errors()]
            raise ConfigError(problems, summary="the report extras are invalid; no report was written") from None


EXTRAS_KEYS = tuple(ReportExtras.model_fields)
_LABEL_FIX = "key by baseline, iter<N> or final_automl"
_FIXES = {
    "training_rows_by_source": "pass {label: {source: rows}} with non-negative integer row counts",
    "rca_gaps": "pass {label: [gap rows]}, each with its defect type text under 'label' and numbers for "
    "missed (a count), forced_far_pct and lowest",
    "sdg_and_mining": "pass {label: {count name: number}} with finite numbers",
    "pool_share_used_pct": "pass 100 * rows mined so far / rows of the resolved pool (0 to 100)",
    "handoff": "pass the content of best_model.json (a mapping)",
    "automl_trials": "pass {phase1|phase3: {trial state: count}} with non-negative integer counts",
}


def _problem(detail: ErrorDetails) -> Problem:
    location = list(detail["loc"])
    is_key = bool(location) and location[-1] == "[key]"
    if is_key:
        location.pop()
    where = "extras" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)
    field = str(location[0]) if location else ""
    if detail["type"] == "extra_forbidden":
        return Problem(where, "unknown key", f"use only {', '.join(EXTRAS_KEYS)}")
    if is_key:
        return Problem(where, f"{location[-1]!r} is not an iteration label", _LABEL_FIX)
    if detail["type"] == "missing":
        return Problem(where, "is missing", _FIXES.get(field, "add it"))
    what = f"{detail['input']!r:.80} is not allowed: {detail['msg'][0].lower()}{detail['msg'][1:]}"
    return Problem(where, what, _FIXES.get(field, "see the render_report docstring"))
