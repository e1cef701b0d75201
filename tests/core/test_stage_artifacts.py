"""Per-stage validation of ok commits: every refusal names the field and leaves the file byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.core.state import (
    NextStage,
    next_stage,
)

# ---------------------------------------------------------------------------------------------------------
# Per-stage validation: every refusal leaves the file byte-for-byte unchanged (see _refused)


def test_train_artifacts_must_be_absolute_existing_and_non_empty(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    fields = run.train_fields("baseline")
    assert "is relative" in str(run.refused("baseline", "train", {**fields, "training_spec": "spec.yaml"}))
    missing = str(run.rd / "baseline" / "train" / "absent.pth")
    assert "does not exist" in str(run.refused("baseline", "train", {**fields, "best_ckpt_path": missing}))
    empty = run.file("baseline/train/empty.pth", b"")
    assert "is empty" in str(run.refused("baseline", "train", {**fields, "best_ckpt_path": empty}))
    folder = str(run.rd / "baseline" / "train")
    assert "is a directory" in str(run.refused("baseline", "train", {**fields, "best_ckpt_path": folder}))


def test_a_train_checkpoint_outside_the_iterations_train_dir_is_refused(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    elsewhere = run.file("other/model.pth")
    err = run.refused("baseline", "train", {**run.train_fields("baseline"), "best_ckpt_path": elsewhere})
    assert f"is outside {run.rd / 'baseline' / 'train'}/" in str(err)
    sneaky = str(run.rd / "baseline" / "train" / ".." / ".." / "other" / "model.pth")
    run.refused("baseline", "train", {**run.train_fields("baseline"), "best_ckpt_path": sneaky})


def test_train_field_types_and_unknown_or_missing_fields(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    fields = run.train_fields("baseline")
    assert "'newest' is not allowed" in str(run.refused("baseline", "train", {**fields, "best_ckpt_kind": "newest"}))
    assert "not a finite number" in str(run.refused("baseline", "train", {**fields, "val_loss": math.nan}))
    err = run.refused("baseline", "train", {**fields, "best_ckpt": fields["best_ckpt_path"]})
    assert "best_ckpt: unknown field for stage train" in str(err)
    err = run.refused("baseline", "train", {"best_ckpt_path": fields["best_ckpt_path"]})
    assert "training_spec: required field is missing" in str(err)


def test_all_problems_of_a_commit_are_reported_at_once(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    err = run.refused("baseline", "train", {"best_ckpt_path": "relative.pth", "val_loss": "low"})
    assert {p.where for p in err.problems} == {
        "commit baseline/train: training_spec",
        "commit baseline/train: best_ckpt_path",
        "commit baseline/train: val_loss",
    }


def test_path_objects_are_recorded_as_text(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    fields = {
        name: Path(value) if name != "val_loss" and name != "best_ckpt_kind" else value
        for name, value in run.train_fields("baseline").items()
    }
    run.commit("baseline", "train", fields)
    assert run.state["iterations"]["baseline"]["best_ckpt_path"] == str(fields["best_ckpt_path"])


def test_evaluate_records_the_result_with_evidence_pass_flag_threshold_and_far(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 7.5, diagnostics={"precision": 0.9})
    run.commit("baseline", "evaluate", fields)
    entry = run.state["iterations"]["baseline"]
    assert entry["status"] == "complete"
    assert entry["stage_completed"] == "evaluate"
    assert entry["far_pct"] == 7.5
    assert entry["threshold"] == 0.31
    assert entry["inference_csv"] == fields["inference_csv"]
    assert entry["metric_result"]["evidence_path"] == fields["metric_result"]
    assert entry["metric_result"]["passed"] is False  # 7.5 is not < 5
    assert entry["metric_result"]["diagnostics"] == {"precision": 0.9}
    assert entry["best_ckpt_kind"] == "best_val"  # kept from train


def test_an_explicit_threshold_wins_over_the_results(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    run.commit("baseline", "evaluate", {**run.evaluate_fields("baseline", 1.0), "threshold": 0.5})
    assert run.state["iterations"]["baseline"]["threshold"] == 0.5


def test_far_at_recall_without_any_threshold_is_refused(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 1.0)
    result = json.loads(Path(fields["metric_result"]).read_text())
    del result["threshold"]
    Path(fields["metric_result"]).write_text(json.dumps(result))
    assert "needs the operating threshold" in str(run.refused("baseline", "evaluate", fields))


def test_the_rows_each_mining_rule_picked_are_recorded(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _until_mining(run)
    fields = {**run.mining_fields("iter1"), "mining_picked_by_rule": {"neighbour": 2, "explore": 1}}
    run.commit("iter1", "data_mining", fields)
    assert run.state["iterations"]["iter1"]["mining_picked_by_rule"] == {"neighbour": 2, "explore": 1}


@pytest.mark.parametrize("picked", [{"neighbour": -1}, {"explore": 1.5}, [2, 1], {"neighbour": True}])
def test_a_bad_count_per_mining_rule_is_refused(make_run, tmp_path: Path, picked: Any) -> None:
    run = make_run(tmp_path)
    _until_mining(run)
    fields = {**run.mining_fields("iter1"), "mining_picked_by_rule": picked}
    assert "is not a count per rule" in str(run.refused("iter1", "data_mining", fields))


@pytest.mark.parametrize(
    "change",
    [{"name": "accuracy"}, {"unit": "fraction"}, {"value": "low"}, {"value": None}],
)
def test_an_evaluator_result_that_does_not_match_the_contract_is_refused(
    make_run, tmp_path: Path, change: dict
) -> None:
    run = make_run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 1.0)
    result = {**json.loads(Path(fields["metric_result"]).read_text()), **change}
    Path(fields["metric_result"]).write_text(json.dumps(result))
    run.refused("baseline", "evaluate", fields)


def test_an_unreadable_result_json_is_refused(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 1.0)
    Path(fields["metric_result"]).write_text('{"name": "far_pct", "val')
    assert "is not valid JSON" in str(run.refused("baseline", "evaluate", fields))
    Path(fields["metric_result"]).write_text("[1]")
    assert "not an object" in str(run.refused("baseline", "evaluate", fields))


def test_rca_fields_are_recorded_and_checked(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline(rca=False)
    fields = run.rca_fields("baseline")
    assert "not a list of labels" in str(run.refused("baseline", "rca", {**fields, "rca_target_defects": "short"}))
    run.commit("baseline", "rca", fields)
    assert run.state["iterations"]["baseline"]["rca_target_defects"] == ["missing", "short"]


@pytest.mark.parametrize(
    ("allocation", "expected"),
    [
        ({}, "sums to 0"),
        ({"PCB+missing": 0}, "sums to 0"),
        ({"PCB+missing": -1, "PCB+bridge": 3}, "not non-negative integers"),
        ({"PCB+missing": True}, "not non-negative integers"),
        ({"PCB+missing": 2.0}, "not non-negative integers"),
        ([3, 4], "not an object"),
    ],
)
def test_a_bad_anomalygen_allocation_is_refused(make_run, tmp_path: Path, allocation: Any, expected: str) -> None:
    run = make_run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    assert expected in str(run.refused("iter1", "anomalygen", run.anomalygen_fields("iter1", allocation)))


def test_anomalygen_records_the_allocated_total(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", run.anomalygen_fields("iter1", {"PCB+missing": 7, "PCB+bridge": 13}))
    assert run.state["iterations"]["iter1"]["anomalygen_amp_allocated"] == 20


def _until_mining(run) -> None:
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", skipped=True)


def test_mining_artifacts_must_live_in_the_iteration_and_the_ledger_in_the_run(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _until_mining(run)
    fields = run.mining_fields("iter1")
    outside = run.file("baseline/mined.csv", "input_path\n")
    err = run.refused("iter1", "data_mining", {**fields, "mining_mined_csv": outside})
    assert f"is outside {run.rd / 'iter1'}/" in str(err)
    foreign_ledger = str(tmp_path / "ledger.json")
    Path(foreign_ledger).write_text("{}")
    run.refused("iter1", "data_mining", {**fields, "mining_history": foreign_ledger})
    run.commit("iter1", "data_mining", fields)
    assert run.state["iterations"]["iter1"]["mining_mined_count"] == 3


@pytest.mark.parametrize("placeholder", ["ok", " TODO \n", "n/a", "Recorded"])
def test_a_placeholder_mining_log_is_refused(make_run, tmp_path: Path, placeholder: str) -> None:
    run = make_run(tmp_path)
    _until_mining(run)
    fields = run.mining_fields("iter1")
    Path(fields["mining_knn_log"]).write_text(placeholder)
    assert "placeholder" in str(run.refused("iter1", "data_mining", fields))


@pytest.mark.parametrize("count", [-1, True, 2.5, "3"])
def test_a_bad_mined_count_is_refused(make_run, tmp_path: Path, count: Any) -> None:
    run = make_run(tmp_path)
    _until_mining(run)
    assert "is not a row count" in str(
        run.refused("iter1", "data_mining", {**run.mining_fields("iter1"), "mining_mined_count": count})
    )


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"missing_file_count": 2, "train_val_leakage_overlap_count": 0}, "missing_file_count is 2"),
        (
            {"missing_file_count": 0, "train_val_leakage_overlap_count": 1},
            "train_val_leakage_overlap_count is 1",
        ),
        (
            {
                "missing_file_count": 0,
                "train_val_leakage_overlap_count": 0,
                "train_kpi_leakage_overlap_count": 4,
            },
            "train_kpi_leakage_overlap_count is 4",
        ),
        ({"rows_checked": 10}, "missing_file_count is None, not a count"),
        ({"missing_file_count": "0", "train_val_leakage_overlap_count": 0}, "missing_file_count is '0'"),
    ],
)
def test_the_merge_validation_report_is_parsed_not_just_checked_for_existence(
    make_run, tmp_path: Path, report: dict, expected: str
) -> None:
    run = make_run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", skipped=True)
    run.commit("iter1", "data_mining", skipped=True)
    assert expected in str(run.refused("iter1", "data_merge", run.merge_fields("iter1", report)))


def test_loop_stop_artifacts_must_be_inside_the_run(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    outside = tmp_path / "best_model.json"
    outside.write_text("{}")
    fields = {**run.stop_fields("metric_met"), "best_model_json": str(outside)}
    assert "is outside" in str(run.refused("baseline", "loop_stop", fields))
    assert "'budget' is not allowed" in str(run.refused("baseline", "loop_stop", {**fields, "stop_reason": "budget"}))


def test_an_artifact_evaluator_result_must_sit_at_its_templated_path(make_run, tmp_path: Path) -> None:
    template = str(tmp_path / "metrics" / "{iter_label}" / "quality.json")
    contract = {
        "name": "quality_score",
        "display_name": "Quality score",
        "operator": ">=",
        "target": 0.9,
        "unit": "",
        "evaluator": {"type": "artifact", "producer": "line QA", "path_template": template},
        "constraints": [],
    }
    run = make_run(tmp_path, max_iterations=1, contract=contract, target="Quality score >= 0.9")
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 0.0)
    result = {"name": "quality_score", "value": 0.93, "unit": "", "constraints": {}}
    Path(fields["metric_result"]).write_text(json.dumps(result))
    err = run.refused("baseline", "evaluate", fields)
    assert f"commit the result at '{template.format(iter_label='baseline')}'" in str(err)
    expected = Path(template.format(iter_label="baseline"))
    expected.parent.mkdir(parents=True)
    expected.write_text(json.dumps(result))
    run.commit("baseline", "evaluate", {**fields, "metric_result": str(expected)})
    entry = run.state["iterations"]["baseline"]
    assert entry["metric_result"]["passed"] is True  # no threshold needed outside far_at_recall
    assert "far_pct" not in entry
    assert "threshold" not in entry
    assert next_stage(run.state) == NextStage("baseline", "finalize")
