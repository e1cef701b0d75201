"""One AutoML trial: a real training job, inference on the validation CSV, and the FAR that scores it.

A recommendation's parameters go into a training spec with the phase's pinned epochs and batch size (and the
warm-start checkpoint in Phase 3); the trained checkpoint (best validation loss, else the latest) scores the
validation CSV, never the KPI set, and the trial's value is the FAR at the metric contract's recall. A model
that scores every validation row the same, or flags every row at that operating point, has collapsed to one
class and is rejected rather than ranked. A program failure fails only this trial and the sweep goes on; an
infrastructure failure raises `TrialInfrastructureError` so the caller may retry the trial. The outcome is
recorded in `trial.json` beside the jobs' own directories, and a trial whose outcome is recorded is never run
again. A trial whose training the sweep stopped for its pruner (`pruning.request_prune`) ends `pruned` with the
epochs it had done.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from aoi_pipeline.core.far import FarResult, ScoredRows, far_at_recall, read_scored_csv
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.errors import (
    MetricContractError,
    Problem,
    StateError,
    TrialCancelledError,
    TrialInfrastructureError,
)
from aoi_pipeline.jobs.checkpoints import STATUS_FILE, best_val_checkpoint, latest_checkpoint
from aoi_pipeline.jobs.dispatch import in_flight
from aoi_pipeline.jobs.job import JobResult
from aoi_pipeline.jobs.process_group import stop_leftover_jobs
from aoi_pipeline.jobs.status_json import read_status, validation_history
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.pruning import PRUNE_FILE, PRUNE_METRIC, PRUNING_OVERRIDES, TRAIN_DIR, read_prune
from aoi_pipeline.pipeline.run_specs import inference_spec, training_spec

TrialState = Literal["complete", "failed", "collapsed", "pruned"]
TRIAL_FILE = "trial.json"
VAL_INFERENCE_DIR = "val_inference"
INFERENCE_CSV = "inference.csv"
# Scores closer together than this are one score: float32 networks do not separate rows by less.
COLLAPSE_SPREAD = 1e-9
_JOB_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended; `far_pct` is the value the study minimises (only when state is complete)."""

    number: int
    params: dict[str, Any]
    state: TrialState
    far_pct: float | None
    recall_pct: float | None
    threshold: float | None
    val_loss: float | None
    checkpoint: Path | None
    train_spec_path: Path | None
    inference_csv: Path | None
    duration_s: float
    reason: str = ""
    # Epochs the training had done when its pruner stopped it (state "pruned" only).
    pruned_epoch: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON document of `trial.json` (paths as strings)."""
        record = asdict(self)
        for name in ("checkpoint", "train_spec_path", "inference_csv"):
            record[name] = None if record[name] is None else str(record[name])
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, where: str) -> TrialOutcome:
        """The outcome a `trial.json` holds; StateError naming `where` when it is not one."""
        try:
            state = record["state"]
            if state not in get_args(TrialState):
                raise ValueError(f"state {state!r} is not one of {get_args(TrialState)}")
            return cls(
                number=int(record["number"]),
                params=dict(record["params"]),
                state=state,
                far_pct=_optional_float(record["far_pct"]),
                recall_pct=_optional_float(record["recall_pct"]),
                threshold=_optional_float(record["threshold"]),
                val_loss=_optional_float(record["val_loss"]),
                checkpoint=_optional_path(record["checkpoint"]),
                train_spec_path=_optional_path(record["train_spec_path"]),
                inference_csv=_optional_path(record["inference_csv"]),
                duration_s=float(record["duration_s"]),
                reason=str(record.get("reason", "")),
                pruned_epoch=None if record.get("pruned_epoch") is None else int(record["pruned_epoch"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StateError.at(
                where,
                f"is not a trial outcome ({type(error).__name__}: {error})",
                "delete the trial directory so the trial runs again, or restore the file",
            ) from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def read_outcome(trial_dir: Path) -> TrialOutcome | None:
    """The outcome recorded in `<trial_dir>/trial.json`, or None when the trial has not finished."""
    path = Path(trial_dir) / TRIAL_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError as error:
        raise StateError.at(
            str(path), f"is not valid JSON ({error})", "delete the trial directory so the trial runs again"
        ) from None
    if not isinstance(record, Mapping):
        raise StateError.at(str(path), "does not hold a JSON object", "delete the trial directory")
    return TrialOutcome.from_record(record, where=str(path))


def run_trial(
    ctx: RunContext,
    *,
    phase: str,
    number: int,
    params: Mapping[str, Any],
    base_spec: Spec,
    pretrained_model: Path | None = None,
) -> TrialOutcome:
    """Train with `params`, score the validation CSV, and record the outcome in the trial's `trial.json`.

    The phase's settings pin epochs, batch size and spec overrides; each job gets the run's job defaults. A
    trial already recorded in its directory returns its recorded outcome without running anything; the
    directories of an earlier unfinished attempt (an infrastructure failure being retried) are kept beside
    the new ones as `train.attempt<N>` / `val_inference.attempt<N>`. Raises TrialInfrastructureError
    (retriable) or TrialCancelledError; a spec that the parameters cannot be applied to raises SpecError
    before any job runs.
    """
    started = time.monotonic()
    trial_dir = ctx.layout.trial_dir(phase, number)
    recorded = _recorded_outcome(trial_dir, number, params)
    if recorded is not None:
        return recorded
    settings = ctx.automl(phase)
    train_dir, inference_dir = trial_dir / TRAIN_DIR, trial_dir / VAL_INFERENCE_DIR
    train_spec = training_spec(
        base_spec,
        results_dir=train_dir,
        num_epochs=settings.num_epochs,
        batch_size=settings.batch_size,
        params=params,
        pretrained_model=pretrained_model,
        # The pruner needs a validation every epoch; the phase's own overrides come after and may change it.
        extra_overrides=(*PRUNING_OVERRIDES, *settings.spec_overrides)
        if settings.pruner != "none"
        else settings.spec_overrides,
    )
    _set_aside_earlier_attempt(train_dir, inference_dir)
    (trial_dir / PRUNE_FILE).unlink(missing_ok=True)  # a pruning decision of an earlier attempt is not this one's
    record = _Recorder(trial_dir, number, dict(params), started)
    trained = ctx.runner.run(
        ctx.jobs.job(name=_job_name(trial_dir, number, "train"), action="train", spec=train_spec, results_dir=train_dir)
    )
    pruned = read_prune(trial_dir) if trained.status == "cancelled" else None
    if pruned is not None:
        return record.pruned(pruned, settings.num_epochs, train_spec_path=trained.spec_path)
    if (reason := _program_failure(trained, number, "train")) is not None:
        return record.failed(reason, train_spec_path=trained.spec_path)
    checkpoint = best_val_checkpoint(train_dir) or latest_checkpoint(train_dir)
    val_loss = min_val_loss(train_dir)
    if checkpoint is None:
        reason = f"train wrote no checkpoint into {train_dir}"
        return record.failed(reason, train_spec_path=trained.spec_path, val_loss=val_loss)
    known = {"train_spec_path": trained.spec_path, "val_loss": val_loss, "checkpoint": checkpoint.path}
    return _score_on_validation(ctx, record, train_spec, known, trial_dir, number)


def _score_on_validation(
    ctx: RunContext, record: _Recorder, train_spec: Spec, known: dict[str, Any], trial_dir: Path, number: int
) -> TrialOutcome:
    """Infer the trained checkpoint on the validation CSV and record the FAR at the contract's recall."""
    inference_dir = trial_dir / VAL_INFERENCE_DIR
    scoring_spec = inference_spec(
        train_spec,
        checkpoint=known["checkpoint"],
        csv_path=ctx.workspace.validation_csv,
        images_dir=ctx.workspace.images_dir,
        results_dir=inference_dir,
    )
    name = _job_name(trial_dir, number, "inference")
    inferred = ctx.runner.run(ctx.jobs.job(name=name, action="inference", spec=scoring_spec, results_dir=inference_dir))
    if (reason := _program_failure(inferred, number, "validation inference")) is not None:
        return record.failed(reason, **known)
    scores_csv = inference_dir / INFERENCE_CSV
    try:
        rows = read_scored_csv(scores_csv)
    except MetricContractError as error:
        return record.failed(f"validation scoring failed: {error}", inference_csv=scores_csv, **known)
    recall = ctx.contract.recall_target_pct
    far = far_at_recall(rows, 100.0 if recall is None else recall)
    return record.scored(far, collapse_reason(rows, far), inference_csv=scores_csv, **known)


def min_val_loss(train_dir: Path) -> float | None:
    """The lowest finite `val_loss` of the validations in the train job's status.json, else None."""
    history = validation_history(read_status(Path(train_dir) / STATUS_FILE))
    losses = [kpis["val_loss"] for _, kpis in history if math.isfinite(kpis.get("val_loss", math.nan))]
    return min(losses) if losses else None


def collapse_reason(rows: ScoredRows, far: FarResult) -> str | None:
    """Why the scores show a model collapsed to one class, or None when they separate the rows at all.

    Collapsed: every row got the same score, so the model ranks nothing. A FAR of 100 % is not collapse: one
    defect scored below every PASS row forces it at full recall while the model may still rank the rest
    well; such a trial is ranked (badly) like any other.
    """
    spread = float(rows.scores.max() - rows.scores.min())
    if spread < COLLAPSE_SPREAD:
        return (
            f"mode collapse: every one of the {len(rows.labels)} validation rows got the same score "
            f"({float(rows.scores[0]):.6g}), so the model cannot tell PASS from defects"
        )
    return None


class _Recorder:
    """Builds a trial's outcome and writes it to trial.json."""

    def __init__(self, trial_dir: Path, number: int, params: dict[str, Any], started: float) -> None:
        self.trial_dir, self.number, self.params, self.started = trial_dir, number, params, started

    def failed(self, reason: str, **known: Any) -> TrialOutcome:
        return self._write("failed", reason, **known)

    def pruned(self, decision: Mapping[str, Any], num_epochs: int, **known: Any) -> TrialOutcome:
        done = int(decision["epochs_done"])
        value = decision.get(PRUNE_METRIC)
        reason = f"pruned after epoch {done} of {num_epochs}" + (
            f" (validation FAR {value:.4g} %)" if isinstance(value, int | float) else ""
        )
        return self._write("pruned", reason, pruned_epoch=done, **known)

    def scored(self, far: FarResult, collapsed: str | None, **known: Any) -> TrialOutcome:
        return self._write(
            "collapsed" if collapsed else "complete",
            collapsed or "",
            far_pct=far.far_pct,
            recall_pct=far.recall_pct,
            threshold=far.threshold,
            **known,
        )

    def _write(self, state: TrialState, reason: str, **known: Any) -> TrialOutcome:
        values: dict[str, Any] = {
            "far_pct": None,
            "recall_pct": None,
            "threshold": None,
            "val_loss": None,
            "checkpoint": None,
            "train_spec_path": None,
            "inference_csv": None,
            "pruned_epoch": None,
            **known,
        }
        outcome = TrialOutcome(
            number=self.number,
            params=self.params,
            state=state,
            duration_s=time.monotonic() - self.started,
            reason=reason,
            **values,
        )
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.trial_dir / TRIAL_FILE, outcome.to_record())
        return outcome


def _program_failure(result: JobResult, number: int, stage: str) -> str | None:
    """None for a success, the reason for a program failure; raises for infrastructure and cancellation."""
    if result.ok:
        return None
    where = f"trial {number}, {stage} job {result.job.name} (log {result.log_path})"
    if result.status == "cancelled":
        raise TrialCancelledError.at(where, "the job was cancelled", "start the run again to resume it")
    failure = result.failure
    if failure is not None and failure.kind == "infrastructure":
        error = TrialInfrastructureError(
            Problem(
                where,
                f"an infrastructure failure: {failure.reason}",
                "retry the trial as it is; if it keeps failing, fix the machine or platform named above",
            )
        )
        error.failure = failure
        raise error
    return f"{stage} failed: {failure.reason if failure else f'the job ended {result.status}'}"


def _recorded_outcome(trial_dir: Path, number: int, params: Mapping[str, Any]) -> TrialOutcome | None:
    outcome = read_outcome(trial_dir)
    if outcome is None:
        return None
    if outcome.number != number or _as_json(outcome.params) != _as_json(params):
        raise StateError.at(
            str(trial_dir / TRIAL_FILE),
            f"records trial {outcome.number} with other parameters than trial {number} asks for",
            "give every trial its own directory (RunLayout.trial_dir) or delete the stale one",
        )
    return outcome


def _as_json(params: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(params), sort_keys=True, default=str))


def _set_aside_earlier_attempt(*job_dirs: Path) -> None:
    """Rename what an unfinished earlier attempt left, so each job gets the fresh directory it needs (a job
    still in flight on a work pool keeps its directory: the runner re-attaches to it)."""
    for job_dir in job_dirs:
        if not job_dir.exists() or in_flight(job_dir):
            continue
        stop_leftover_jobs(job_dir)  # a job a killed run left running must not write into its successor's
        attempt = 1
        while (aside := job_dir.with_name(f"{job_dir.name}.attempt{attempt}")).exists():
            attempt += 1
        job_dir.rename(aside)


def trial_in_flight(trial_dir: Path) -> bool:
    """Whether a job of the trial is still in flight on a work pool (its parent died before it ended), so a
    rerun re-attaches to it rather than proposing the trial again."""
    return any(in_flight(Path(trial_dir) / name) for name in (TRAIN_DIR, VAL_INFERENCE_DIR))


def _job_name(trial_dir: Path, number: int, action: str) -> str:
    phase = _JOB_NAME_CHARS.sub("-", trial_dir.parent.name).strip("-._")
    stem = f"trial{number:03d}-{action}"
    return f"{phase}-{stem}" if phase else stem
