"""Tests of the KPI metric contract: compact targets, the state shape, results, evaluators, best selection."""

from __future__ import annotations

import json
import math
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.metric_contract import (
    OPERATORS,
    Candidate,
    Constraint,
    Evaluator,
    MetricContract,
    MetricResult,
    check_result,
    compare,
    evaluate_inference_csv,
    far_evaluator,
    parse_target,
    pick_best,
    render_target,
)
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

# ------------------------------------------------------------------------------------------------ targets


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


# ------------------------------------------------------------------------------------------------ state shape


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


# ------------------------------------------------------------------------------------------------ results


def result_document(value: float = 3.0, recall: float | None = 100.0, **extra: object) -> dict[str, object]:
    document: dict[str, object] = {
        "name": "far_pct",
        "value": value,
        "unit": "%",
        "threshold": 0.42,
        "constraints": {} if recall is None else {"recall_pct": recall},
        "diagnostics": {"tp": 3},
    }
    document.update(extra)
    return document


def test_check_result_recomputes_pass_and_ignores_the_evaluators_own_verdict() -> None:
    contract = far_contract("<", 5.0, 100.0)
    good = check_result(contract, result_document(3.0, passed=False), where="r.json")
    assert (good.passed, good.failed_constraints, good.threshold) == (True, (), 0.42)
    too_high = check_result(contract, result_document(5.0, passed=True), where="r.json")
    assert (too_high.passed, too_high.failed_constraints) == (False, ())
    low_recall = check_result(contract, result_document(1.0, 99.0), where="r.json")
    assert (low_recall.passed, low_recall.failed_constraints) == (False, ("recall_pct",))
    missing = check_result(contract, result_document(1.0, None), where="r.json")
    assert (missing.passed, missing.failed_constraints) == (False, ("recall_pct:missing",))


def test_check_result_refuses_a_result_that_breaks_the_schema() -> None:
    contract = far_contract()
    with pytest.raises(MetricContractError) as excinfo:
        check_result(
            contract,
            {"name": "far", "value": float("inf"), "unit": "", "constraints": {"recall_pct": "all"}},
            where="iter1/metric_result.json",
        )
    messages = [str(problem) for problem in excinfo.value.problems]
    assert [m.split(": ")[1] for m in messages] == ["name", "value", "unit", "constraints.recall_pct"]
    assert all(m.startswith("iter1/metric_result.json: ") for m in messages)
    assert "unit '' is not the contract's '%'" in messages[2]


def write_inference_csv(path: Path) -> Path:
    # PASS 0.1, 0.6, 0.8, 0.3; defects 0.5, 0.9 -> at 100 % recall the cut is 0.5 and 2 of 4 PASS are flagged.
    rows = ["PASS,0.1", "open,0.5", "PASS,0.6", "short,0.9", "PASS,0.8", "pass,0.3"]
    path.write_text("label,siamese_score\n" + "\n".join(rows) + "\n")
    return path


def test_builtin_evaluator_scores_the_csv_and_writes_the_result_json(tmp_path: Path) -> None:
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    output = tmp_path / "evaluate" / "metric_result.json"
    result = evaluate_inference_csv(parse_target("FAR < 60% at Recall=100%"), csv_path, output_json=output)
    assert (result.value, result.threshold, result.passed) == (50.0, 0.5, True)
    written = json.loads(output.read_text())
    assert (written["name"], written["value"], written["constraints"]) == (
        "far_pct",
        50.0,
        {"recall_pct": 100.0},
    )
    at_half = evaluate_inference_csv(parse_target("FAR < 30% at Recall=50%"), csv_path)
    assert (at_half.value, at_half.threshold, at_half.passed) == (0.0, 0.9, True)


def test_builtin_evaluator_writes_nothing_for_a_bad_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "inference.csv"
    csv_path.write_text("label,siamese_score\nPASS,\nopen,1\n")
    output = tmp_path / "metric_result.json"
    with pytest.raises(MetricContractError, match="row 1, column siamese_score"):
        evaluate_inference_csv(far_contract(), csv_path, output_json=output)
    assert not output.exists()


def executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


EVALUATOR_SCRIPT = """
import json, sys
args = sys.argv[1:]
csv_path = args[args.index("--inference-csv") + 1]
out = args[args.index("--output-json") + 1]
rows = open(csv_path).read().splitlines()[1:]
cost = sum(1 for row in rows if row.startswith("PASS") and float(row.split(",")[1]) >= 0.5) / 10
json.dump({"name": "escape_cost", "value": cost, "unit": "cost/board", "constraints": {"recall_pct": 100.0},
           "diagnostics": {"argv": args}}, open(out, "w"))
"""


def test_command_evaluator_runs_with_the_documented_argv(tmp_path: Path) -> None:
    script = executable(tmp_path / "evaluate_cost.py", EVALUATOR_SCRIPT)
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    evaluator = Evaluator("command", path=str(script), args=("--policy", "p.json"))
    contract = parse_target("Escape cost <= 0.25 cost/board at Recall=100%", evaluator=evaluator)
    output = tmp_path / "out" / "metric_result.json"
    result = evaluate_inference_csv(contract, csv_path, output_json=output)
    assert (result.name, result.value, result.passed) == ("escape_cost", 0.2, True)
    argv = result.diagnostics["argv"]
    assert argv[:3] == ["--policy", "p.json", "--inference-csv"]
    assert argv[3] == str(csv_path.resolve()) and Path(argv[3]).is_absolute()
    assert argv[4] == "--output-json" and Path(argv[5]).is_absolute()
    assert json.loads(output.read_text())["value"] == 0.2


def test_a_failing_command_evaluator_reports_its_status_and_stderr(tmp_path: Path) -> None:
    script = executable(
        tmp_path / "broken.py", "import sys\nsys.stderr.write('boom: policy.json missing\\n')\nsys.exit(3)\n"
    )
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Escape cost <= 1 cost/board", evaluator=Evaluator("command", path=str(script)))
    output = tmp_path / "metric_result.json"
    with pytest.raises(MetricContractError) as excinfo:
        evaluate_inference_csv(contract, csv_path, output_json=output)
    message = str(excinfo.value)
    assert f"evaluator command {script}" in message
    assert "exited with status 3" in message
    assert "boom: policy.json missing" in message
    assert not output.exists()


def test_a_command_evaluator_with_a_wrong_result_leaves_no_output(tmp_path: Path) -> None:
    body = (
        "import json, sys\n"
        "json.dump({'name': 'other', 'value': 1, 'unit': 'x', 'constraints': {}}, open(sys.argv[-1], 'w'))\n"
    )
    script = executable(tmp_path / "wrong.py", body)
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Escape cost <= 1 cost/board", evaluator=Evaluator("command", path=str(script)))
    output = tmp_path / "metric_result.json"
    with pytest.raises(MetricContractError, match="name 'other' is not the contract's 'escape_cost'"):
        evaluate_inference_csv(contract, csv_path, output_json=output)
    assert not output.exists()


def test_a_missing_command_is_reported(tmp_path: Path) -> None:
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Cost < 1", evaluator=Evaluator("command", path=str(tmp_path / "absent.sh")))
    with pytest.raises(MetricContractError, match="the executable does not exist"):
        evaluate_inference_csv(contract, csv_path)


def test_artifact_evaluator_reads_the_file_of_the_iteration(tmp_path: Path) -> None:
    template = str(tmp_path / "metrics" / "{iter_label}" / "result.json")
    contract = parse_target(
        "Quality score >= 0.9", evaluator=Evaluator("artifact", producer="qa", path_template=template)
    )
    artifact = tmp_path / "metrics" / "iter2" / "result.json"
    artifact.parent.mkdir(parents=True)
    artifact.write_text(json.dumps({"name": "quality_score", "value": 0.93, "unit": "", "constraints": {}}))
    result = evaluate_inference_csv(contract, tmp_path / "unused.csv", iter_label="iter2")
    assert (result.value, result.passed) == (0.93, True)
    with pytest.raises(MetricContractError, match=r"iter3/result\.json of qa is missing"):
        evaluate_inference_csv(contract, tmp_path / "unused.csv", iter_label="iter3")
    with pytest.raises(MetricContractError, match="needs the iteration label"):
        evaluate_inference_csv(contract, tmp_path / "unused.csv")


# ------------------------------------------------------------------------------------------------ selection


def candidate(label: str, value: float, failed: tuple[str, ...] = (), name: str = "far_pct") -> Candidate:
    return Candidate(label, MetricResult(name, value, "%", None, {}, {}, not failed, failed))


def test_pick_best_prefers_lower_values_for_upper_bounds_and_earlier_on_ties() -> None:
    contract = far_contract("<", 5.0)
    picked = pick_best(contract, [candidate("baseline", 9.0), candidate("iter1", 4.0), candidate("iter2", 4.0)])
    assert picked is not None and picked.label == "iter1"


def test_pick_best_prefers_higher_values_for_lower_bounds() -> None:
    contract = parse_target("Quality score >= 0.9", evaluator=COMMAND)
    cands = [candidate(label, value, name="quality_score") for label, value in [("a", 0.8), ("b", 0.95), ("c", 0.9)]]
    picked = pick_best(contract, cands)
    assert picked is not None and picked.label == "b"


def test_pick_best_puts_constraint_failures_last_even_with_a_better_value() -> None:
    contract = far_contract("<", 5.0)
    cands = [
        candidate("baseline", 1.0, ("recall_pct",)),
        candidate("iter1", 7.0),
        candidate("iter2", 0.5, ("recall_pct:missing",)),
        candidate("iter3", 6.0),
    ]
    picked = pick_best(contract, cands)
    assert picked is not None and picked.label == "iter3"


def test_pick_best_falls_back_to_the_best_value_when_every_candidate_fails_a_constraint() -> None:
    contract = far_contract("<", 5.0)
    picked = pick_best(contract, [candidate("baseline", 3.0, ("recall_pct",)), candidate("iter1", 2.0, ("x",))])
    assert picked is not None and picked.label == "iter1" and picked.result.passed is False
    assert pick_best(contract, []) is None


def test_pick_best_refuses_results_of_another_metric() -> None:
    with pytest.raises(MetricContractError, match="candidate iter1"):
        pick_best(far_contract(), [candidate("iter1", 1.0, name="quality_score")])


def test_far_evaluator_default_and_recall_target() -> None:
    assert far_evaluator().parameters == {"recall_target_pct": 100.0}
    assert parse_target("FAR < 5% at Recall=99.5%").recall_target_pct == 99.5
