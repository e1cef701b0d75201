"""One night of the nightly DEFT run, below the flow: the policy it proposes, what changed, the night's run, promotion.

The nightly directory (`<results root>/nightly/`) keeps the standing policy approval (`policy.json`), the
snapshot of what the last night saw (`seen.json`), the deployed model (`deployed.json`, pointing at a versioned
handoff under `handoffs/v<NNNN>/`) and the history (`history.jsonl`). A night that trains is an ordinary run
directory (`nightly_<YYYYMMDD_HHMMSS>`): Phase 1 off, the baseline pre-seeded with the deployed checkpoint (no
retrain), the DEFT loop mining only tonight's new pool rows within the budget's share and iterations, Phase 3
as the policy says; its handoff then competes with the deployed model on the confirm split, and a promotion
copies it into the next handoff version (the previous versions stay). `JobCounter` wraps the night's job runner
to count jobs and GPU-hours and refuses a job once the night's GPU-hour budget is spent.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.dataset import write_dataset_csv
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.mining_pool import ResolvedPool, resolve_mining_pool
from aoi_pipeline.core.nightly_changes import (
    CONFIRM,
    KPI,
    VALIDATION,
    Changes,
    Drift,
    Snapshot,
    drift_on_new_rows,
    labelled_set_hashes,
    pool_hashes,
    row_key,
)
from aoi_pipeline.core.nightly_history import Promotion, promotion
from aoi_pipeline.core.nightly_policy import NightlyBudget, NightlyPolicy
from aoi_pipeline.core.state import read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import AoiPipelineError, StateError
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.pipeline.job_runner import JobRunner, stop_job
from aoi_pipeline.pipeline.kpi_parts import CONFIRM_SET_FILE
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.trials import TrialOutcome

NIGHTLY_DIR = "nightly"
DEPLOYED_FILE = "deployed.json"
NIGHT_POOL_FILE = "night_pool.csv"


def nightly_dir(config: PipelineConfig) -> Path:
    return config.resolved_results_root / NIGHTLY_DIR


def proposed_policy(config: PipelineConfig, budget: NightlyBudget) -> NightlyPolicy:
    """The policy tonight's config and budget imply."""
    return NightlyPolicy(
        platform=config.platform,
        images=config.images.model_dump(mode="json"),
        kpi_target=config.kpi_target,
        budget=budget,
    )


def resolved_pool(config: PipelineConfig) -> ResolvedPool:
    workspace = Workspace.at(config.workspace)
    return resolve_mining_pool(
        workspace.mining_pool_csv,
        images_root=workspace.images_dir,
        light=config.dataset.lights[0],
        image_ext=config.dataset.image_ext,
    )


def take_snapshot(config: PipelineConfig) -> Snapshot:
    """Tonight's content hashes of the validation, KPI and confirm sets and of the mining pool."""
    workspace = Workspace.at(config.workspace)
    csvs = {
        VALIDATION: workspace.validation_csv,
        KPI: workspace.kpi_csv,
        CONFIRM: workspace.kpi_csv.parent / CONFIRM_SET_FILE,
    }
    lights, ext = config.dataset.lights, config.dataset.image_ext
    labelled = {
        name: labelled_set_hashes(path, images_dir=workspace.images_dir, lights=lights, image_ext=ext)
        for name, path in csvs.items()
    }
    pool = frozenset(pool_hashes(resolved_pool(config))) if workspace.mining_pool_csv.is_file() else frozenset()
    return Snapshot(labelled=labelled, pool=pool)


@dataclass(frozen=True)
class DeployedModel:
    """The model the line runs: a handoff's best_model.json, its version (0 = a pipeline run's own handoff)."""

    best_model_json: Path
    record: dict[str, Any]
    version: int

    @property
    def checkpoint(self) -> Path:
        return Path(self.record["checkpoint"])

    @property
    def spread(self) -> float | None:
        """The run-to-run spread recorded with the deployed model (None when only one seed was trained)."""
        seeds = self.record.get("confirm_seeds")
        if isinstance(seeds, dict) and len(seeds.get("values") or []) > 1:
            return float(seeds["spread"])
        return None

    def describe(self) -> str:
        value = self.record.get("metric_result", {}).get("value")
        figure = "" if value is None else f", KPI {value:.4g}"
        return f"v{self.version} ({self.record.get('iteration')} of {self.best_model_json.parent}{figure})"


def _load(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as error:
        raise StateError.at(str(path), f"cannot be read as a handoff ({error})", "restore it from a run") from None


def deployed_model(config: PipelineConfig) -> DeployedModel:
    """The deployed model: the nightly's current handoff version, else the newest run's best_model.json."""
    pointer = nightly_dir(config) / DEPLOYED_FILE
    if pointer.is_file():
        deployed = _load(pointer)
        best = Path(deployed["best_model_json"])
        return DeployedModel(best, _load(best), int(deployed["version"]))
    root = config.resolved_results_root
    handoffs = sorted(
        (path for path in root.glob("*/best_model.json") if path.parent.name != NIGHTLY_DIR),
        key=lambda path: path.stat().st_mtime,
    )
    if not handoffs:
        raise StateError.at(
            str(root),
            "holds no handoff (best_model.json) to start the night from",
            "run the pipeline once (`aoi-pipeline run --config ...`) so there is a deployed model",
        )
    return DeployedModel(handoffs[-1], _load(handoffs[-1]), 0)


#: Confirmation retrainings of a night whose config leaves `deft.confirm_seeds` unset: promotion needs a spread.
NIGHT_CONFIRM_SEEDS = 3


def night_config(config: PipelineConfig, budget: NightlyBudget) -> PipelineConfig:
    """The night's settings: Phase 1 off, the budget's iterations and pool share, Phase 3 as the policy says, and
    the final candidate confirmed over NIGHT_CONFIRM_SEEDS retrainings unless the config sets its own count (a
    night promotes only beyond a measured spread; an explicit 1 is honoured and then never promotes)."""
    deft: dict[str, object] = {"max_iterations": budget.iterations, "max_pool_share": budget.pool_share}
    if "confirm_seeds" not in config.deft.model_fields_set:
        deft["confirm_seeds"] = NIGHT_CONFIRM_SEEDS
    return config.model_copy(
        update={
            "phase1": config.phase1.model_copy(update={"enabled": False}),
            "deft": config.deft.model_copy(update=deft),
            "phase3": config.phase3.model_copy(update={"enabled": budget.phase3}),
        }
    )


def write_night_pool(layout: RunLayout, pool: ResolvedPool, changes: Changes) -> Path:
    """The pool the night mines: tonight's new rows (every row when only labelled rows are new), absolute paths."""
    hashes = pool_hashes(pool)
    rows = [row for row, digest in zip(pool.rows, hashes, strict=True) if digest in changes.new_pool] or list(pool.rows)
    path = layout.root / "inputs" / NIGHT_POOL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # Every original column stays (board names, input_path for the board); `filepath` and `golden_path` become
    # absolute files, which the pool reader takes first, wherever this CSV lives.
    columns = [column for column in pool.columns if column != "golden_filepath"]
    if "golden_path" not in columns:
        columns.append("golden_path")
    out = [
        {
            **{column: row.get(column, "") for column in columns},
            "filepath": os.path.join(pool.images_root, row["filepath"]),
            "golden_path": os.path.join(pool.images_root, row["golden_filepath"]) if row["golden_filepath"] else "",
        }
        for row in rows
    ]
    write_dataset_csv(path, columns, out)
    return path


def with_night_pool(workspace: Workspace, night_pool: Path) -> Workspace:
    return dataclasses.replace(workspace, mining_pool_csv=night_pool)


def deployed_as_trial(deployed: DeployedModel) -> TrialOutcome:
    """The deployed model in the shape of a Phase 1 winner, so the run pre-seeds it as the baseline."""
    record = deployed.record
    far = record.get("far_pct", record.get("metric_result", {}).get("value"))
    return TrialOutcome(
        number=0,
        params={},
        state="complete",
        far_pct=None if far is None else float(far),
        recall_pct=None,
        threshold=record.get("threshold"),
        val_loss=None,
        checkpoint=deployed.checkpoint,
        train_spec_path=Path(record["training_spec"]),
        inference_csv=None,
        duration_s=0.0,
    )


class JobCounter:
    """A job runner that counts the night's jobs and GPU-hours and refuses a job past the GPU-hour budget."""

    def __init__(self, runner: JobRunner, gpu_hours_budget: float) -> None:
        self.runner = runner
        self.budget = gpu_hours_budget
        self.jobs = 0
        self.gpu_hours = 0.0

    def run(self, job: TaoJob) -> JobResult:
        if self.gpu_hours >= self.budget:
            raise AoiPipelineError.at(
                f"nightly job {job.name}",
                f"the night has spent {self.gpu_hours:.3g} of its {self.budget:g} GPU-hours",
                "the night stops here; raise the policy's gpu_hours (a new approval) if nights need more",
            )
        self.jobs += 1
        result = self.runner.run(job)
        self.gpu_hours += float(job.gpus) * result.duration_s / 3600.0
        return result

    def stop(self, results_dir: Path, reason: str) -> bool:
        """Stop one job through the wrapped runner (a pruned Phase 3 trial)."""
        return stop_job(self.runner, results_dir, reason)


@dataclass(frozen=True)
class NightVerdict:
    """The night's candidate against the deployed model, both scored tonight on the confirm split."""

    deployed_value: float
    candidate: str
    candidate_value: float
    promotion: Promotion


def judge_night(layout: RunLayout, candidate: str, deployed: DeployedModel) -> NightVerdict:
    """Compare the run's handed-off candidate with its pre-seeded baseline (the deployed model)."""
    state = read_state(layout.root)
    contract = MetricContract.from_dict(state["metric_contract"])
    deployed_value = float(state["iterations"]["baseline"]["metric_result"]["value"])
    candidate_value = float(state["iterations"][candidate]["metric_result"]["value"])
    seeds = state.get("confirm_seeds")
    spread = deployed.spread
    if isinstance(seeds, dict) and seeds.get("candidate") == candidate and len(seeds.get("values") or []) > 1:
        spread = max(float(seeds["spread"]), spread or 0.0)
    verdict = promotion(
        candidate=candidate,
        deployed_value=deployed_value,
        candidate_value=candidate_value,
        spread=spread,
        lower_is_better=contract.operator in ("<", "<="),
        unit=contract.unit,
    )
    return NightVerdict(deployed_value, candidate, candidate_value, verdict)


def record_verdict(layout: RunLayout, deployed: DeployedModel, verdict: NightVerdict, version: int | None) -> None:
    """The night's handoff says whether it replaced the deployed model, and why."""
    record = _load(layout.best_model)
    record["nightly"] = {
        "promoted": verdict.promotion.promote,
        "reason": verdict.promotion.reason,
        "deployed_before": str(deployed.best_model_json),
        "deployed_value": verdict.deployed_value,
        "candidate_value": verdict.candidate_value,
        "handoff_version": version,
    }
    atomic_write_json(layout.best_model, record)


def promote(config: PipelineConfig, layout: RunLayout, deployed: DeployedModel) -> int:
    """Copy the night's handoff into the next version and point deployed.json at it (older versions stay)."""
    version = deployed.version + 1
    target = nightly_dir(config) / "handoffs" / f"v{version:04d}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(layout.best_model_inference_spec, target / layout.best_model_inference_spec.name)
    record = _load(layout.best_model)
    record.update({"version": version, "night": layout.root.name, "previous": str(deployed.best_model_json)})
    atomic_write_json(target / "best_model.json", record)
    pointer = {"version": version, "best_model_json": str(target / "best_model.json"), "night": layout.root.name}
    atomic_write_json(nightly_dir(config) / DEPLOYED_FILE, pointer)
    return version


def drift_of(layout: RunLayout, changes: Changes, deployed: DeployedModel) -> Drift | None:
    """The deployed model on tonight's newly labelled KPI rows, read from the baseline's KPI inference (no job)."""
    new_rows = changes.newly_labelled()
    if not new_rows:
        return None
    entry = read_state(layout.root)["iterations"].get("baseline", {})
    inference = entry.get("inference_csv")
    if not inference or not Path(inference).is_file():
        return None
    with Path(inference).open(encoding="utf-8", newline="") as handle:
        scored = [
            (row["label"], row_key(row), float(row["siamese_score"]))
            for row in csv.DictReader(handle)
            if row_key(row) in new_rows
        ]
    recorded = deployed.record.get("metric_result", {}).get("value")
    return drift_on_new_rows(
        scored,
        threshold=deployed.record.get("threshold"),
        recorded_far_pct=None if recorded is None else float(recorded),
        spread=deployed.spread or 0.0,
    )
