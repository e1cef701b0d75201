"""The compact KPI target text: `FAR < 5% at Recall=100%` to a metric contract and back.

`parse_target` reads the text users write in the config and on the command line (case-insensitive, operator
words accepted, a recall condition meaning a lower bound) into a validated `MetricContract`; `render_target`
writes a contract back so that parsing the rendering gives the same contract.
"""

from __future__ import annotations

import math
import re

from aoi_pipeline.core.metric_contract import (
    FAR_NAME,
    OPERATOR_ALIASES,
    RECALL_NAME,
    TARGET_FIX,
    Constraint,
    Evaluator,
    MetricContract,
    far_evaluator,
)
from aoi_pipeline.errors import MetricContractError

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
        raise MetricContractError.at("target", f"empty KPI target {text!r}", TARGET_FIX)
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
        raise MetricContractError.at("target", f"{text!r} has no comparison operator", TARGET_FIX)
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
        raise MetricContractError.at("target", f"cannot read {text!r} as <name> <op> <number><unit>", TARGET_FIX)
    return display, OPERATOR_ALIASES[op_text.lower()], _number(value.group(1), text), value.group(2)


def _number(raw: str, text: str) -> float:
    number = float(raw)
    if not math.isfinite(number):
        raise MetricContractError.at("target", f"{raw!r} in {text!r} is not a finite number", TARGET_FIX)
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
