"""The Phase 2 run state, `RD/deft_state.json` (version 4): the single source of truth for resuming a run.

The document holds the run's immutable inputs (KPI target, metric contract, config, iteration budget), a
snapshot per iteration label (`iterations.<L>`) and an ordered event log, one event per stage commit.
`commit_stage` is the only writer after `init_state`: it re-reads the file, checks the commit against the
stage order of `next_stage` and against the stage's required artifacts, then writes snapshot and event in one
atomic replace, so a crash or a refused commit leaves the previous file byte for byte. `next_stage` tells a
restarted flow where to pick up. Where the reference commit script is lax this module is strict: a commit
must be the stage the state expects; the merge validation report is parsed (no missing files, no leaks);
a Phase 1 pre-seed goes through `commit_stage` like any other stage; Phase 3 registers under `final_automl`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from aoi_pipeline.core.files import atomic_write_text, directory_flock, json_text
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import check_result
from aoi_pipeline.errors import AoiPipelineError, Problem, StateError

STATE_FILE = "deft_state.json"
STATE_VERSION = 4
STAGES = ("train", "evaluate", "rca", "routing", "anomalygen", "data_mining", "data_merge", "loop_stop")
SKIPPABLE_STAGES = ("anomalygen", "data_mining")
RUN_STATUSES = ("pending", "in_progress", "complete", "failed")
STOP_REASONS = ("metric_met", "max_iterations")
BASELINE = "baseline"
FINAL_AUTOML = "final_automl"
# The reference accepts `baseline|iter[1-9][0-9]*`; Phase 3 registers its winner under `final_automl`.
ITER_LABEL_RE = re.compile(r"baseline|iter[1-9][0-9]*|final_automl")
PHASE1_SOURCE = "automl_phase1"

_RESTORE_FIX = (
    "restore deft_state.json from a backup of the run directory, or start a fresh run in a new results "
    "directory; never edit the file by hand"
)
_TOP_LEVEL_TYPES: dict[str, type] = {
    "version": int,
    "started_at": str,
    "status": str,
    "kpi_target": str,
    "metric_contract": dict,
    "results_dir": str,
    "max_iterations": int,
    "current_iteration": int,
    "config": dict,
    "iterations": dict,
    "events": list,
}
# §5.6: the stage after the one last completed under a label (evaluate and rca are decided separately).
_FOLLOWS = {
    "train": "evaluate",
    "routing": "anomalygen",
    "anomalygen_finetune": "anomalygen",
    "anomalygen": "data_mining",
    "data_mining": "data_merge",
    "data_merge": "train",
}
_PLACEHOLDER_LOG_TEXT = frozenset({"", "placeholder", "recorded", "todo", "n/a", "none", "ok"})


@dataclass(frozen=True)
class StageCommit:
    """One stage's outcome, as the flow reports it to `commit_stage`."""

    iter_label: str
    stage: str
    status: Literal["ok", "error"]
    summary: str
    duration_sec: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))


@dataclass(frozen=True)
class NextStage:
    """Where a run continues: `stage` is a commit stage, or `finalize`, `complete` or `halt`."""

    label: str
    stage: str


@dataclass(frozen=True)
class StageDuration:
    """How long one committed stage took, for the report's timing chart."""

    seq: int
    iter_label: str
    stage: str
    status: str
    seconds: float


# ---------------------------------------------------------------------------------------------------------
# Reading and creating


def state_path(results_dir: Path) -> Path:
    return Path(results_dir) / STATE_FILE


def init_state(
    results_dir: Path,
    *,
    kpi_target: str,
    metric_contract: Mapping[str, Any],
    max_iterations: int,
    config: Mapping[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create the state file of a new run; refuses to overwrite an existing one."""
    results_dir = Path(os.path.abspath(results_dir))
    path = state_path(results_dir)
    problems = _init_problems(path, kpi_target, metric_contract, max_iterations, config)
    if problems:
        raise StateError(problems, summary=f"{path}: cannot start a run state; nothing was written")
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "started_at": _utc_text(now),
        "status": "in_progress",
        "kpi_target": kpi_target,
        "metric_contract": _json_copy(metric_contract),
        "results_dir": str(results_dir),
        "max_iterations": max_iterations,
        "current_iteration": 0,
        "config": _json_copy(config),
        "iterations": {},
        "events": [],
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    with directory_flock(results_dir):
        if path.exists():
            raise _already_initialised(path)
        atomic_write_text(path, json_text(state))
    return state


def read_state(results_dir: Path) -> dict[str, Any]:
    """Load and check the state file; `StateError` naming the file for anything unusable."""
    path = state_path(results_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StateError.at(
            str(path),
            "no run state file here",
            "point at the results directory of an existing run (results/run_<timestamp>/), or start a new run",
        ) from None
    try:
        state = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise StateError.at(str(path), f"not UTF-8 text (byte {error.start})", _RESTORE_FIX) from None
    except json.JSONDecodeError as error:
        what = (
            "the file is empty"
            if not data.strip()
            else f"truncated or invalid JSON at line {error.lineno} column {error.colno} "
            f"(character {error.pos} of {len(data)}): {error.msg}"
        )
        raise StateError.at(str(path), what, _RESTORE_FIX) from None
    problems = _document_problems(path, state)
    if problems:
        raise StateError(problems, summary=f"{path}: the run state is invalid")
    return state


# ---------------------------------------------------------------------------------------------------------
# Resume logic


def next_stage(state: Mapping[str, Any]) -> NextStage:
    """Where the run continues (deft-spec §5.6), from the state alone, never from artifacts on disk."""
    current = state["current_iteration"]
    iterations = state["iterations"]
    label = BASELINE if not iterations or current == 0 else f"iter{current}"
    if state["status"] == "complete":
        return NextStage(label, "complete")
    if state["status"] == "failed":
        return NextStage(label, "halt")
    entry = iterations.get(label, {})
    completed = entry.get("stage_completed")
    if completed == "evaluate":
        passed = _passed(entry)
        # With a budget of 0 iterations the baseline is the final candidate (the reference needs >= 1).
        budget_spent = current >= state["max_iterations"] and (label != BASELINE or state["max_iterations"] == 0)
        return NextStage(label, "finalize" if passed or budget_spent else "rca")
    if completed == "rca":
        return NextStage(f"iter{current + 1}", "routing")
    if completed is None:
        # The reference maps "nothing yet" to train for every label; an iterN entry without a completed
        # stage exists only after its routing failed, and iterN starts with routing.
        return NextStage(label, "train" if label == BASELINE else "routing")
    return NextStage(label, _FOLLOWS[completed])


def last_events(state: Mapping[str, Any], n: int = 5) -> list[dict[str, Any]]:
    """The last `n` events, oldest first (what a resumed run shows on start-up)."""
    return [dict(event) for event in state["events"][-n:]] if n > 0 else []


def stage_durations(state: Mapping[str, Any]) -> list[StageDuration]:
    """Measured duration of every committed stage, in commit order."""
    return [
        StageDuration(
            seq=event["seq"],
            iter_label=event["iter"],
            stage=event["stage"],
            status=event["status"],
            seconds=float(event.get("duration_measured_sec", event.get("duration_sec", 0))),
        )
        for event in state["events"]
    ]


# ---------------------------------------------------------------------------------------------------------
# Committing


def commit_stage(results_dir: Path, commit: StageCommit, *, now: datetime | None = None) -> dict[str, Any]:
    """Record one stage outcome: validate against the state on disk, then write snapshot + event at once.

    Raises `StateError` listing every problem and leaves the file untouched when the commit is refused.
    A commit must be the stage `next_stage` expects (`finalize` is committed as `loop_stop`). Retry after a
    hard stop: a failed run accepts exactly one commit, the stage that failed under the same label, as a
    new event; an `ok` retry reopens the run (`in_progress`), an `error` retry keeps it failed. Nothing
    restarts by itself: `next_stage` answers `halt` until then. `final_automl` (Phase 3) commits `train`
    then `evaluate`, only on a complete run, and never changes the run's status.
    """
    results_dir = Path(os.path.abspath(results_dir))
    path = state_path(results_dir)
    with directory_flock(results_dir):
        state = read_state(results_dir)
        problems = _commit_problems(state, commit)
        recorded: dict[str, Any] = {}
        if not problems and commit.status == "ok":
            recorded, problems = _stage_record(state, commit, results_dir)
        if problems:
            raise StateError(
                problems,
                summary=f"{path}: commit {commit.iter_label}/{commit.stage} refused; the state is unchanged",
            )
        updated = _apply(state, commit, recorded, _utc_text(now))
        atomic_write_text(path, json_text(updated))
    return updated


def preseed_baseline(
    results_dir: Path,
    *,
    best_ckpt_path: str,
    train_metric: float | None,
    training_spec: str,
    summary: str,
    duration_sec: float = 1.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record Phase 1's winning checkpoint as the baseline training (the Phase 1 -> Phase 2 handoff).

    The checkpoint must already be copied into `RD/baseline/train/`. The reference writes this entry by
    hand with a zero duration; here it is an ordinary `baseline/train` commit with `source: automl_phase1`.
    """
    fields: dict[str, Any] = {
        "best_ckpt_path": best_ckpt_path,
        "training_spec": training_spec,
        "train_metric": train_metric,
        "source": PHASE1_SOURCE,
    }
    commit = StageCommit(BASELINE, "train", "ok", summary, duration_sec, fields)
    return commit_stage(results_dir, commit, now=now)


# ---------------------------------------------------------------------------------------------------------
# Checks of the document


def _init_problems(
    path: Path,
    kpi_target: object,
    metric_contract: object,
    max_iterations: object,
    config: object,
) -> list[Problem]:
    problems: list[Problem] = []
    if path.exists():
        problems.append(_already_initialised(path).problems[0])
    if not isinstance(kpi_target, str) or not kpi_target.strip():
        problems.append(Problem("kpi_target", f"must be a non-empty text, got {kpi_target!r}", _TARGET_FIX))
    if not _is_int(max_iterations) or max_iterations < 0:
        problems.append(
            Problem(
                "max_iterations",
                f"must be a non-negative integer, got {max_iterations!r}",
                "set 0 (evaluate the baseline only) or more",
            )
        )
    if not isinstance(config, Mapping):
        problems.append(Problem("config", f"must be a mapping, got {type(config).__name__}", "pass a dict"))
    elif not _is_json(config):
        problems.append(Problem("config", "holds values JSON cannot store", "pass strings, numbers, lists"))
    if not isinstance(metric_contract, Mapping):
        problems.append(
            Problem("metric_contract", f"must be a mapping, got {type(metric_contract).__name__}", _TARGET_FIX)
        )
    else:
        try:
            MetricContract.from_dict(metric_contract)
        except AoiPipelineError as error:
            problems.extend(error.problems)
    return problems


_TARGET_FIX = "give a KPI target such as 'FAR < 5% at Recall=100%'"


def _already_initialised(path: Path) -> StateError:
    return StateError.at(
        str(path),
        "a run state already exists here",
        "resume that run (it continues from this file), or start a fresh run in a new results directory; "
        "a run is never re-initialised in place",
    )


def _document_problems(path: Path, state: object) -> list[Problem]:
    where = str(path)
    if not isinstance(state, dict):
        return [Problem(where, f"the top level is a JSON {type(state).__name__}, not an object", _RESTORE_FIX)]
    problems: list[Problem] = []
    for key, expected in _TOP_LEVEL_TYPES.items():
        if key not in state:
            problems.append(Problem(where, f"required key '{key}' is missing", _RESTORE_FIX))
        elif not isinstance(state[key], expected) or isinstance(state[key], bool):
            problems.append(
                Problem(
                    f"{where}: {key}",
                    f"must be a {expected.__name__}, got {state[key]!r:.80}",
                    _RESTORE_FIX,
                )
            )
    if problems:
        return problems
    if state["version"] != STATE_VERSION:
        problems.append(
            Problem(
                f"{where}: version",
                f"version {state['version']} is not supported (this release reads version {STATE_VERSION})",
                "finish that run with the release that started it, or start a fresh run",
            )
        )
    if state["status"] not in RUN_STATUSES:
        problems.append(Problem(f"{where}: status", f"{state['status']!r} is not one of {RUN_STATUSES}", _RESTORE_FIX))
    if state["max_iterations"] < 0 or state["current_iteration"] < 0:
        problems.append(
            Problem(
                where,
                f"max_iterations {state['max_iterations']} / current_iteration {state['current_iteration']} "
                "out of range",
                _RESTORE_FIX,
            )
        )
    for label, entry in state["iterations"].items():
        if not ITER_LABEL_RE.fullmatch(label) or not isinstance(entry, dict):
            problems.append(Problem(f"{where}: iterations.{label}", "not a valid iteration entry", _RESTORE_FIX))
    problems.extend(_event_problems(where, state["events"]))
    return problems


def _event_problems(where: str, events: list[Any]) -> list[Problem]:
    problems: list[Problem] = []
    previous: int | None = None
    for index, event in enumerate(events):
        at = f"{where}: events[{index}]"
        if not isinstance(event, dict) or not {"seq", "iter", "stage", "status"} <= event.keys():
            problems.append(Problem(at, "not an event with seq, iter, stage and status", _RESTORE_FIX))
            continue
        seq = event["seq"]
        if not _is_int(seq):
            continue  # as in the reference, a non-integer seq (a bool, say) takes no part in the order
        if previous is not None and seq <= previous:
            problems.append(
                Problem(at, f"seq {seq} does not increase (previous event has seq {previous})", _RESTORE_FIX)
            )
        previous = seq if previous is None else max(previous, seq)
    return problems


# ---------------------------------------------------------------------------------------------------------
# Checks of a commit: the commit itself and its place in the stage order


def _commit_problems(state: Mapping[str, Any], commit: StageCommit) -> list[Problem]:
    where = f"commit {commit.iter_label}/{commit.stage}"
    problems: list[Problem] = []
    if not isinstance(commit.iter_label, str) or not ITER_LABEL_RE.fullmatch(commit.iter_label):
        problems.append(
            Problem(
                f"{where}: iter_label",
                f"{commit.iter_label!r} is not an iteration label",
                "use baseline, iter<N> (N >= 1, no leading zero) or final_automl",
            )
        )
    if commit.stage not in STAGES:
        problems.append(Problem(f"{where}: stage", f"{commit.stage!r} is unknown", f"use one of {STAGES}"))
    if commit.status not in ("ok", "error"):
        problems.append(Problem(f"{where}: status", f"{commit.status!r} is unknown", "use 'ok' or 'error'"))
    if not isinstance(commit.summary, str) or not commit.summary.strip() or "\n" in commit.summary:
        problems.append(
            Problem(f"{where}: summary", f"{commit.summary!r:.80} is not one non-empty line", "give one line")
        )
    duration = commit.duration_sec
    if not _is_number(duration) or not math.isfinite(duration) or duration <= 0:
        problems.append(
            Problem(
                f"{where}: duration_sec",
                f"{duration!r} is not a measured duration",
                "pass the stage's wall-clock seconds (a positive number)",
            )
        )
    if commit.skipped and (commit.stage not in SKIPPABLE_STAGES or commit.status != "ok"):
        problems.append(
            Problem(
                f"{where}: skipped",
                f"only an ok commit of {' or '.join(SKIPPABLE_STAGES)} may be skipped",
                "run the stage, or commit it with status 'error'",
            )
        )
    if commit.skipped and commit.fields:
        problems.append(
            Problem(
                f"{where}: fields",
                f"a skipped stage records no artifacts, got {list(commit.fields)}",
                "drop the fields, or commit the stage as run",
            )
        )
    problems.extend(
        Problem(f"{where}: fields", f"field name {name!r} is not text", "name fields by their state keys")
        for name in commit.fields
        if not isinstance(name, str)
    )
    if commit.status == "error":  # ok commits are checked field by field in _stage_record
        problems.extend(
            Problem(
                f"{where}: {name}",
                f"{value!r:.80} cannot be stored in JSON",
                "pass text, finite numbers, lists or mappings of them",
            )
            for name, value in _jsonable(commit.fields).items()
            if not _is_json(value)
        )
    if not problems:
        problems.extend(_order_problems(state, commit, where))
    return problems


def _order_problems(state: Mapping[str, Any], commit: StageCommit, where: str) -> list[Problem]:
    expected = _expected_commit(state, commit.iter_label)
    if isinstance(expected, Problem):
        return [Problem(where, expected.what, expected.fix)]
    if (commit.iter_label, commit.stage) == expected:
        return []
    label, stage = expected
    return [
        Problem(
            where,
            f"out of order: the run state expects {label}/{stage} next",
            f"commit {label}/{stage} first; stages run in the order of deft-spec §5.5 and are never skipped "
            "or repeated (only a failed stage may be retried)",
        )
    ]


def _expected_commit(state: Mapping[str, Any], label: str) -> tuple[str, str] | Problem:
    """The one (label, stage) the state accepts now, or a Problem saying why it accepts none."""
    if label == FINAL_AUTOML:
        return _expected_final_automl(state)
    if state["status"] == "failed":
        failed = _last_error(state)
        if failed is None:
            return Problem("", "the run is failed but no error event says which stage", _RESTORE_FIX)
        return failed
    step = next_stage(state)
    if step.stage == "complete":
        return Problem(
            "",
            "the run is complete; only Phase 3 may still register under final_automl",
            "start a fresh run for new work",
        )
    return step.label, "loop_stop" if step.stage == "finalize" else step.stage


def _expected_final_automl(state: Mapping[str, Any]) -> tuple[str, str] | Problem:
    if state["status"] != "complete":
        return Problem(
            "",
            f"Phase 3 registers only after the loop is complete (run status is {state['status']!r})",
            "finish the loop first; a hard-stopped loop skips Phase 3",
        )
    entry = state["iterations"].get(FINAL_AUTOML, {})
    if entry.get("status") == "failed":
        failed = _last_error(state, FINAL_AUTOML)
        if failed is not None:
            return failed
    completed = entry.get("stage_completed")
    if completed is None:
        return FINAL_AUTOML, "train"
    if completed == "train":
        return FINAL_AUTOML, "evaluate"
    return Problem("", "Phase 3's result is already registered", "start a fresh run for new work")


def _last_error(state: Mapping[str, Any], label: str | None = None) -> tuple[str, str] | None:
    for event in reversed(state["events"]):
        if label is not None and event["iter"] != label:
            continue
        return (event["iter"], event["stage"]) if event["status"] == "error" else None
    return None


# ---------------------------------------------------------------------------------------------------------
# Checks of a commit: the stage's artifacts (ok commits only)

_STAGE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # stage: (required, optional)
    "train": (("best_ckpt_path", "training_spec"), ("best_ckpt_kind", "val_loss", "train_metric", "source")),
    "evaluate": (("metric_result", "best_ckpt_path", "inference_csv"), ("training_spec", "threshold")),
    "rca": (("rca_gaps_parquet",), ("rca_threshold", "rca_target_defects")),
    "routing": (("routing_mining_parquet", "routing_anomalygen_parquet"), ()),
    "anomalygen": (("anomalygen_sdg_csv", "anomalygen_allocation_json"), ()),
    "data_mining": (
        (
            "mining_mined_parquet",
            "mining_candidate_parquet",
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
        (),
    ),
    "data_merge": (("combined_training_csv", "provenance_csv", "merge_validation_report"), ()),
    "loop_stop": (("stop_reason", "best_model_json", "inference_spec"), ()),
}
_MINING_LOGS = ("mining_target_log", "mining_source_log", "mining_knn_log")


def _stage_record(
    state: Mapping[str, Any], commit: StageCommit, results_dir: Path
) -> tuple[dict[str, Any], list[Problem]]:
    """What an ok commit writes into `iterations.<L>`, or the problems that refuse it."""
    where = f"commit {commit.iter_label}/{commit.stage}"
    if commit.skipped:
        return {f"{commit.stage}_skipped": True}, []
    fields = _jsonable(commit.fields)
    required, optional = _STAGE_FIELDS[commit.stage]
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
    [Mapping[str, Any], StageCommit, dict[str, Any], Path, str], tuple[dict[str, Any], list[Problem]]
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
    if threshold is not None:
        extra["threshold"] = threshold
    if contract_data.get("name") == "far_pct":
        extra["far_pct"] = result.value
    return extra, []


def _check_anomalygen(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    at = f"{where}: anomalygen_allocation_json"
    allocation, problems = _read_json_object(at, fields["anomalygen_allocation_json"])
    if problems:
        return {}, problems
    bad = {key: value for key, value in allocation.items() if not _is_int(value) or value < 0}
    if not allocation or bad or sum(allocation.values()) <= 0:
        what = f"counts {bad} are not non-negative integers" if bad else f"allocation {allocation} sums to 0"
        return {}, [Problem(at, what, "AMP placed no defects: check the defect spec and CAD masks, re-run")]
    return {"anomalygen_amp_allocated": sum(allocation.values())}, []


def _check_data_mining(
    state: Mapping[str, Any], commit: StageCommit, fields: dict[str, Any], results_dir: Path, where: str
) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    iteration_dir = results_dir / commit.iter_label
    for name in _STAGE_FIELDS["data_mining"][0]:
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
        if not _is_int(value):
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
    iterations = state["iterations"]
    label = commit.iter_label
    if iterations.get(BASELINE, {}).get("status") != "complete":
        problems.append(Problem(where, "the baseline is not complete", "finish baseline evaluate first"))
    if iterations.get(label, {}).get("status") != "complete":
        problems.append(Problem(where, f"{label} is not complete", f"finish {label} evaluate first"))
    passed = _passed(iterations.get(label, {}))
    reason = fields["stop_reason"]
    if reason == "metric_met" and not passed:
        problems.append(
            Problem(
                f"{where}: stop_reason",
                f"metric_met, but {label}'s result did not pass",
                "use max_iterations",
            )
        )
    if reason == "max_iterations":
        number = int(label[4:]) if label.startswith("iter") else 0
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
    "train": _check_train,
    "evaluate": _check_evaluate,
    "anomalygen": _check_anomalygen,
    "data_mining": _check_data_mining,
    "data_merge": _check_data_merge,
    "loop_stop": _check_loop_stop,
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
    return [Problem(where, f"{value!r} is not a row count", "pass the number of rows of mined.parquet")]


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
    "stop_reason": _one_of(*STOP_REASONS),
}


# ---------------------------------------------------------------------------------------------------------
# Applying an accepted commit


def _apply(
    state: Mapping[str, Any], commit: StageCommit, recorded: Mapping[str, Any], timestamp: str
) -> dict[str, Any]:
    updated = copy.deepcopy(dict(state))
    updated["version"] = STATE_VERSION
    label, stage = commit.iter_label, commit.stage
    if label.startswith("iter"):
        updated["current_iteration"] = max(updated["current_iteration"], int(label[4:]))
    updated["events"].append(_event(updated["events"], commit, timestamp))
    if commit.status == "error":
        _apply_error(updated, label, stage, timestamp)
    elif stage == "loop_stop":
        updated["status"] = "complete"
        updated["completed_at"] = timestamp
        updated["stop_reason"] = recorded["stop_reason"]
        updated["final_artifacts"] = {
            "best_model_json": recorded["best_model_json"],
            "inference_spec": recorded["inference_spec"],
        }
    else:
        entry = updated["iterations"].setdefault(label, {})
        entry.update(recorded)
        evaluated = stage == "evaluate" or "metric_result" in entry
        entry["status"] = "complete" if evaluated else "in_progress"
        entry["stage_completed"] = stage
        if label != FINAL_AUTOML:  # Phase 3 adds to a complete run; it never reopens it
            updated["status"] = "in_progress"
            updated.pop("completed_at", None)
    return updated


def _apply_error(updated: dict[str, Any], label: str, stage: str, timestamp: str) -> None:
    if stage != "loop_stop":  # the iteration itself is complete when only the handoff failed
        updated["iterations"].setdefault(label, {})["status"] = "failed"
    if label != FINAL_AUTOML:  # a failed Phase 3 leaves the loop's result standing
        updated["status"] = "failed"
        updated["completed_at"] = timestamp


def _event(events: list[Mapping[str, Any]], commit: StageCommit, timestamp: str) -> dict[str, Any]:
    seqs = [event["seq"] for event in events if _is_int(event.get("seq"))]
    event: dict[str, Any] = {
        "seq": max(seqs, default=0) + 1,
        "ts": timestamp,
        "iter": commit.iter_label,
        "stage": commit.stage,
        "status": commit.status,
        "summary": commit.summary.strip(),
        "duration_sec": max(1, math.ceil(commit.duration_sec)),
        "duration_measured_sec": round(float(commit.duration_sec), 3),
    }
    if commit.skipped:
        event["skipped"] = True
    if commit.status == "error" and commit.fields:
        event["details"] = _jsonable(commit.fields)
    return event


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _passed(entry: Mapping[str, Any]) -> bool:
    result = entry.get("metric_result")
    return isinstance(result, Mapping) and result.get("passed") is True


def _utc_text(now: datetime | None) -> str:
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Commit fields as JSON values: paths become their text, everything else stays as given."""
    return {name: os.fspath(value) if isinstance(value, os.PathLike) else value for name, value in fields.items()}


def _is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, allow_nan=False))
