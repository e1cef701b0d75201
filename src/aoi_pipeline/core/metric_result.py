"""Evaluator results: checked against the metric contract, produced from an inference CSV, and compared.

Every evaluator yields the same result document (name, value, unit, threshold, constraints, diagnostics);
`check_result` validates it and recomputes pass/fail (an evaluator's own `passed` is never trusted).
`evaluate_inference_csv` produces it with the builtin FAR evaluator, from an artifact file, or through a
`CommandEvaluator` the caller passes in, so the core itself starts no process. `pick_best` chooses among
candidates: those meeting every constraint first, then the best value in the contract's direction, ties to
the earlier candidate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aoi_pipeline.core import far
from aoi_pipeline.core.far import FarResult
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.metric_contract import Evaluator, MetricContract, compare, finite_number
from aoi_pipeline.errors import MetricContractError, Problem


class CommandEvaluator(Protocol):
    """Runs a `command` evaluator on an inference CSV; returns the result document and where it came from.

    The document must be read with `read_result_json` from a scratch file, so a result that then fails
    `check_result` never reaches the run's output.
    """

    def __call__(self, evaluator: Evaluator, inference_csv: Path) -> tuple[Mapping[str, Any], str]: ...


@dataclass(frozen=True)
class MetricResult:
    """A validated evaluator result with pass/fail recomputed from the contract."""

    name: str
    value: float
    unit: str
    threshold: float | None
    constraints: Mapping[str, float]
    diagnostics: Mapping[str, Any]
    passed: bool
    failed_constraints: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "threshold": self.threshold,
            "constraints": dict(self.constraints),
            "diagnostics": dict(self.diagnostics),
            "passed": self.passed,
            "failed_constraints": list(self.failed_constraints),
        }


def check_result(contract: MetricContract, raw: Mapping[str, Any], *, where: str) -> MetricResult:
    """Validate an evaluator result against the contract and recompute `passed`.

    Required: `name` equal to the contract's, a finite numeric `value`, `unit` exactly the contract's, a
    `constraints` mapping of finite numbers. A constraint the contract names but the result lacks fails as
    `<name>:missing`; one that does not hold fails as `<name>`. The evaluator's own `passed` is ignored.
    """
    if not isinstance(raw, Mapping):
        raise MetricContractError.at(where, f"the result is a {type(raw).__name__}, not a mapping", _RESULT_FIX)
    problems: list[Problem] = []
    if raw.get("name") != contract.name:
        problems.append(
            Problem(
                f"{where}: name",
                f"name {raw.get('name')!r} is not the contract's {contract.name!r}",
                _RESULT_FIX,
            )
        )
    value = finite_number(raw.get("value"), f"{where}: value", problems)
    if raw.get("unit") != contract.unit:
        problems.append(
            Problem(
                f"{where}: unit",
                f"unit {raw.get('unit')!r} is not the contract's {contract.unit!r}",
                _RESULT_FIX,
            )
        )
    threshold = raw.get("threshold")
    if threshold is not None:
        threshold = finite_number(threshold, f"{where}: threshold", problems)
    constraints = raw.get("constraints")
    if not isinstance(constraints, Mapping):
        problems.append(Problem(f"{where}: constraints", f"expected a mapping, got {constraints!r}", _RESULT_FIX))
        constraints = {}
    checked = {
        str(key): finite_number(number, f"{where}: constraints.{key}", problems) for key, number in constraints.items()
    }
    diagnostics = raw.get("diagnostics") or {}
    if not isinstance(diagnostics, Mapping):
        problems.append(Problem(f"{where}: diagnostics", f"expected a mapping, got {diagnostics!r}", _RESULT_FIX))
        diagnostics = {}
    if problems:
        raise MetricContractError(problems, summary=f"{where}: invalid evaluator result")
    failed = tuple(_failed_constraints(contract, checked))
    passed = compare(value, contract.operator, contract.target) and not failed
    return MetricResult(contract.name, value, contract.unit, threshold, checked, dict(diagnostics), passed, failed)


_RESULT_FIX = (
    "the evaluator must write {name, value, unit, constraints: {...}} matching the contract (threshold and "
    "diagnostics optional)"
)


def _failed_constraints(contract: MetricContract, values: Mapping[str, float]) -> list[str]:
    failed = []
    for constraint in contract.constraints:
        if constraint.name not in values:
            failed.append(f"{constraint.name}:missing")
        elif not compare(values[constraint.name], constraint.operator, constraint.target):
            failed.append(constraint.name)
    return failed


def far_result_json(res: FarResult, contract: MetricContract) -> dict[str, Any]:
    """The evaluator result document (name, value, unit, threshold, constraints, diagnostics)."""
    return {
        "name": contract.name,
        "value": res.far_pct,
        "unit": contract.unit,
        "threshold": res.threshold,
        "constraints": {"recall_pct": res.recall_pct},
        "diagnostics": {
            "requested_recall_pct": res.requested_recall_pct,
            "recall_pct": res.recall_pct,
            "precision_pct": res.precision_pct,
            "f1": res.f1,
            "tp": res.tp,
            "fp": res.fp,
            "tn": res.tn,
            "fn": res.fn,
            "n_pass": res.n_pass,
            "n_defect": res.n_defect,
            "prediction_rule": "defect iff siamese_score >= threshold",
            "strict_threshold": res.strict_threshold,
        },
    }


def evaluate_inference_csv(
    contract: MetricContract,
    inference_csv: Path,
    *,
    output_json: Path | None = None,
    iter_label: str | None = None,
    run_command: CommandEvaluator | None = None,
) -> MetricResult:
    """Run the contract's evaluator on an inference CSV and return the checked result.

    builtin: FAR at the contract's recall, computed here. command: `run_command` runs the evaluator and returns
    the JSON it wrote (the core starts no process; `aoi_pipeline.jobs.metric_command` does). artifact: reads
    the file `path_template.format(iter_label=...)`. With `output_json` the result document is written there
    atomically, and only once it has passed `check_result`, so a failing evaluator leaves no evidence file.
    """
    evaluator = contract.evaluator
    raw: Mapping[str, Any]
    if evaluator.type == "builtin":
        rows = far.read_scored_csv(Path(inference_csv))
        raw = far_result_json(far.far_at_recall(rows, contract.recall_target_pct or 100.0), contract)
        source = str(inference_csv)
    elif evaluator.type == "command":
        if run_command is None:
            raise MetricContractError.at(
                f"metric_contract.evaluator ({evaluator.path})",
                "this caller cannot run a command evaluator: no command runner was passed",
                "pass run_command=aoi_pipeline.jobs.metric_command.run_evaluator_command",
            )
        raw, source = run_command(evaluator, Path(inference_csv))
    else:
        raw, source = _read_artifact(evaluator, iter_label)
    result = check_result(contract, raw, where=source)
    if output_json is not None and Path(source).resolve() != Path(output_json).resolve():
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_json, raw)
    return result


def _read_artifact(evaluator: Evaluator, iter_label: str | None) -> tuple[Mapping[str, Any], str]:
    if not iter_label:
        raise MetricContractError.at(
            "iter_label",
            f"the artifact evaluator ({evaluator.producer}) needs the iteration label to find its file",
            "pass iter_label, e.g. baseline or iter1",
        )
    path = str(evaluator.path_template).format(iter_label=iter_label)
    return read_result_json(Path(path), f"artifact {path} of {evaluator.producer} is missing"), path


def read_result_json(path: Path, missing: str) -> Mapping[str, Any]:
    """The result document an evaluator wrote to `path`; `missing` says what it means when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricContractError.at(str(path), missing, _RESULT_FIX) from None
    except OSError as exc:
        raise MetricContractError.at(str(path), f"cannot read the result ({exc})", _RESULT_FIX) from None
    try:
        document: Mapping[str, Any] = json.loads(text)
        return document
    except json.JSONDecodeError as exc:
        raise MetricContractError.at(
            f"{path}:{exc.lineno}:{exc.colno}", f"the result is not valid JSON ({exc.msg})", _RESULT_FIX
        ) from None


@dataclass(frozen=True)
class Candidate:
    """One checkpoint or iteration competing for best."""

    label: str
    result: MetricResult


def pick_best(contract: MetricContract, candidates: Sequence[Candidate]) -> Candidate | None:
    """The best candidate: those meeting every constraint first, then the best value, ties to the earlier.

    Direction comes from the contract's operator (`<`/`<=` lower is better), never from the metric name. When
    no candidate meets its constraints, the best of all is returned; its `result.passed` stays False.
    """
    for candidate in candidates:
        if candidate.result.name != contract.name:
            raise MetricContractError.at(
                f"candidate {candidate.label}",
                f"its result measures {candidate.result.name!r}, not the contract's {contract.name!r}",
                "compare results of the same contract only",
            )
    if not candidates:
        return None
    sign = 1.0 if contract.operator in ("<", "<=") else -1.0
    ranked = sorted(
        enumerate(candidates),
        key=lambda item: (bool(item[1].result.failed_constraints), sign * item[1].result.value, item[0]),
    )
    return ranked[0][1]
