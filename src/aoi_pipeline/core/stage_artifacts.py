"""Checks of an ok stage commit's artifacts: which fields each stage records, and that each is real.

`stage_record` is what `commit_stage` asks before it writes: every required field is present, no unknown one
is, every artifact path is absolute, exists, is non-empty and lies where the stage writes it, values have
their type, and the stage's own evidence is read (the metric result against the contract, the SDG
allocation, the merge validation report, the mining logs). It returns what the commit records into
`iterations.<label>`, or every problem at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aoi_pipeline.core import pool_budget
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import check_result
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML, PHASE1_SOURCE, STOP_REASONS, Stage, iteration_number
from aoi_pipeline.core.state_document import is_int, jsonable
from aoi_pipeline.core.state_entries import iteration_entry
from aoi_pipeline.errors import AoiPipelineError, Problem

if TYPE_CHECKING:
    from aoi_pipeline.core.state import StageCommit

_PLACEHOLDER_LOG_TEXT = frozenset({"", "placeholder", "recorded", "todo", "n/a", "none", "ok"})

STAGE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # stage: (required, optional)
    Stage.TRAIN: (("best_ckpt_path", "training_spec"), ("best_ckpt_kind", "val_loss", "train_metric", "source")),
    Stage.EVALUATE: (
        ("metric_result", "best_ckpt_path", "inference_csv"),
        ("training_spec", "threshold", "steer_inference_csv", "steer_metric_result", "control_metric_result"),
    ),
    Stage.RCA: (("rca_gaps_csv",), ("rca_threshold", "rca_target_defects")),
    Stage.ROUTING: (("routing_mining_csv", "routing_anomalygen_csv"), ()),
    Stage.ANOMALYGEN: (("anomalygen_sdg_csv", "anomalygen_allocation_json"), ()),
    Stage.DATA_MINING: (
        (
            "mining_mined_csv",
            "mining_candidate_csv",
            "mining_summary",
            "mining_history",
            "mining_history_summary",
            "mining_target_embeddings",
            "mining_source_embeddings",
            "mining_target_log",
            "mining_source_log",
            "mining_knn_log",
            "mining_mined_count",
        ),
        ("mining_picked_by_rule",),
    ),
    Stage.DATA_MERGE: (("combined_training_csv", "provenance_csv", "merge_validation_report"), ()),
    Stage.LOOP_STOP: (("stop_reason", "best_model_json", "inference_spec"), ()),
}
_MINING_LOGS = ("mining_target_log", "mining_source_log", "mining_knn_log")


def stage_record(
    state: Mapping[str, Any], commit: StageCommit, results_dir: Path
) -> tuple[dict[str, Any], list[Problem]]:
    """What an ok commit writes into `iterations.<L>`, or the problems that refuse it."""
    where = f"commit {commit.iter_label}/{commit.stage}"
    if commit.skipped:
        return {f"{commit.stage}_skipped": True}, []
    fields = jsonable(commit.fields)
    required, optional = STAGE_FIELDS[commit.stage]
    problems = [
        Problem(f"{where}: {name}", "required field is missing", f"pass {name}")
        for name in required
        if fields.get(name) is None
    ]
    problems.extend(
        Problem(
            f"{where}: {name}",
            f"unknown field for stage {commit.stage}",
            f"use only {', '.join(required + optional)}",
        )
        for name in fields
        if name not in required + optional
    )
    present = {name: value for name, value in fields.items() if name in required + optional}
    for name, value in present.items():
        if value is None:
            continue
        check_value = _VALUE_CHECKS.get(name, _file_problems)
        problems.extend(check_value(f"{where}: {name}", value))
    if problems:
        return {}, problems
    check = _STAGE_CHECKS.get(commit.stage)
    extra, stage_problems = check(state, commit, present, results_dir, where) if check else ({}, [])
    return {**present, **extra}, stage_problems


def _file_problems(where: str, value: object) -> list[Problem]:
    if not isinstance(value, str) or not value:
        return [Problem(where, f"{value!r} is not a path", "pass the artifact's absolute path")]
    path = Path(value)
    if not path.is_absolute():
        return [Problem(where, f"'{value}' is relative", "pass the artifact's absolute host path")]
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        return [Problem(where, f"'{value}' {what}", "commit only after the stage wrote the artifact")]
    if path.stat().st_size == 0:
        return [Problem(where, f"'{value}' is empty", "the stage did not finish writing it: re-run the stage")]
    return []


def _inside(where: str, value: str, directory: Path, rule: str) -> list[Problem]:
    if Path(value).resolve().is_relative_to(directory.resolve()):
        return []
    return [Problem(where, f"'{value}' is outside {directory}/", rule)]


_StageCheck = Callable[
    [Mapping[str, Any], "StageCommit", dict[str, Any], Path, str], tuple[dict[str, Any], list[Problem]]
]


def _check_train(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    label = commit.iter_label
    # Phase 3 trials write into their own folders under final_automl/.
    train_dir = results_dir / label if label == FINAL_AUTOML else results_dir / label / "train"
    problems = _inside(
        f"{where}: best_ckpt_path",
        fields["best_ckpt_path"],
        train_dir,
        "commit a checkpoint this stage emitted into its own train directory; never reuse an older one",
    )
    if "source" in fields and label != BASELINE:
        problems.append(
            Problem(
                f"{where}: source",
                f"{fields['source']!r} is only allowed on baseline",
                "use preseed_baseline for the Phase 1 handoff; drop source otherwise",
            )
        )
    return {}, problems


def _check_evaluate(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    contract_data = state["metric_contract"]
    evidence = fields["metric_result"]
    evaluator = contract_data.get("evaluator") or {}
    if evaluator.get("type") == "artifact" and isinstance(evaluator.get("path_template"), str):
        expected = evaluator["path_template"].replace("{iter_label}", commit.iter_label)
        if os.path.normpath(evidence) != os.path.normpath(expected):
            problems.append(
                Problem(
                    f"{where}: metric_result",
                    f"'{evidence}' is not the artifact evaluator's path for {commit.iter_label}",
                    f"commit the result at '{expected}'",
                )
            )
    raw, read_problems = _read_json_object(f"{where}: metric_result", evidence)
    problems.extend(read_problems)
    if problems:
        return {}, problems
    try:
        result = check_result(MetricContract.from_dict(contract_data), raw, where=evidence)
    except AoiPipelineError as error:
        return {}, list(error.problems)
    threshold = fields.get("threshold", raw.get("threshold"))
    if threshold is None and evaluator.get("type") == "builtin" and evaluator.get("id") == "far_at_recall":
        return {}, [
            Problem(
                f"{where}: threshold",
                "far_at_recall needs the operating threshold, and neither the commit nor the result has one",
                "pass threshold, or record it in the result JSON",
            )
        ]
    recorded_result = {
        **raw,
        "evidence_path": evidence,
        "passed": result.passed,
        "failed_constraints": list(result.failed_constraints),
    }
    extra: dict[str, Any] = {"metric_result": recorded_result}
    side_figures, side_problems = _side_figures(fields, where)
    if side_problems:
        return {}, side_problems
    extra.update(side_figures)
    if threshold is not None:
        extra["threshold"] = threshold
    if contract_data.get("name") == "far_pct":
        extra["far_pct"] = result.value
    return extra, []


def _side_figures(fields: dict[str, Any], where: str) -> tuple[dict[str, Any], list[Problem]]:
    """The evaluate commit's figures shown beside the deciding one: the steer part's and the control arm's."""
    extra: dict[str, Any] = {}
    if "steer_metric_result" in fields:
        steer, steer_problems = _read_json_object(f"{where}: steer_metric_result", fields["steer_metric_result"])
        if steer_problems:
            return {}, steer_problems
        # The steer part's figure is shown beside the confirm figure, labelled; it never decides anything.
        extra["steer_metric_result"] = {**steer, "evidence_path": fields["steer_metric_result"]}
    if "control_metric_result" in fields:
        at = f"{where}: control_metric_result"
        control, control_problems = _read_json_object(at, fields["control_metric_result"])
        if not control_problems and not isinstance(control.get("value"), int | float):
            control_problems = [Problem(at, "holds no numeric value", "re-run the iteration's evaluation")]
        if control_problems:
            return {}, control_problems
        # The control arm (same previous set + as many random pool rows): shown beside the loop, never picked.
        extra["control_metric_result"] = {**control, "evidence_path": fields["control_metric_result"]}
    return extra, []


def _check_anomalygen(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    at = f"{where}: anomalygen_allocation_json"
    allocation, problems = _read_json_object(at, fields["anomalygen_allocation_json"])
    if problems:
        return {}, problems
    bad = {key: value for key, value in allocation.items() if not is_int(value) or value < 0}
    if not allocation or bad or sum(allocation.values()) <= 0:
        what = f"counts {bad} are not non-negative integers" if bad else f"allocation {allocation} sums to 0"
        return {}, [Problem(at, what, "AMP placed no defects: check the defect spec and CAD masks, re-run")]
    return {"anomalygen_amp_allocated": sum(allocation.values())}, []


def _check_data_mining(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    iteration_dir = results_dir / commit.iter_label
    for name in STAGE_FIELDS[Stage.DATA_MINING][0]:
        if name == "mining_mined_count":
            continue
        inside = results_dir if name == "mining_history" else iteration_dir
        problems.extend(
            _inside(f"{where}: {name}", fields[name], inside, "mining artifacts belong to this run's iteration")
        )
    for name in _MINING_LOGS:
        if _is_placeholder(Path(fields[name])):
            problems.append(
                Problem(
                    f"{where}: {name}",
                    "the log holds a placeholder, not a command's output",
                    "commit real logs",
                )
            )
    return {}, problems


def _check_data_merge(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    at = f"{where}: merge_validation_report"
    report, problems = _read_json_object(at, fields["merge_validation_report"])
    if problems:
        return {}, problems
    counts = {"missing_file_count": report.get("missing_file_count")}
    counts["train_val_leakage_overlap_count"] = report.get("train_val_leakage_overlap_count")
    counts.update({key: value for key, value in report.items() if "leakage" in key and key.endswith("_count")})
    for key, value in counts.items():
        if not is_int(value):
            problems.append(Problem(at, f"{key} is {value!r}, not a count", "write the report with the validator"))
        elif value != 0:
            problems.append(
                Problem(at, f"{key} is {value}", "the combined training CSV is invalid: fix it, re-run data_merge")
            )
    return {}, problems


def _check_loop_stop(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    for name in ("best_model_json", "inference_spec"):
        problems.extend(_inside(f"{where}: {name}", fields[name], results_dir, "write the handoff into the run"))
    label = commit.iter_label
    entry = iteration_entry(state, label)
    if iteration_entry(state, BASELINE).status != "complete":
        problems.append(Problem(where, "the baseline is not complete", "finish baseline evaluate first"))
    if entry.status != "complete":
        problems.append(Problem(where, f"{label} is not complete", f"finish {label} evaluate first"))
    passed = entry.passed
    reason = fields["stop_reason"]
    if reason == "metric_met" and not passed:
        problems.append(
            Problem(
                f"{where}: stop_reason",
                f"metric_met, but {label}'s result did not pass",
                "use max_iterations",
            )
        )
    if reason == "pool_budget" and (passed or not pool_budget.stops_loop(state)):
        problems.append(
            Problem(
                f"{where}: stop_reason",
                f"pool_budget, but {label} passed or the next iteration fits the pool budget",
                "use metric_met, or run the next iteration",
            )
        )
    if reason == "max_iterations":
        number = iteration_number(label)
        if passed:
            problems.append(Problem(f"{where}: stop_reason", f"max_iterations, but {label} passed", "use metric_met"))
        elif number < state["max_iterations"]:
            problems.append(
                Problem(
                    f"{where}: stop_reason",
                    f"max_iterations at {label}, but the budget is {state['max_iterations']} iterations",
                    "run the next iteration",
                )
            )
    return {}, problems


_STAGE_CHECKS: dict[str, _StageCheck] = {
    Stage.TRAIN: _check_train,
    Stage.EVALUATE: _check_evaluate,
    Stage.ANOMALYGEN: _check_anomalygen,
    Stage.DATA_MINING: _check_data_mining,
    Stage.DATA_MERGE: _check_data_merge,
    Stage.LOOP_STOP: _check_loop_stop,
}


def _read_json_object(where: str, path: str) -> tuple[dict[str, Any], list[Problem]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return {}, [Problem(where, f"'{path}' is not valid JSON ({error})", "re-run the stage that writes it")]
    if not isinstance(data, dict):
        return {}, [Problem(where, f"'{path}' holds a JSON {type(data).__name__}, not an object", "re-run")]
    return data, []


def _is_placeholder(path: Path) -> bool:
    if path.stat().st_size > 64:
        return False
    return path.read_text(encoding="utf-8", errors="replace").strip().lower() in _PLACEHOLDER_LOG_TEXT


def _finite_number(where: str, value: object) -> list[Problem]:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return []
    return [Problem(where, f"{value!r} is not a finite number", "pass a number or leave it out")]


def _row_count(where: str, value: object) -> list[Problem]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return []
    return [Problem(where, f"{value!r} is not a row count", "pass the number of rows of mined.csv")]


def _counts_by_name(where: str, value: object) -> list[Problem]:
    if isinstance(value, dict) and all(isinstance(k, str) and _row_count(where, v) == [] for k, v in value.items()):
        return []
    return [Problem(where, f"{value!r:.80} is not a count per rule", "pass {rule name: rows it picked}")]


def _labels(where: str, value: object) -> list[Problem]:
    if isinstance(value, list) and all(isinstance(item, str) and item.strip() for item in value):
        return []
    return [Problem(where, f"{value!r:.80} is not a list of labels", "pass a list of label texts")]


def _one_of(*allowed: str) -> Callable[[str, object], list[Problem]]:
    def check(where: str, value: object) -> list[Problem]:
        if value in allowed:
            return []
        return [Problem(where, f"{value!r} is not allowed", f"use one of {', '.join(allowed)}")]

    return check


# Fields that are not artifact paths, and how each is checked; every other field is an artifact file.
_VALUE_CHECKS: dict[str, Callable[[str, object], list[Problem]]] = {
    "best_ckpt_kind": _one_of("best_val", "latest"),
    "val_loss": _finite_number,
    "train_metric": _finite_number,
    "source": _one_of(PHASE1_SOURCE),
    "threshold": _finite_number,
    "rca_threshold": _finite_number,
    "rca_target_defects": _labels,
    "mining_mined_count": _row_count,
    "mining_picked_by_rule": _counts_by_name,
    "stop_reason": _one_of(*STOP_REASONS),
}
