"""Tests of the KPI metric contract: the state shape, construction checks, comparison and the FAR evaluator."""

from __future__ import annotations

import json
import math

import pytest

from aoi_pipeline.core.metric_contract import Constraint, Evaluator, MetricContract, compare, far_evaluator
from aoi_pipeline.core.metric_target import parse_target
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


def test_to_dict_and_from_dict_round_trip_with_aliases() -> None:
    contract = far_contract("<=", 2.0, 99.5)
    document = contract.to_dict()
    assert document == {
        "name": "far_pct",
        "display_name": "FAR",
        "operator": "<=",
        "target": 2.0,
        "unit": "%",
        "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 99.5}},
        "constraints": [
            {"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 99.5, "unit": "%"}
        ],
    }
    assert MetricContract.from_dict(json.loads(json.dumps(document))) == contract
    aliased = {
        **document,
        "operator": "LE",
        "constraints": [{**document["constraints"][0], "operator": "gte"}],
    }
    assert MetricContract.from_dict(aliased) == contract
    artifact = Evaluator("artifact", producer="line-sim", path_template="/ws/metrics/{iter_label}/result.json")
    custom = parse_target("Escape cost < 3 cost/board", evaluator=artifact)
    assert MetricContract.from_dict(custom.to_dict()) == custom


def test_from_dict_reports_every_problem_at_once() -> None:
    with pytest.raises(MetricContractError) as excinfo:
        MetricContract.from_dict(
            {
                "name": "FAR %",
                "display_name": "",
                "operator": "<<",
                "target": float("nan"),
                "unit": "%",
                "evaluator": {"type": "command", "path": "relative/eval.sh"},
                "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": "x"}],
            },
            where="deft_state.json: metric_contract",
        )
    message = str(excinfo.value)
    for fragment in [
        "deft_state.json: metric_contract.operator: unknown operator '<<'",
        "deft_state.json: metric_contract.target: expected a finite number, got nan",
        "deft_state.json: metric_contract.constraints[0].target: expected a finite number, got 'x'",
    ]:
        assert fragment in message
    assert len(excinfo.value.problems) == 3  # structural problems first; names are checked once these are fixed


def test_contract_construction_validates_names_evaluators_and_constraints() -> None:
    with pytest.raises(MetricContractError) as excinfo:
        MetricContract(
            "Bad Name",
            " ",
            "<",
            1.0,
            "",
            Evaluator("artifact", producer="x", path_template="/no/label.json"),
            (Constraint("a", "A", ">=", 1.0, ""), Constraint("a", "A", ">=", 2.0, "")),
        )
    message = str(excinfo.value)
    assert "metric_contract.name: 'Bad Name' is not a metric name" in message
    assert "metric_contract.display_name: the display name is empty" in message
    assert "duplicate constraint name(s) ['a']" in message
    assert "'/no/label.json' is not an absolute path containing {iter_label}" in message


@pytest.mark.parametrize(
    ("value", "operator", "target", "expected"),
    [
        (4.9, "<", 5.0, True),
        (5.0, "<", 5.0, False),
        (5.0, "<=", 5.0, True),
        (5.0, "le", 5.0, True),
        (5.1, "lte", 5.0, False),
        (5.1, ">", 5.0, True),
        (5.0, "gt", 5.0, False),
        (5.0, ">=", 5.0, True),
        (4.0, "GE", 5.0, False),
        (math.nan, "<", 5.0, False),
        (math.nan, ">", 5.0, False),
    ],
)
def test_compare(value: float, operator: str, target: float, expected: bool) -> None:
    assert compare(value, operator, target) is expected


def test_compare_refuses_unknown_operators() -> None:
    with pytest.raises(MetricContractError, match="unknown operator '=='"):
        compare(1.0, "==", 1.0)


def test_far_evaluator_default_and_recall_target() -> None:
    assert far_evaluator().parameters == {"recall_target_pct": 100.0}
    assert parse_target("FAR < 5% at Recall=99.5%").recall_target_pct == 99.5
