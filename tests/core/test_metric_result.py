"""Tests of evaluator results: the checks, the builtin and artifact evaluators, the command seam, best selection."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aoi_pipeline.core.far import ScoredRows, far_at_recall
from aoi_pipeline.core.metric_contract import Constraint, Evaluator, MetricContract
from aoi_pipeline.core.metric_result import (
    Candidate,
    MetricResult,
    check_result,
    evaluate_inference_csv,
    far_result_json,
    pick_best,
)
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


COMMAND = Evaluator("command", path="/opt/metrics/evaluate_cost.py", args=("--policy", "policy.json"))


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


# ------------------------------------------------------------------------------------------------ command seam


class RecordingCommand:
    """A command evaluator that returns a fixed document and records what it was asked to run."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.calls: list[tuple[Evaluator, Path]] = []

    def __call__(self, evaluator: Evaluator, inference_csv: Path) -> tuple[Mapping[str, Any], str]:
        self.calls.append((evaluator, inference_csv))
        return self.document, f"evaluator command {evaluator.path}"


def test_a_command_evaluator_goes_through_the_runner_it_is_given_and_its_result_is_checked(tmp_path: Path) -> None:
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Escape cost <= 0.25 cost/board", evaluator=COMMAND)
    runner = RecordingCommand({"name": "escape_cost", "value": 0.3, "unit": "cost/board", "constraints": {}})
    output = tmp_path / "metric_result.json"
    result = evaluate_inference_csv(contract, csv_path, output_json=output, run_command=runner)
    assert runner.calls == [(COMMAND, csv_path)]
    assert (result.value, result.passed) == (0.3, False)
    assert json.loads(output.read_text())["value"] == 0.3
    wrong = RecordingCommand({"name": "escape_cost", "value": 0.1, "unit": "", "constraints": {}})
    with pytest.raises(MetricContractError, match="unit '' is not the contract's 'cost/board'"):
        evaluate_inference_csv(contract, csv_path, output_json=tmp_path / "other.json", run_command=wrong)
    assert not (tmp_path / "other.json").exists()


def test_a_command_evaluator_without_a_runner_is_refused(tmp_path: Path) -> None:
    contract = parse_target("Escape cost <= 0.25 cost/board", evaluator=COMMAND)
    with pytest.raises(MetricContractError, match="no command runner was passed"):
        evaluate_inference_csv(contract, write_inference_csv(tmp_path / "inference.csv"))


# ------------------------------------------------------------------------------------------------ FAR document


def rows_of(labels: list[str], scores: list[float]) -> ScoredRows:
    return ScoredRows(tuple(labels), np.asarray(scores, dtype=np.float64))


def test_far_result_json_has_the_evaluator_result_shape() -> None:
    contract = parse_target("FAR < 50% at Recall=100%")
    document = far_result_json(far_at_recall(rows_of(["PASS", "open", "PASS"], [0.1, 0.5, 0.7]), 100.0), contract)
    assert {key: document[key] for key in ("name", "value", "unit", "threshold", "constraints")} == {
        "name": "far_pct",
        "value": 50.0,
        "unit": "%",
        "threshold": 0.5,
        "constraints": {"recall_pct": 100.0},
    }
    assert document["diagnostics"]["fp"] == 1 and document["diagnostics"]["n_pass"] == 2


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
