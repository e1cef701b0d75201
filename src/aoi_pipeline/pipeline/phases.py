"""The phase bookkeeping of a run and the set-up of Phase 3, below the flow that orders the phases.

`PhaseBook` records in pipeline_state.json when each phase (Phase 1, the 1->2 handoff, Phase 2, Phase 3, the
deployment handoff) is done and with what result, so a rerun skips finished phases and reads their results
back instead of recomputing them. Phase 3 starts from Phase 2's handed-off best (`phase3_start`: its
checkpoint is every trial's warm start, its training spec with Phase 2's last combined CSV is the base spec);
`register_phase3` records the refinement's winner as the `final_automl` candidate and evaluates it on the KPI
set, so best-model selection weighs it against Phase 2's best under the same contract.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.core.stages import FINAL_AUTOML
from aoi_pipeline.core.state import StageCommit, commit_stage, read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import AoiPipelineError, ProgramJobError
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.evaluation import evaluate_and_commit
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout
from aoi_pipeline.pipeline.run_specs import with_train_csv
from aoi_pipeline.pipeline.trials import TrialOutcome, read_outcome


class PhaseBook:
    """Which phases of a run are done, and what each one left for the next (pipeline_state.json)."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.record = PipelineRecord(layout)

    def pending(self, phase: str) -> bool:
        return not self.record.done(phase)

    def finish_phase1(self, winner: TrialOutcome | None, recommendations: int) -> None:
        """Record Phase 1's winner; a sweep without a usable trial stops the run."""
        if winner is None:
            raise AoiPipelineError.at(
                f"phase1 ({self.layout.phase_dir('phase1')})",
                f"none of the {recommendations} trials produced a usable model",
                "read the phase1 trials table artifact; widen the search space or raise epochs, then re-run",
            )
        self.record.mark("phase1", "complete", trial=winner.number, far_pct=winner.far_pct)

    def phase1_winner(self) -> tuple[TrialOutcome, float]:
        """(winning trial, its validation FAR) of the finished Phase 1, read back from the run directory."""
        # Called once Phase 1 is recorded as complete, so its entry exists.
        phase1 = cast("dict[str, Any]", self.record.phase("phase1"))
        winner = read_outcome(self.layout.trial_dir("phase1", phase1["trial"]))
        if winner is None:
            raise AoiPipelineError.at(
                str(self.layout.trial_dir("phase1", phase1["trial"])),
                "Phase 1 is recorded as complete but its winning trial has no trial.json",
                "restore the trial directory, or start a new run",
            )
        return winner, phase1["far_pct"]

    def finish_handoff_1_2(self, *, phase1_enabled: bool) -> None:
        self.record.mark("handoff_1_2", "complete" if phase1_enabled else "skipped")

    def finish_phase2(self, final_label: str) -> None:
        self.record.mark("phase2", "complete", final_label=final_label)

    def finish_phase3(self, warm_start: str, winner: TrialOutcome | None) -> None:
        """Record Phase 3; without a usable trial (`winner` None) Phase 2's best stands."""
        self.record.mark("phase3", "complete", warm_start=warm_start, trial=None if winner is None else winner.number)

    def finish_handoff(self, deliverable: dict[str, Any]) -> None:
        self.record.mark("handoff", "complete", **deliverable)

    def deliverable(self) -> dict[str, Any]:
        """What the deployment handoff recorded: run dir, best model, inference spec, iteration, value."""
        handoff = cast("dict[str, Any]", self.record.phase("handoff"))  # called once the handoff is recorded
        return {key: value for key, value in handoff.items() if key not in ("status", "at")}


def phase2_best_checkpoint(layout: RunLayout) -> tuple[str, Path, Path]:
    """(label, checkpoint, training spec) of Phase 2's handed-off best, Phase 3's warm start."""
    state = read_state(layout.root)
    artifacts = state.get("final_artifacts") or {}
    best_json = artifacts.get("best_model_json") or str(layout.best_model)
    best = json.loads(Path(best_json).read_text(encoding="utf-8"))
    return best["iteration"], Path(best["checkpoint"]), Path(best["training_spec"])


def phase2_training_csv(layout: RunLayout, workspace: Workspace) -> tuple[Path, Path]:
    """(CSV, its images root) Phase 2 ended with: the last combined CSV, else the base training CSV."""
    state = read_state(layout.root)
    combined = [
        (int(label[4:]), entry["combined_training_csv"])
        for label, entry in state["iterations"].items()
        if label.startswith("iter") and entry.get("combined_training_csv")
    ]
    if combined:
        # Combined CSVs are workspace-relative (deft-spec §2.1).
        return Path(max(combined)[1]), workspace.root
    return workspace.training_csv, workspace.images_dir


@dataclass(frozen=True)
class Phase3Start:
    """Where Phase 3 starts: Phase 2's best (label and checkpoint) and the base spec of its trials."""

    warm_start: str
    checkpoint: Path
    base_spec: Spec


def phase3_start(ctx: RunContext) -> Phase3Start:
    """Phase 2's best checkpoint, and its training spec set to train on the CSV Phase 2 ended with."""
    label, checkpoint, spec_path = phase2_best_checkpoint(ctx.layout)
    csv_path, images_dir = phase2_training_csv(ctx.layout, ctx.workspace)
    spec = with_train_csv(load_spec(spec_path), csv_path=csv_path, images_dir=images_dir)
    return Phase3Start(warm_start=label, checkpoint=checkpoint, base_spec=spec)


def register_phase3(ctx: RunContext, winner: TrialOutcome) -> None:
    """Record Phase 3's winner as `final_automl` (train + KPI evaluate) so the handoff weighs it."""
    layout = ctx.layout
    if winner.checkpoint is None or winner.train_spec_path is None:
        raise ProgramJobError.at(
            f"phase3 trial {winner.number}", "has no checkpoint or training spec", "re-run Phase 3"
        )
    registered = read_state(layout.root)["iterations"].get(FINAL_AUTOML, {}).get("stage_completed")
    if registered == "evaluate":
        return  # a rerun after a crash between this step and the phase record
    started = time.monotonic()
    train_dir = layout.train_dir(FINAL_AUTOML)
    train_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = train_dir / winner.checkpoint.name
    shutil.copy2(winner.checkpoint, checkpoint)
    spec = load_spec(winner.train_spec_path)
    dump_spec(spec, layout.iteration_spec(FINAL_AUTOML))
    fields: dict[str, Any] = {
        "best_ckpt_path": str(checkpoint),
        "training_spec": str(layout.iteration_spec(FINAL_AUTOML)),
    }
    if winner.val_loss is not None:
        fields["val_loss"] = winner.val_loss
    summary = f"Phase 3 winner: trial {winner.number} (validation FAR {winner.far_pct:.4g}%)"
    if registered != "train":
        commit = StageCommit(FINAL_AUTOML, "train", "ok", summary, time.monotonic() - started, fields)
        commit_stage(layout.root, commit)
    evaluate_and_commit(ctx, FINAL_AUTOML)
