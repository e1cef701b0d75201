"""The KPI metric contract: what "good enough" means for a run, how it is measured and how results compare.

A contract names one primary metric with a comparison (`FAR < 5%`), optional constraints that must also hold
(`recall_pct >= 100`), and the evaluator that produces the numbers: the builtin `far_at_recall`, an external
command, or an artifact file another producer writes. Every evaluator yields the same result document;
`check_result` validates it and recomputes pass/fail (an evaluator's own `passed` is never trusted), and
`pick_best` chooses among candidates: those meeting every constraint first, then the best value in the
contract's direction, ties to the earlier candidate.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aoi_pipeline.core import far
from aoi_pipeline.core.files import atomic_write_json
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
DEFAULT_COMMAND_TIMEOUT_S = 600.0
STDERR_TAIL_CHARS = 2000

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_WORD_OPS = r"lte|gte|lt|le|gt|ge"
_PRIMARY_OP = re.compile(rf"<=|>=|<|>|==|=|\s(?:{_WORD_OPS})\s", re.IGNORECASE)
_VALUE = re.compile(rf"\s*({_NUMBER})\s*(.*?)\s*", re.IGNORECASE)
_CONTEXT_SPLIT = re.compile(r"\bat\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"\s*(?:,|\band\b)\s*", re.IGNORECASE)
_CLAUSE = re.compile(
    rf"\s*(?P<display>.+?)\s*(?P<op><=|>=|<|>|=|\s(?:{_WORD_OPS})\s)\s*(?P<value>{_NUMBER})\s*(?P<unit>.*?)\s*",
    re.IGNORECASE,
)
_TARGET_FIX = "write e.g. 'FAR < 5% at Recall=100%' or 'FAR <= 2% at Recall=99.5%'"


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
            raise MetricContractError.at(where, f"expected a mapping, got {type(d).__name__}", _TARGET_FIX)
        problems: list[Problem] = []
        evaluator = _evaluator_from(d.get("evaluator"), f"{where}.evaluator", problems)
        constraints = _constraints_from(d.get("constraints", []), f"{where}.constraints", problems)
        fields = {key: d.get(key) for key in ("name", "display_name", "operator", "target", "unit")}
        fields["operator"] = _operator(fields["operator"], f"{where}.operator", problems)
        fields["target"] = _finite(fields["target"], f"{where}.target", problems)
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


def _finite(raw: Any, where: str, problems: list[Problem]) -> float:
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
                target=_finite(item.get("target"), f"{at}.target", problems),
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


# ------------------------------------------------------------------------------------- compact targets


def _slug(display: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", display.lower()).strip("_")


def _metric_name(display: str, unit: str) -> str:
    """`FAR` + `%` -> `far_pct`, `Recall` + `%` -> `recall_pct`, `Escape cost` -> `escape_cost`."""
    name = _slug(display)
    if unit == "%" and not name.endswith("_pct"):
        name = f"{name}_pct"
    return name


def parse_target(text: str, *, evaluator: Evaluator | None = None) -> MetricContract:
    """A contract from a compact target such as `FAR < 5% at Recall=100%` (case-insensitive).

    Grammar: `<display name> <op> <number><unit> [at <constraint> [and|, <constraint>]...]` with op one of
    `< <= > >=` or `lt le lte gt ge gte`; a constraint `Recall=99.5%` means `recall_pct >= 99.5`. A FAR target
    uses the builtin `far_at_recall` at the recall it names (100 % when none). Any other metric needs an
    `evaluator` (command or artifact).
    """
    if not isinstance(text, str) or not text.strip():
        raise MetricContractError.at("target", f"empty KPI target {text!r}", _TARGET_FIX)
    head, _, context = _split_context(text)
    display, op, target, unit = _parse_primary(head, text)
    constraints = tuple(_parse_clause(clause, text) for clause in _CLAUSE_SPLIT.split(context) if clause.strip())
    name = _metric_name(display, unit)
    if name == "far" and not unit:
        raise MetricContractError.at(
            "target",
            f"{text!r} gives FAR without a unit: a fraction and a percentage would differ 100-fold",
            "write FAR as a percentage, e.g. FAR < 5%",
        )
    if name == FAR_NAME:
        return _far_contract(display, op, target, constraints, text, evaluator)
    if evaluator is None:
        raise MetricContractError.at(
            "target",
            f"{display!r} is a custom metric: only FAR has a builtin evaluator",
            "configure a command evaluator (an executable taking --inference-csv and --output-json) "
            "or an artifact evaluator for it",
        )
    return _build(name, display, op, target, unit, evaluator, constraints, text)


def _split_context(text: str) -> tuple[str, str, str]:
    match = _PRIMARY_OP.search(text)
    if match is None:
        raise MetricContractError.at("target", f"{text!r} has no comparison operator", _TARGET_FIX)
    rest = text[match.end() :]
    context = _CONTEXT_SPLIT.search(rest)
    if context is None:
        return text, "", ""
    cut = match.end() + context.start()
    return text[:cut], "at", text[cut + len(context.group(0)) :]


def _parse_primary(head: str, text: str) -> tuple[str, str, float, str]:
    match = _PRIMARY_OP.search(head)
    assert match is not None  # _split_context found one
    display = head[: match.start()].strip()
    op_text = match.group(0).strip()
    if op_text in ("=", "=="):
        raise MetricContractError.at(
            "target", f"{text!r} asks for equality; a KPI target is a bound", "use <, <=, > or >="
        )
    value = _VALUE.fullmatch(head[match.end() :])
    if not display or value is None:
        raise MetricContractError.at("target", f"cannot read {text!r} as <name> <op> <number><unit>", _TARGET_FIX)
    return display, OPERATOR_ALIASES[op_text.lower()], _number(value.group(1), text), value.group(2)


def _number(raw: str, text: str) -> float:
    number = float(raw)
    if not math.isfinite(number):
        raise MetricContractError.at("target", f"{raw!r} in {text!r} is not a finite number", _TARGET_FIX)
    return number


def _parse_clause(clause: str, text: str) -> Constraint:
    match = _CLAUSE.fullmatch(clause)
    if match is None:
        raise MetricContractError.at(
            "target", f"cannot read the condition {clause.strip()!r} in {text!r}", "write e.g. at Recall=100%"
        )
    op_text = match.group("op").strip().lower()
    operator = ">=" if op_text == "=" else OPERATOR_ALIASES[op_text]
    display, unit = match.group("display").strip(), match.group("unit")
    return Constraint(_metric_name(display, unit), display, operator, _number(match.group("value"), text), unit)


def _far_contract(
    display: str,
    op: str,
    target: float,
    constraints: tuple[Constraint, ...],
    text: str,
    evaluator: Evaluator | None,
) -> MetricContract:
    recall = next((c for c in constraints if _slug(c.display_name) == "recall"), None)
    if recall is not None and (recall.operator != ">=" or recall.unit != "%"):
        raise MetricContractError.at(
            "target",
            f"the recall condition in {text!r} must be a lower bound in %",
            "write Recall=99.5% or Recall >= 99.5%",
        )
    recall_pct = recall.target if recall is not None else 100.0
    if not constraints:
        constraints = (Constraint(RECALL_NAME, "Recall", ">=", recall_pct, "%"),)
    return _build(FAR_NAME, display, op, target, "%", evaluator or far_evaluator(recall_pct), constraints, text)


def _build(
    name: str,
    display: str,
    op: str,
    target: float,
    unit: str,
    evaluator: Evaluator,
    constraints: tuple[Constraint, ...],
    text: str,
) -> MetricContract:
    try:
        return MetricContract(name, display, op, target, unit, evaluator, constraints)
    except MetricContractError as exc:
        raise MetricContractError(exc.problems, summary=f"target {text!r} is not a valid metric contract") from None


def _format_number(value: float) -> str:
    """The shortest text that reads back as the same float (`5`, `99.5`, `1e-05`)."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _format_value(value: float, unit: str) -> str:
    number = _format_number(value)
    if unit == "%":
        return f"{number}%"
    return f"{number} {unit}" if unit else number


def render_target(contract: MetricContract) -> str:
    """The compact text of a contract: `parse_target(render_target(c)) == c` (custom: pass its evaluator)."""
    text = f"{contract.display_name} {contract.operator} {_format_value(contract.target, contract.unit)}"
    clauses = []
    for constraint in contract.constraints:
        operator = "=" if constraint.operator == ">=" else f" {constraint.operator} "
        clauses.append(f"{constraint.display_name}{operator}{_format_value(constraint.target, constraint.unit)}")
    return f"{text} at {' and '.join(clauses)}" if clauses else text


def compare(value: float, operator: str, target: float) -> bool:
    """`value <operator> target`; operator aliases accepted; NaN never satisfies a bound."""
    op = OPERATOR_ALIASES.get(operator.strip().lower()) if isinstance(operator, str) else None
    if op is None:
        raise MetricContractError.at("operator", f"unknown operator {operator!r}", "use <, <=, > or >=")
    if math.isnan(value) or math.isnan(target):
        return False
    return {"<": value < target, "<=": value <= target, ">": value > target, ">=": value >= target}[op]


# --------------------------------------------------------------------------------------------- results


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
    value = _finite(raw.get("value"), f"{where}: value", problems)
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
        threshold = _finite(threshold, f"{where}: threshold", problems)
    constraints = raw.get("constraints")
    if not isinstance(constraints, Mapping):
        problems.append(Problem(f"{where}: constraints", f"expected a mapping, got {constraints!r}", _RESULT_FIX))
        constraints = {}
    checked = {
        str(key): _finite(number, f"{where}: constraints.{key}", problems) for key, number in constraints.items()
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


def evaluate_inference_csv(
    contract: MetricContract,
    inference_csv: Path,
    *,
    output_json: Path | None = None,
    iter_label: str | None = None,
    timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
) -> MetricResult:
    """Run the contract's evaluator on an inference CSV and return the checked result.

    builtin: FAR at the contract's recall, computed here. command: runs `<path> <args...> --inference-csv
    <abs> --output-json <abs>` (no shell, `timeout_s`) and reads the JSON it writes. artifact: reads the file
    `path_template.format(iter_label=...)`. With `output_json` the result document is written there
    atomically, and only once it has passed `check_result`, so a failing evaluator leaves no evidence file.
    """
    evaluator = contract.evaluator
    if evaluator.type == "builtin":
        rows = far.read_scored_csv(Path(inference_csv))
        raw = far.far_result_json(far.far_at_recall(rows, contract.recall_target_pct or 100.0), contract)
        source = str(inference_csv)
    elif evaluator.type == "command":
        raw, source = _run_command(evaluator, Path(inference_csv), timeout_s)
    else:
        raw, source = _read_artifact(evaluator, iter_label)
    result = check_result(contract, raw, where=source)
    if output_json is not None and Path(source).resolve() != Path(output_json).resolve():
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_json, raw)
    return result


def _run_command(evaluator: Evaluator, inference_csv: Path, timeout_s: float) -> tuple[Mapping[str, Any], str]:
    csv_path = inference_csv.resolve()
    if not csv_path.is_file():
        raise MetricContractError.at(
            str(csv_path), "the inference CSV does not exist", "run inference first (it writes inference.csv)"
        )
    executable = str(evaluator.path)
    # The command writes into a scratch file: a result that fails the checks never reaches output_json.
    with tempfile.TemporaryDirectory(prefix="aoi-metric-") as scratch:
        raw = _invoke(executable, evaluator.args, csv_path, Path(scratch) / "metric_result.json", timeout_s)
    return raw, f"evaluator command {executable}"


def _invoke(
    executable: str, args: Sequence[str], csv_path: Path, json_path: Path, timeout_s: float
) -> Mapping[str, Any]:
    argv = [executable, *args, "--inference-csv", str(csv_path), "--output-json", str(json_path)]
    where = f"evaluator command {executable}"
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise MetricContractError.at(where, "the executable does not exist", _COMMAND_FIX) from None
    except PermissionError:
        raise MetricContractError.at(where, "the file is not executable", "chmod +x it") from None
    except OSError as exc:
        raise MetricContractError.at(where, f"cannot start it ({exc})", _COMMAND_FIX) from None
    except subprocess.TimeoutExpired as exc:
        raise MetricContractError.at(
            where,
            f"no result after {timeout_s:g} s; stderr tail: {_tail(exc.stderr)!r}",
            "make the evaluator finish sooner or raise the timeout",
        ) from None
    if completed.returncode != 0:
        raise MetricContractError.at(
            where,
            f"exited with status {completed.returncode}; stderr tail: {_tail(completed.stderr)!r}",
            "fix the evaluator (run the argv by hand: " + " ".join(argv) + ")",
        )
    return _read_json(json_path, f"{where} wrote no result to --output-json")


_COMMAND_FIX = "point evaluator.path at an executable that accepts --inference-csv and --output-json"


def _tail(stream: str | bytes | None) -> str:
    if stream is None:
        return ""
    text = stream.decode(errors="replace") if isinstance(stream, bytes) else stream
    return text[-STDERR_TAIL_CHARS:].strip()


def _read_artifact(evaluator: Evaluator, iter_label: str | None) -> tuple[Mapping[str, Any], str]:
    if not iter_label:
        raise MetricContractError.at(
            "iter_label",
            f"the artifact evaluator ({evaluator.producer}) needs the iteration label to find its file",
            "pass iter_label, e.g. baseline or iter1",
        )
    path = str(evaluator.path_template).format(iter_label=iter_label)
    return _read_json(Path(path), f"artifact {path} of {evaluator.producer} is missing"), path


def _read_json(path: Path, missing: str) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricContractError.at(str(path), missing, _RESULT_FIX) from None
    except OSError as exc:
        raise MetricContractError.at(str(path), f"cannot read the result ({exc})", _RESULT_FIX) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetricContractError.at(
            f"{path}:{exc.lineno}:{exc.colno}", f"the result is not valid JSON ({exc.msg})", _RESULT_FIX
        ) from None


# ------------------------------------------------------------------------------------------- selection


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
