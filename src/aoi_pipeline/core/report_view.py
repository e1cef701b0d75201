"""What the run state says, in the shape the report's sections need: the metric, each evaluated phase, the best.

Entries are read through the state's typed views (`IterationEntry`); the best phase is chosen by the metric
contract's own selection rule, so the report never disagrees with the handoff.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import Candidate, MetricResult, pick_best
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.report_html import NOT_RECORDED, is_finite
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state_entries import IterationEntry, iteration_entries
from aoi_pipeline.errors import AoiPipelineError

CHECKPOINT_KINDS = ("best_val", "latest")


@dataclass(frozen=True)
class Metric:
    name: str
    display_name: str
    operator: str
    target: float | None
    unit: str

    @property
    def lower_is_better(self) -> bool:
        return self.operator in ("<", "<=", "lt", "le", "lte")

    @property
    def axis_title(self) -> str:
        return f"{self.display_name} ({self.unit})" if self.unit else self.display_name


@dataclass(frozen=True)
class Evaluated:
    label: str
    value: float
    threshold: float | None
    constraints: Mapping[str, Any]
    failed_constraints: tuple[str, ...]
    passed: bool
    checkpoint_kind: str


@dataclass(frozen=True)
class RunView:
    metric: Metric
    target_text: str
    labels: tuple[str, ...]
    evaluated: tuple[Evaluated, ...]
    best_label: str | None
    entries: Mapping[str, IterationEntry]

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> RunView:
        contract = state["metric_contract"]
        metric = _metric_of(contract)
        entries = iteration_entries(state)
        labels = tuple(sorted(entries, key=label_order))
        evaluated = tuple(item for item in (_evaluated(label, entries[label]) for label in labels) if item)
        target_text = _target_text(contract, str(state["kpi_target"]))
        return cls(metric, target_text, labels, evaluated, _best_label(contract, metric, evaluated), entries)

    def result_of(self, label: str) -> Evaluated | None:
        return next((item for item in self.evaluated if item.label == label), None)


def _metric_of(contract: Mapping[str, Any]) -> Metric:
    target = contract.get("target")
    return Metric(
        name=str(contract.get("name", "metric")),
        display_name=str(contract.get("display_name") or contract.get("name") or "metric"),
        operator=str(contract.get("operator", "<")),
        target=float(target) if is_finite(target) else None,
        unit=str(contract.get("unit") or ""),
    )


def _target_text(contract: Mapping[str, Any], kpi_target: str) -> str:
    try:
        rendered = render_target(MetricContract.from_dict(contract))
    except AoiPipelineError:
        return kpi_target
    return kpi_target if rendered == kpi_target else f"{kpi_target} (contract: {rendered})"


def label_order(label: str) -> tuple[int, int, str]:
    if label == BASELINE:
        return (0, 0, label)
    match = re.fullmatch(r"iter([1-9][0-9]*)", label)
    if match:
        return (1, int(match.group(1)), label)
    return (2 if label == FINAL_AUTOML else 3, 0, label)


def _evaluated(label: str, entry: IterationEntry) -> Evaluated | None:
    """The iteration's recorded result; a legacy entry with only `far_pct` counts as one (deft-spec §4.4)."""
    result = entry.metric_result
    constraints: Mapping[str, Any]
    if result is not None and result.value is not None:
        value, constraints = result.value, result.constraints
        failed, passed = result.failed_constraints, result.passed
        threshold = entry.threshold if entry.threshold is not None else result.threshold
    elif entry.far_pct is not None:
        value, constraints, failed, passed = entry.far_pct, {}, (), False
        threshold = entry.threshold
    else:
        return None
    return Evaluated(
        label=label,
        value=value,
        threshold=threshold,
        constraints=constraints,
        failed_constraints=failed,
        passed=passed,
        checkpoint_kind=_checkpoint_kind(entry),
    )


def _checkpoint_kind(entry: IterationEntry) -> str:
    """The evaluated checkpoint: the inference folder the winner came from, else the kind train recorded.

    The kind recorded at train goes stale when evaluate picks the other checkpoint (deft-spec §14.15).
    """
    inference_csv = entry.inference_csv
    if inference_csv is not None and Path(inference_csv).parent.name in CHECKPOINT_KINDS:
        return Path(inference_csv).parent.name
    return entry.best_ckpt_kind or NOT_RECORDED


def _best_label(contract: Mapping[str, Any], metric: Metric, evaluated: Sequence[Evaluated]) -> str | None:
    """The best evaluated phase by the contract's own selection rule (constraints first, then the value)."""
    candidates = [
        Candidate(
            item.label,
            MetricResult(
                name=metric.name,
                value=item.value,
                unit=metric.unit,
                threshold=item.threshold,
                constraints={},
                diagnostics={},
                passed=item.passed,
                failed_constraints=item.failed_constraints,
            ),
        )
        for item in evaluated
    ]
    try:
        best = pick_best(MetricContract.from_dict(contract), candidates)
    except AoiPipelineError:
        return None
    return None if best is None else best.label
