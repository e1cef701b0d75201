"""Typed, read-only views of the iteration entries of `deft_state.json`, and the renaming of old keys.

Readers take an `IterationEntry` (and its `RecordedResult`) instead of indexing string-keyed dicts: a view
is frozen, carries only values of the expected type (anything else reads as not recorded), and says which
label and key is missing when a stage needs an artifact that was never committed. Keys written by older
releases under misleading names (`*_parquet` for tables that are CSV files) are renamed on load by
`normalise_legacy_keys`, so a run directory from before the rename still resumes; new writes use the new
names only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aoi_pipeline.errors import StateError

# Old key -> the key that holds the same artifact now (each of these tables always was a CSV file).
LEGACY_ENTRY_KEYS = MappingProxyType(
    {
        "rca_gaps_parquet": "rca_gaps_csv",
        "routing_mining_parquet": "routing_mining_csv",
        "routing_anomalygen_parquet": "routing_anomalygen_csv",
        "mining_mined_parquet": "mining_mined_csv",
        "mining_candidate_parquet": "mining_candidate_csv",
    }
)


def normalise_legacy_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Rename, in place, old entry keys to their current names (a current key wins over an old one)."""
    iterations = state.get("iterations")
    if not isinstance(iterations, dict):
        return state
    for entry in iterations.values():
        if not isinstance(entry, dict):
            continue
        for old, new in LEGACY_ENTRY_KEYS.items():
            if old in entry:
                value = entry.pop(old)
                entry.setdefault(new, value)
    return state


@dataclass(frozen=True)
class RecordedResult:
    """An evaluated iteration's metric result as `commit_stage` recorded it."""

    value: float | None
    passed: bool
    failed_constraints: tuple[str, ...] = ()
    constraints: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    evidence_path: str | None = None

    @classmethod
    def of(cls, raw: object) -> RecordedResult | None:
        if not isinstance(raw, Mapping):
            return None
        constraints = raw.get("constraints")
        return cls(
            value=_finite(raw.get("value")),
            passed=raw.get("passed") is True,
            failed_constraints=tuple(str(name) for name in raw.get("failed_constraints") or ()),
            constraints=MappingProxyType(dict(constraints))
            if isinstance(constraints, Mapping)
            else MappingProxyType({}),
            threshold=_finite(raw.get("threshold")),
            evidence_path=_text(raw.get("evidence_path")),
        )


@dataclass(frozen=True)
class IterationEntry:
    """One `iterations.<label>` entry; a key that is absent or of the wrong type reads as None."""

    label: str
    status: str | None = None
    stage_completed: str | None = None
    best_ckpt_path: str | None = None
    best_ckpt_kind: str | None = None
    training_spec: str | None = None
    inference_csv: str | None = None
    steer_inference_csv: str | None = None
    metric_result: RecordedResult | None = None
    steer_metric_result: RecordedResult | None = None
    control_metric_result: RecordedResult | None = None
    threshold: float | None = None
    far_pct: float | None = None
    rca_gaps_csv: str | None = None
    rca_threshold: float | None = None
    rca_target_defects: tuple[str, ...] = ()
    routing_mining_csv: str | None = None
    routing_anomalygen_csv: str | None = None
    anomalygen_sdg_csv: str | None = None
    anomalygen_amp_allocated: int | None = None
    anomalygen_skipped: bool = False
    data_mining_skipped: bool = False
    mining_mined_csv: str | None = None
    mining_mined_count: int | None = None
    combined_training_csv: str | None = None
    provenance_csv: str | None = None

    @classmethod
    def of(cls, label: str, raw: object) -> IterationEntry:
        data = normalise_legacy_keys({"iterations": {label: dict(raw)}}) if isinstance(raw, Mapping) else {}
        entry: Mapping[str, Any] = data.get("iterations", {}).get(label, {}) if data else {}
        texts = {name: _text(entry.get(name)) for name in _TEXT_FIELDS}
        defects = entry.get("rca_target_defects")
        return cls(
            label=label,
            metric_result=RecordedResult.of(entry.get("metric_result")),
            steer_metric_result=RecordedResult.of(entry.get("steer_metric_result")),
            control_metric_result=RecordedResult.of(entry.get("control_metric_result")),
            threshold=_finite(entry.get("threshold")),
            far_pct=_finite(entry.get("far_pct")),
            rca_threshold=_finite(entry.get("rca_threshold")),
            anomalygen_amp_allocated=_count(entry.get("anomalygen_amp_allocated")),
            rca_target_defects=tuple(d for d in defects if isinstance(d, str)) if isinstance(defects, list) else (),
            anomalygen_skipped=entry.get("anomalygen_skipped") is True,
            data_mining_skipped=entry.get("data_mining_skipped") is True,
            mining_mined_count=_count(entry.get("mining_mined_count")),
            **texts,
        )

    @property
    def passed(self) -> bool:
        """True only for an evaluated entry whose recorded result passed the metric contract."""
        return self.metric_result is not None and self.metric_result.passed

    def artifact(self, name: str) -> Path:
        """The recorded artifact path `name`; `StateError` naming label and key when it was never committed."""
        if name not in _TEXT_FIELDS:
            raise ValueError(f"{name!r} is not an artifact field of an iteration entry")
        value = getattr(self, name)
        if value is None:
            raise StateError.at(
                f"deft_state.json: iterations.{self.label}.{name}",
                "is not recorded, but the next stage needs it",
                f"resume the run so the stage that writes {name} for {self.label} is committed first",
            )
        return Path(value)


_TEXT_FIELDS = tuple(f.name for f in fields(IterationEntry) if f.name != "label" and f.type == "str | None")


def iteration_entry(state: Mapping[str, Any], label: str) -> IterationEntry:
    """The view of `iterations.<label>`; an empty view (nothing recorded) when the label has no entry."""
    return IterationEntry.of(label, state["iterations"].get(label, {}))


def iteration_entries(state: Mapping[str, Any]) -> dict[str, IterationEntry]:
    """Every iteration entry of the state, keyed by label (entries that are not mappings are left out)."""
    return {
        label: IterationEntry.of(label, raw) for label, raw in state["iterations"].items() if isinstance(raw, Mapping)
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
