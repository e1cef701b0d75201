"""The KPI metric contract: what "good enough" means for a run, and how two values compare against it.

A contract names one primary metric with a comparison (`FAR < 5%`), optional constraints that must also hold
(`recall_pct >= 100`), and the evaluator that produces the numbers: the builtin `far_at_recall`, an external
command, or an artifact file another producer writes. Construction validates the whole contract and
`from_dict` reads the state-file shape, reporting every problem at once. The compact target text lives in
`metric_target`, evaluator results and the choice among them in `metric_result`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aoi_pipeline.errors import MetricContractError, Problem

OPERATORS: tuple[str, ...] = ("<", "<=", ">", ">=")
OPERATOR_ALIASES: Mapping[str, str] = {
    "lt": "<",
    "le": "<=",
    "lte": "<=",
    "gt": ">",
    "ge": ">=",
    "gte": ">=",
    **{op: op for op in OPERATORS},
}
FAR_NAME = "far_pct"
RECALL_NAME = "recall_pct"
BUILTIN_FAR = "far_at_recall"

TARGET_FIX = "write e.g. 'FAR < 5% at Recall=100%' or 'FAR <= 2% at Recall=99.5%'"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Constraint:
    """A secondary metric that must hold for a result to pass (e.g. recall_pct >= 100 %)."""

    name: str
    display_name: str
    operator: str
    target: float
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "operator": self.operator,
            "target": self.target,
            "unit": self.unit,
        }


@dataclass(frozen=True)
class Evaluator:
    """Where results come from: `builtin` (id + parameters), `command` (path + args) or `artifact`."""

    type: Literal["builtin", "command", "artifact"]
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None
    args: tuple[str, ...] = ()
    producer: str | None = None
    path_template: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.type == "builtin":
            return {"type": "builtin", "id": self.id, "parameters": dict(self.parameters)}
        if self.type == "command":
            return {"type": "command", "path": self.path, "args": list(self.args)}
        return {"type": "artifact", "producer": self.producer, "path_template": self.path_template}


def far_evaluator(recall_target_pct: float = 100.0) -> Evaluator:
    """The builtin FAR-at-recall evaluator."""
    return Evaluator("builtin", id=BUILTIN_FAR, parameters={"recall_target_pct": float(recall_target_pct)})


@dataclass(frozen=True)
class MetricContract:
    """The KPI target of a run; construction validates it (MetricContractError listing every problem)."""

    name: str
    display_name: str
    operator: str
    target: float
    unit: str
    evaluator: Evaluator
    constraints: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        problems = _contract_problems(self, "metric_contract")
        if problems:
            raise MetricContractError(problems, summary=f"invalid metric contract {self.display_name!r}")

    @property
    def recall_target_pct(self) -> float | None:
        """The recall the builtin FAR evaluator operates at, or None for other evaluators."""
        if self.evaluator.type == "builtin" and self.evaluator.id == BUILTIN_FAR:
            return float(self.evaluator.parameters.get("recall_target_pct", 100.0))
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "operator": self.operator,
            "target": self.target,
            "unit": self.unit,
            "evaluator": self.evaluator.to_dict(),
            "constraints": [constraint.to_dict() for constraint in self.constraints],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "metric_contract") -> MetricContract:
        """Read the state-file shape; operator aliases are accepted, every problem is reported at once."""
        if not isinstance(d, Mapping):
            raise MetricContractError.at(where, f"expected a mapping, got {type(d).__name__}", TARGET_FIX)
        problems: list[Problem] = []
        evaluator = _evaluator_from(d.get("evaluator"), f"{where}.evaluator", problems)
        constraints = _constraints_from(d.get("constraints", []), f"{where}.constraints", problems)
        fields = {key: d.get(key) for key in ("name", "display_name", "operator", "target", "unit")}
        fields["operator"] = _operator(fields["operator"], f"{where}.operator", problems)
        fields["target"] = finite_number(fields["target"], f"{where}.target", problems)
        if problems:
            raise MetricContractError(problems, summary=f"{where}: invalid metric contract")
        try:
            return cls(**fields, evaluator=evaluator, constraints=constraints)  # type: ignore[arg-type]
        except MetricContractError as exc:
            raise MetricContractError(
                [Problem(p.where.replace("metric_contract", where, 1), p.what, p.fix) for p in exc.problems],
                summary=f"{where}: invalid metric contract",
            ) from None


def _operator(raw: Any, where: str, problems: list[Problem]) -> str:
    op = OPERATOR_ALIASES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if op is None:
        problems.append(Problem(where, f"unknown operator {raw!r}", "use one of <, <=, >, >= (or lt, le, gt, ge)"))
        return "<"
    return op


def finite_number(raw: Any, where: str, problems: list[Problem]) -> float:
    """`raw` as a float when it is a finite number; otherwise a problem is recorded and 0.0 stands in."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        problems.append(Problem(where, f"expected a finite number, got {raw!r}", "write a number such as 5.0"))
        return 0.0
    return float(raw)


def _evaluator_from(raw: Any, where: str, problems: list[Problem]) -> Evaluator:
    if not isinstance(raw, Mapping) or raw.get("type") not in ("builtin", "command", "artifact"):
        kind = raw.get("type") if isinstance(raw, Mapping) else raw
        problems.append(
            Problem(
                where,
                f"evaluator type {kind!r} is not builtin, command or artifact",
                "configure {type: builtin, id: far_at_recall}, {type: command, path: /abs/exe, args: [...]} "
                "or {type: artifact, producer: ..., path_template: /abs/{iter_label}.json}",
            )
        )
        return far_evaluator()
    args = raw.get("args") or ()
    if not isinstance(args, list | tuple) or not all(isinstance(arg, str) for arg in args):
        problems.append(Problem(f"{where}.args", f"args must be a list of strings, got {args!r}", "quote each"))
        args = ()
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        problems.append(Problem(f"{where}.parameters", f"expected a mapping, got {parameters!r}", "write {...}"))
        parameters = {}
    return Evaluator(
        type=raw["type"],
        id=raw.get("id"),
        parameters=dict(parameters),
        path=raw.get("path"),
        args=tuple(args),
        producer=raw.get("producer"),
        path_template=raw.get("path_template"),
    )


def _constraints_from(raw: Any, where: str, problems: list[Problem]) -> tuple[Constraint, ...]:
    if not isinstance(raw, list | tuple):
        problems.append(Problem(where, f"expected a list, got {raw!r}", "write constraints as a list"))
        return ()
    constraints = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(at, f"expected a mapping, got {item!r}", "write {name, operator, target, ...}"))
            continue
        constraints.append(
            Constraint(
                name=item.get("name"),  # type: ignore[arg-type]
                display_name=item.get("display_name"),  # type: ignore[arg-type]
                operator=_operator(item.get("operator"), f"{at}.operator", problems),
                target=finite_number(item.get("target"), f"{at}.target", problems),
                unit=item.get("unit", ""),
            )
        )
    return tuple(constraints)


def _contract_problems(contract: MetricContract, where: str) -> list[Problem]:
    problems = _named_problems(contract, where)
    names = [constraint.name for constraint in contract.constraints]
    for index, constraint in enumerate(contract.constraints):
        problems += _named_problems(constraint, f"{where}.constraints[{index}]")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(
            Problem(
                f"{where}.constraints",
                f"duplicate constraint name(s) {duplicates}",
                "give each a unique name",
            )
        )
    problems += _evaluator_problems(contract, f"{where}.evaluator")
    return problems


def _named_problems(item: MetricContract | Constraint, where: str) -> list[Problem]:
    problems = []
    if not isinstance(item.name, str) or not _NAME.fullmatch(item.name):
        problems.append(
            Problem(f"{where}.name", f"{item.name!r} is not a metric name", "use lower-case [a-z][a-z0-9_]*")
        )
    if not isinstance(item.display_name, str) or not item.display_name.strip():
        problems.append(Problem(f"{where}.display_name", "the display name is empty", "name it, e.g. FAR"))
    if item.operator not in OPERATORS:
        problems.append(Problem(f"{where}.operator", f"unknown operator {item.operator!r}", "use <, <=, > or >="))
    target = item.target
    if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target):
        problems.append(Problem(f"{where}.target", f"target {target!r} is not a finite number", "use a number"))
    if not isinstance(item.unit, str):
        problems.append(Problem(f"{where}.unit", f"unit {item.unit!r} is not text", "use e.g. '%' or ''"))
    return problems


def _evaluator_problems(contract: MetricContract, where: str) -> list[Problem]:
    evaluator = contract.evaluator
    if evaluator.type == "builtin":
        return _builtin_problems(contract, where)
    if evaluator.type == "command":
        if not isinstance(evaluator.path, str) or not evaluator.path.startswith("/"):
            return [
                Problem(
                    f"{where}.path",
                    f"the command path {evaluator.path!r} is not absolute",
                    "give the absolute path of an executable that accepts --inference-csv and --output-json",
                )
            ]
        return []
    if evaluator.type == "artifact":
        template = evaluator.path_template
        if not isinstance(template, str) or not template.startswith("/") or "{iter_label}" not in template:
            return [
                Problem(
                    f"{where}.path_template",
                    f"{template!r} is not an absolute path containing {{iter_label}}",
                    "use e.g. /abs/metrics/{iter_label}/metric_result.json",
                )
            ]
        return []
    return [Problem(f"{where}.type", f"unknown evaluator type {evaluator.type!r}", "use builtin, command or artifact")]


def _builtin_problems(contract: MetricContract, where: str) -> list[Problem]:
    evaluator = contract.evaluator
    if evaluator.id != BUILTIN_FAR:
        return [Problem(f"{where}.id", f"unknown builtin evaluator {evaluator.id!r}", f"use {BUILTIN_FAR}")]
    problems = []
    if contract.name != FAR_NAME or contract.unit != "%":
        problems.append(
            Problem(
                where,
                f"{BUILTIN_FAR} measures {FAR_NAME} in %, but the contract is {contract.name!r} in {contract.unit!r}",
                "write the target as a FAR percentage, e.g. FAR < 5% at Recall=100%",
            )
        )
    if isinstance(contract.target, int | float) and not 0.0 <= contract.target <= 100.0:
        problems.append(
            Problem(
                "metric_contract.target",
                f"a FAR target of {contract.target!r} % lies outside 0 to 100 %",
                "use a percentage from 0 to 100, e.g. FAR < 5%",
            )
        )
    recall = evaluator.parameters.get("recall_target_pct", 100.0)
    if isinstance(recall, bool) or not isinstance(recall, int | float) or not 0.0 < recall <= 100.0:
        problems.append(
            Problem(f"{where}.parameters.recall_target_pct", f"{recall!r} is outside (0, 100]", "use e.g. 100")
        )
    for index, constraint in enumerate(contract.constraints):
        if constraint.name != RECALL_NAME:
            problems.append(
                Problem(
                    f"metric_contract.constraints[{index}]",
                    f"{BUILTIN_FAR} reports only {RECALL_NAME}, so {constraint.name!r} could never be met",
                    "drop it, or use a command evaluator that reports it",
                )
            )
    return problems


def compare(value: float, operator: str, target: float) -> bool:
    """`value <operator> target`; operator aliases accepted; NaN never satisfies a bound."""
    op = OPERATOR_ALIASES.get(operator.strip().lower()) if isinstance(operator, str) else None
    if op is None:
        raise MetricContractError.at("operator", f"unknown operator {operator!r}", "use <, <=, > or >=")
    if math.isnan(value) or math.isnan(target):
        return False
    return {"<": value < target, "<=": value <= target, ">": value > target, ">=": value >= target}[op]
