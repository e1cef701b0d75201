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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from aoi_pipeline.core import pool_budget
from aoi_pipeline.core.files import atomic_write_text, directory_flock, json_text
from aoi_pipeline.core.stage_artifacts import stage_record
from aoi_pipeline.core.stages import (
    BASELINE,
    FINAL_AUTOML,
    ITER_LABEL_RE,
    PHASE1_SOURCE,
    SKIPPABLE_STAGES,
    STAGES,
    LoopStep,
    Stage,
    iteration_number,
)
from aoi_pipeline.core.state_document import (
    RESTORE_FIX,
    STATE_VERSION,
    already_initialised,
    document_problems,
    init_problems,
    is_int,
    is_json,
    is_number,
    jsonable,
)
from aoi_pipeline.core.state_entries import iteration_entry, normalise_legacy_keys
from aoi_pipeline.errors import Problem, StateError

STATE_FILE = "deft_state.json"
# Top-level facts a run records once and keeps for its whole life (absent in states of older releases).
RUN_FACTS = ("kpi_split", "pool_budget", "confirm_seeds")
# §5.6: the stage after the one last completed under a label (evaluate and rca are decided separately).
_FOLLOWS = {
    Stage.TRAIN: Stage.EVALUATE,
    Stage.ROUTING: Stage.ANOMALYGEN,
    "anomalygen_finetune": Stage.ANOMALYGEN,
    Stage.ANOMALYGEN: Stage.DATA_MINING,
    Stage.DATA_MINING: Stage.DATA_MERGE,
    Stage.DATA_MERGE: Stage.TRAIN,
}


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
    stage: Stage | LoopStep


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
    problems = init_problems(path, kpi_target, metric_contract, max_iterations, config)
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
            raise already_initialised(path)
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
        raise StateError.at(str(path), f"not UTF-8 text (byte {error.start})", RESTORE_FIX) from None
    except json.JSONDecodeError as error:
        what = (
            "the file is empty"
            if not data.strip()
            else f"truncated or invalid JSON at line {error.lineno} column {error.colno} "
            f"(character {error.pos} of {len(data)}): {error.msg}"
        )
        raise StateError.at(str(path), what, RESTORE_FIX) from None
    problems = document_problems(path, state)
    if problems:
        raise StateError(problems, summary=f"{path}: the run state is invalid")
    return normalise_legacy_keys(state)


# ---------------------------------------------------------------------------------------------------------
# Resume logic


def next_stage(state: Mapping[str, Any]) -> NextStage:
    """Where the run continues (deft-spec §5.6), from the state alone, never from artifacts on disk."""
    current = state["current_iteration"]
    iterations = state["iterations"]
    label = BASELINE if not iterations or current == 0 else f"iter{current}"
    if state["status"] == "complete":
        return NextStage(label, LoopStep.COMPLETE)
    if state["status"] == "failed":
        return NextStage(label, LoopStep.HALT)
    entry = iteration_entry(state, label)
    completed = entry.stage_completed
    if completed == Stage.EVALUATE:
        passed = entry.passed
        # With a budget of 0 iterations the baseline is the final candidate (the reference needs >= 1).
        budget_spent = current >= state["max_iterations"] and (label != BASELINE or state["max_iterations"] == 0)
        # The pool budget ends the loop before an iteration that would take more of the pool than allowed.
        budget_spent = budget_spent or (label != BASELINE and pool_budget.stops_loop(state))
        return NextStage(label, LoopStep.FINALIZE if passed or budget_spent else Stage.RCA)
    if completed == Stage.RCA:
        return NextStage(f"iter{current + 1}", Stage.ROUTING)
    if completed is None:
        # The reference maps "nothing yet" to train for every label; an iterN entry without a completed
        # stage exists only after its routing failed, and iterN starts with routing.
        return NextStage(label, Stage.TRAIN if label == BASELINE else Stage.ROUTING)
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
            recorded, problems = stage_record(state, commit, results_dir)
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
    commit = StageCommit(BASELINE, Stage.TRAIN, "ok", summary, duration_sec, fields)
    return commit_stage(results_dir, commit, now=now)


def record_run_fact(results_dir: Path, key: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """Record a fact the whole run keeps (the KPI split, the pool budget) at the top level of the state.

    Written once, under the state's lock, in one atomic replace; recording the same value again is a no-op,
    a different one is refused (a resumed run must score on the boards and budget it started with).
    """
    results_dir = Path(os.path.abspath(results_dir))
    path = state_path(results_dir)
    if key not in RUN_FACTS:
        raise ValueError(f"{key!r} is not a run fact; use one of {RUN_FACTS}")
    if not is_json(value):
        raise StateError.at(f"{path}: {key}", "holds values JSON cannot store", "pass text, numbers, lists")
    with directory_flock(results_dir):
        state = read_state(results_dir)
        copied = _json_copy(value)
        if key in state:
            if state[key] != copied:
                raise StateError.at(
                    f"{path}: {key}",
                    "is already recorded with a different value",
                    "resume with the value the run started with, or start a fresh run",
                )
            return state
        updated = copy.deepcopy(state)
        updated[key] = copied
        atomic_write_text(path, json_text(updated))
    return updated


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
    if not is_number(duration) or not math.isfinite(duration) or duration <= 0:
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
    problems.extend(_field_problems(commit, where))
    if not problems:
        problems.extend(_order_problems(state, commit, where))
    return problems


def _field_problems(commit: StageCommit, where: str) -> list[Problem]:
    problems = [
        Problem(f"{where}: fields", f"field name {name!r} is not text", "name fields by their state keys")
        for name in commit.fields
        if not isinstance(name, str)
    ]
    if commit.status == "error":  # ok commits are checked field by field in stage_record
        problems.extend(
            Problem(
                f"{where}: {name}",
                f"{value!r:.80} cannot be stored in JSON",
                "pass text, finite numbers, lists or mappings of them",
            )
            for name, value in jsonable(commit.fields).items()
            if not is_json(value)
        )
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
            return Problem("", "the run is failed but no error event says which stage", RESTORE_FIX)
        return failed
    step = next_stage(state)
    if step.stage == LoopStep.COMPLETE:
        return Problem(
            "",
            "the run is complete; only Phase 3 may still register under final_automl",
            "start a fresh run for new work",
        )
    return step.label, Stage.LOOP_STOP if step.stage == LoopStep.FINALIZE else step.stage


def _expected_final_automl(state: Mapping[str, Any]) -> tuple[str, str] | Problem:
    if state["status"] != "complete":
        return Problem(
            "",
            f"Phase 3 registers only after the loop is complete (run status is {state['status']!r})",
            "finish the loop first; a hard-stopped loop skips Phase 3",
        )
    entry = iteration_entry(state, FINAL_AUTOML)
    if entry.status == "failed":
        failed = _last_error(state, FINAL_AUTOML)
        if failed is not None:
            return failed
    completed = entry.stage_completed
    if completed is None:
        return FINAL_AUTOML, Stage.TRAIN
    if completed == Stage.TRAIN:
        return FINAL_AUTOML, Stage.EVALUATE
    return Problem("", "Phase 3's result is already registered", "start a fresh run for new work")


def expected_commit(state: Mapping[str, Any], label: str | None = None) -> tuple[str, str] | None:
    """The one (label, stage) the state accepts as its next commit (under `label` when given: Phase 3 asks
    for `final_automl`), or None when it accepts none (a complete run, a registered Phase 3)."""
    expected = _expected_commit(state, label or "")
    return None if isinstance(expected, Problem) else expected


def _last_error(state: Mapping[str, Any], label: str | None = None) -> tuple[str, str] | None:
    for event in reversed(state["events"]):
        if label is not None and event["iter"] != label:
            continue
        return (event["iter"], event["stage"]) if event["status"] == "error" else None
    return None


# ---------------------------------------------------------------------------------------------------------
# Applying an accepted commit


def _apply(
    state: Mapping[str, Any], commit: StageCommit, recorded: Mapping[str, Any], timestamp: str
) -> dict[str, Any]:
    updated = copy.deepcopy(dict(state))
    updated["version"] = STATE_VERSION
    label, stage = commit.iter_label, commit.stage
    if label.startswith("iter"):
        updated["current_iteration"] = max(updated["current_iteration"], iteration_number(label))
    updated["events"].append(_event(updated["events"], commit, timestamp))
    if commit.status == "error":
        _apply_error(updated, label, stage, timestamp)
    elif stage == Stage.LOOP_STOP:
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
        evaluated = stage == Stage.EVALUATE or "metric_result" in entry
        entry["status"] = "complete" if evaluated else "in_progress"
        entry["stage_completed"] = str(stage)
        if label != FINAL_AUTOML:  # Phase 3 adds to a complete run; it never reopens it
            updated["status"] = "in_progress"
            updated.pop("completed_at", None)
    return updated


def _apply_error(updated: dict[str, Any], label: str, stage: str, timestamp: str) -> None:
    if stage != Stage.LOOP_STOP:  # the iteration itself is complete when only the handoff failed
        updated["iterations"].setdefault(label, {})["status"] = "failed"
    if label != FINAL_AUTOML:  # a failed Phase 3 leaves the loop's result standing
        updated["status"] = "failed"
        updated["completed_at"] = timestamp


def _event(events: list[Mapping[str, Any]], commit: StageCommit, timestamp: str) -> dict[str, Any]:
    seqs = [event["seq"] for event in events if is_int(event.get("seq"))]
    event: dict[str, Any] = {
        "seq": max(seqs, default=0) + 1,
        "ts": timestamp,
        "iter": commit.iter_label,
        "stage": str(commit.stage),
        "status": commit.status,
        "summary": commit.summary.strip(),
        "duration_sec": max(1, math.ceil(commit.duration_sec)),
        "duration_measured_sec": round(float(commit.duration_sec), 3),
    }
    if commit.skipped:
        event["skipped"] = True
    if commit.status == "error" and commit.fields:
        event["details"] = jsonable(commit.fields)
    return event


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _utc_text(now: datetime | None) -> str:
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    return copied
