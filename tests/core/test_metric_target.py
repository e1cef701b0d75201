"""Tests of the compact KPI target text: parsing `FAR < 5% at Recall=100%`, rendering, and the round trip."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.metric_contract import OPERATORS, Constraint, Evaluator, MetricContract, far_evaluator
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.errors import MetricContractError


def far_contract(op: str = "<", target: float = 5.0, recall: float = 100.0, display: str = "FAR") -> MetricContract:
    return MetricContract(
        name="far_pct",
        display_name=display,
        operator=op,
        target=target,
        unit="%",
        evaluator=Evaluator("builtin", id="far_at_recall", parameters={"recall_target_pct": recall}),
        constraints=(Constraint("recall_pct", "Recall", ">=", recall, "%"),),
    )


COMMAND = Evaluator("command", path="/opt/metrics/evaluate_cost.py", args=("--policy", "policy.json"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FAR < 5% at Recall=100%", far_contract("<", 5.0, 100.0)),
        ("FAR <= 2% at Recall=99.5%", far_contract("<=", 2.0, 99.5)),
        ("FAR < 10%", far_contract("<", 10.0, 100.0)),
        (
            "far lt 5 % at recall = 99 %",
            MetricContract(
                "far_pct",
                "far",
                "<",
                5.0,
                "%",
                far_evaluator(99.0),
                (Constraint("recall_pct", "recall", ">=", 99.0, "%"),),
            ),
        ),
        ("FAR<5%at Recall=100%", far_contract("<", 5.0, 100.0)),
        ("FAR le 1% AT Recall >= 98%", far_contract("<=", 1.0, 98.0)),
        ("FAR lte 0.1% at Recall=100%", far_contract("<=", 0.1, 100.0)),
        ("FAR gt 3%", far_contract(">", 3.0)),
        ("FAR ge 3%", far_contract(">=", 3.0)),
        ("FAR GTE 3%", far_contract(">=", 3.0)),
    ],
)
def test_parse_target(text: str, expected: MetricContract) -> None:
    assert parse_target(text) == expected


def test_parse_target_of_a_custom_metric_keeps_its_evaluator_and_constraints() -> None:
    contract = parse_target("Weighted escape cost <= 0.02 cost/board at Recall=99.5%", evaluator=COMMAND)
    assert contract.to_dict() == {
        "name": "weighted_escape_cost",
        "display_name": "Weighted escape cost",
        "operator": "<=",
        "target": 0.02,
        "unit": "cost/board",
        "evaluator": {
            "type": "command",
            "path": "/opt/metrics/evaluate_cost.py",
            "args": ["--policy", "policy.json"],
        },
        "constraints": [
            {"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 99.5, "unit": "%"}
        ],
    }
    assert contract.recall_target_pct is None
    assert render_target(contract) == "Weighted escape cost <= 0.02 cost/board at Recall=99.5%"


def test_render_target_examples() -> None:
    assert render_target(far_contract("<", 5.0, 100.0)) == "FAR < 5% at Recall=100%"
    assert render_target(far_contract("<=", 2.0, 99.5)) == "FAR <= 2% at Recall=99.5%"
    quality = parse_target("Quality score >= 0.9", evaluator=COMMAND)
    assert render_target(quality) == "Quality score >= 0.9"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("", "empty KPI target"),
        ("FAR 5%", "has no comparison operator"),
        ("FAR = 5%", "asks for equality"),
        ("FAR < five%", "cannot read"),
        ("< 5%", "cannot read"),
        ("FAR < 0.05", "FAR without a unit"),
        ("FAR < 150%", "lies outside 0 to 100"),
        ("FAR < 5% at Recall=0%", "recall_target_pct"),
        ("FAR < 5% at Recall < 90%", "must be a lower bound in %"),
        ("FAR < 5% at Recall=90", "must be a lower bound in %"),
        ("FAR < 5% at Precision=90%", "could never be met"),
        ("FAR < 5% at Recall", "cannot read the condition"),
        ("Quality score >= 0.9", "custom metric"),
        ("FAR < inf%", "cannot read"),
    ],
)
def test_malformed_targets_are_refused(text: str, what: str) -> None:
    with pytest.raises(MetricContractError) as excinfo:
        parse_target(text)
    assert what in str(excinfo.value)
    assert "Fix: " in str(excinfo.value)


display_names = st.from_regex(r"[A-Z][a-z]{2,8}( [a-z]{3,8}){0,2}", fullmatch=True).filter(
    lambda text: not any(word in {"at", "and", "lt", "le", "lte", "gt", "ge", "gte"} for word in text.split())
)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
percent = st.floats(0.0, 100.0, allow_nan=False)
units = st.sampled_from(["", "%", "cost/board", "ms", "px"])


@settings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from(OPERATORS),
    target=percent,
    recall=st.floats(1e-6, 100.0),
    display=st.sampled_from(["FAR", "far"]),
)
def test_far_targets_round_trip(op: str, target: float, recall: float, display: str) -> None:
    contract = far_contract(op, target, recall, display)
    assert parse_target(render_target(contract)) == contract


@settings(max_examples=200, deadline=None)
@given(
    display=display_names,
    op=st.sampled_from(OPERATORS),
    target=finite,
    unit=units,
    constraints=st.lists(
        st.tuples(display_names, st.sampled_from(OPERATORS), finite, units),
        max_size=3,
        unique_by=lambda c: c[0],
    ),
)
def test_custom_targets_round_trip(
    display: str, op: str, target: float, unit: str, constraints: list[tuple[str, str, float, str]]
) -> None:
    def name(text: str, text_unit: str) -> str:
        slug = text.lower().replace(" ", "_")
        return f"{slug}_pct" if text_unit == "%" else slug

    built = tuple(Constraint(name(d, u), d, o, t, u) for d, o, t, u in constraints)
    assume(len({c.name for c in built}) == len(built) and name(display, unit) != "far_pct")
    contract = MetricContract(name(display, unit), display, op, target, unit, COMMAND, built)
    assert parse_target(render_target(contract), evaluator=COMMAND) == contract
