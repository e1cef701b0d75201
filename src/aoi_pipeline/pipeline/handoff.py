"""The handoffs between phases and out of the run.

Phase 1 -> Phase 2: the winning trial's tuned keys are merged onto the base spec (written in the run
directory; the user's workspace spec is never overwritten), its checkpoint is copied into `baseline/train/`
and the run state is started with that checkpoint pre-seeded as the baseline, so Phase 2 begins at baseline
inference instead of retraining. Deployment handoff: the best completed candidate of the run (the metric
contract's selection over the baseline, every DEFT iteration and Phase 3's `final_automl`) becomes
`best_model.json` plus `best_model_inference_spec.yaml` with the contract's threshold as the decision margin.
The trajectory summary lists every phase's number so a regression is visible.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.core.deliverable import best_completed
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import MetricResult, check_result
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec, spec_text
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state import init_state, preseed_baseline, read_state, state_path
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.trials import TrialOutcome

_HANDOFF_DROPPED_BLOCKS = ("train_dataset", "validation_dataset", "test_dataset")


def merged_spec(base: Spec, params: Mapping[str, Any]) -> Spec:
    """The base spec with only the tuned keys of a trial set (paths, architecture and budget untouched)."""
    spec = base
    for key, value in params.items():
        spec = set_key(spec, key, value)
    return spec


def handoff_phase1_to_phase2(
    *,
    layout: RunLayout,
    base_spec: Spec,
    winner: TrialOutcome,
    contract: MetricContract,
    max_iterations: int,
    state_config: Mapping[str, Any],
    summary: str | None = None,
) -> Path:
    """Write the merged spec, copy the winner's checkpoint into baseline/train/, pre-seed the run state
    (`summary`: the baseline's line in the state, by default naming the Phase 1 trial)."""
    if winner.checkpoint is None or winner.train_spec_path is None:
        raise StateError.at(
            f"phase1 trial {winner.number}",
            "the winning trial recorded no checkpoint or training spec",
            "re-run Phase 1; only completed trials can be handed off",
        )
    source = winner.checkpoint
    if not source.is_file() or source.stat().st_size == 0:
        raise StateError.at(str(source), "the winning checkpoint is missing or empty", "re-run Phase 1")
    dump_spec(merged_spec(base_spec, winner.params), layout.merged_spec)
    train_dir = layout.train_dir(BASELINE)
    train_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = train_dir / source.name
    shutil.copy2(source, checkpoint)
    card = source.parent / MODEL_CARD
    if card.is_file():  # the reference runtime's description of the network travels with its weights
        shutil.copy2(card, train_dir / MODEL_CARD)
    # The exact training spec of the checkpoint: inference must be derived from it, not from the merge.
    training_spec = load_spec(winner.train_spec_path)
    dump_spec(training_spec, layout.iteration_spec(BASELINE))
    # A rerun after a crash inside this step finds the state started, or the baseline already seeded.
    if not state_path(layout.root).exists():
        init_state(
            layout.root,
            kpi_target=render_target(contract),
            metric_contract=contract.to_dict(),
            max_iterations=max_iterations,
            config=dict(state_config),
        )
    if read_state(layout.root)["iterations"].get(BASELINE, {}).get("stage_completed") is not None:
        return checkpoint
    preseed_baseline(
        layout.root,
        best_ckpt_path=str(checkpoint),
        train_metric=winner.far_pct,
        training_spec=str(layout.iteration_spec(BASELINE)),
        summary=summary
        or f"baseline train skipped: reused Phase 1 trial {winner.number} (validation FAR {winner.far_pct:.4g}%)",
    )
    return checkpoint


@dataclass(frozen=True)
class BestModel:
    """The deliverable of a run."""

    iteration: str
    checkpoint: Path
    training_spec: Path
    threshold: float | None
    result: MetricResult


def select_best_model(layout: RunLayout) -> BestModel:
    """The contract's best completed candidate of the run (baseline, iterations, final_automl)."""
    state = read_state(layout.root)
    chosen = best_completed(state)
    if chosen is None:
        raise StateError.at(
            str(layout.root / "deft_state.json"),
            "no completed, evaluated candidate to hand off",
            "finish at least the baseline evaluation",
        )
    best, entry = chosen
    return BestModel(
        iteration=best.label,
        checkpoint=Path(entry["best_ckpt_path"]),
        training_spec=Path(entry.get("training_spec") or state["config"]["specs_file"]),
        threshold=entry.get("threshold"),
        result=best.result,
    )


@dataclass(frozen=True)
class DeploymentPaths:
    """What the run knows about where a deployment's inference reads and writes (the user may change all)."""

    checkpoint: str
    csv_path: str
    images_dir: str
    results_dir: str


def deployment_inference_spec(training_spec: Spec, threshold: float | None, paths: DeploymentPaths) -> Spec:
    """The inference spec of a deployment: model verbatim, margin = the contract's threshold, the run's paths."""
    classify = copy.deepcopy(get_key(training_spec, "dataset.classify"))
    for block in _HANDOFF_DROPPED_BLOCKS:
        classify.pop(block, None)
    classify["infer_dataset"] = {"csv_path": paths.csv_path, "images_dir": paths.images_dir}
    classify["batch_size"] = 1
    classify["workers"] = 1
    classify.setdefault("augmentation_config", {})["augment"] = False
    model = copy.deepcopy(training_spec["model"])
    if threshold is not None:
        model.setdefault("classify", {})["eval_margin"] = threshold
    loss = training_spec.get("train", {}).get("classify", {}).get("loss", "ce")
    return {
        "encryption_key": training_spec.get("encryption_key", "tlt_encode"),
        "task": training_spec.get("task", "classify"),
        "results_dir": paths.results_dir,
        "train": {"classify": {"loss": loss}},
        "model": model,
        "dataset": {"classify": classify},
        "inference": {"checkpoint": paths.checkpoint, "batch_size": 1, "results_dir": paths.results_dir},
    }


_SPEC_HEADER = """\
# Inference spec of the run's deliverable ({iteration}), written by the deployment handoff.
# Filled in from the run: the checkpoint, the model (verbatim from its training spec), the decision margin
# (model.classify.eval_margin: the KPI contract's threshold) and, so the spec runs as it is, this run's KPI
# set as the data to score. Before deploying, set:
#   - dataset.classify.infer_dataset.csv_path / images_dir: the pairs to score and their images root
#   - results_dir and inference.results_dir: where inference writes
#   - inference.checkpoint: where the checkpoint is, if you copy it elsewhere
# Do not change model.* or eval_margin: the KPI result in best_model.json holds for these values only.
"""
_SET_BY_USER = {
    "csv_path": "set: the CSV of the pairs to score (this run's KPI set)",
    "images_dir": "set: the images root of that CSV",
    "results_dir": "set: where inference writes",
    "checkpoint": "the deliverable's checkpoint; update it if you move the file",
}


def annotated_spec_text(spec: Spec, iteration: str) -> str:
    """The spec's YAML with a header and a comment on each line the user must set or check."""
    lines = []
    for line in spec_text(spec).splitlines():
        key = line.strip().split(":", 1)[0]
        note = _SET_BY_USER.get(key)
        lines.append(f"{line}  # {note}" if note and ":" in line else line)
    return _SPEC_HEADER.format(iteration=iteration) + "\n".join(lines) + "\n"


def _confirmed_choice(layout: RunLayout, best: BestModel, state: Mapping[str, Any]) -> BestModel:
    """The seed confirmation's deliverable: the best, or the earlier runner-up when the two are not told apart
    by more than the run-to-run spread."""
    confirmation = state.get("confirm_seeds")
    if not isinstance(confirmation, Mapping) or confirmation.get("candidate") != best.iteration:
        return best  # no confirmation, or a later candidate (Phase 3) won on its own
    if confirmation.get("deliverable") in (None, best.iteration):
        return best
    label = str(confirmation["deliverable"])
    entry = state["iterations"][label]
    contract = MetricContract.from_dict(state["metric_contract"])
    return BestModel(
        iteration=label,
        checkpoint=Path(entry["best_ckpt_path"]),
        training_spec=Path(entry.get("training_spec") or state["config"]["specs_file"]),
        threshold=entry.get("threshold"),
        result=check_result(contract, entry["metric_result"], where=f"deft_state.json iterations.{label}"),
    )


def _honest_numbers(state: Mapping[str, Any], label: str) -> dict[str, Any]:
    """What the handoff states beside the contract's figure: which KPI rows it was taken on, the steer figure,
    the control arm and the seed confirmation, each as the state records it."""
    entry = state["iterations"][label]
    split = state.get("kpi_split")
    numbers: dict[str, Any] = {}
    if isinstance(split, Mapping):
        numbers["kpi_split"] = {
            "source": split.get("source"),
            "figures_on": "whole KPI set (steered on)" if split.get("source") == "whole_kpi_set" else "confirm part",
            "confirm_boards": len(split.get("confirm_boards") or []),
            "steer_boards": len(split.get("steer_boards") or []),
        }
    for key in ("steer_metric_result", "control_metric_result"):
        if isinstance(entry.get(key), Mapping):
            numbers[key] = entry[key]
    for key in ("confirm_seeds", "pool_budget"):
        if isinstance(state.get(key), Mapping):
            numbers[key] = state[key]
    return numbers


def write_deployment_handoff(layout: RunLayout) -> BestModel:
    """Write best_model.json and best_model_inference_spec.yaml for the run's best candidate."""
    state = read_state(layout.root)
    best = _confirmed_choice(layout, select_best_model(layout), state)
    training_spec = load_spec(best.training_spec)
    # TAO flags `score > eval_margin`; our threshold flags `score >= threshold` (same rows, strict form).
    margin = best.result.diagnostics.get("strict_threshold", best.threshold)
    paths = DeploymentPaths(
        checkpoint=str(best.checkpoint),
        csv_path=str(state["config"].get("kpi_test_csv") or ""),
        images_dir=str(state["config"].get("images_dir") or ""),
        results_dir=str(layout.root / "deployment_inference"),
    )
    spec = deployment_inference_spec(training_spec, margin, paths)
    atomic_write_text(layout.best_model_inference_spec, annotated_spec_text(spec, best.iteration))
    record: dict[str, Any] = {
        "checkpoint": str(best.checkpoint),
        "threshold": best.threshold,
        "metric_contract": state["metric_contract"],
        "metric_result": state["iterations"][best.iteration]["metric_result"],
        "iteration": best.iteration,
        "backbone_type": training_spec.get("model", {}).get("backbone", {}).get("type"),
        "backbone_container_path": training_spec.get("model", {}).get("backbone", {}).get("pretrained_backbone_path"),
        "backbone_frozen": training_spec.get("model", {}).get("backbone", {}).get("freeze_backbone"),
        "model": _model_description(best.checkpoint, training_spec),
        "images_dir": state["config"].get("images_dir"),
        "training_spec": str(best.training_spec),
        "inference_spec": str(layout.best_model_inference_spec),
    }
    if best.result.name == "far_pct":
        record["far_pct"] = best.result.value
    record.update(_honest_numbers(state, best.iteration))
    atomic_write_json(layout.best_model, record)
    return best


#: Written by the reference runtime beside its checkpoints (`aoi_pipeline.changenet.train.MODEL_CARD`).
MODEL_CARD = "reference_model.json"


def _model_description(checkpoint: Path, training_spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the deliverable is: the reference runtime's `reference_model.json` beside its checkpoint, else the
    TAO network the training spec names (the backbone_* keys above are the spec's, which the reference ignores)."""
    card = Path(checkpoint).parent / MODEL_CARD
    if card.is_file():
        return dict(json.loads(card.read_text(encoding="utf-8")))
    backbone = training_spec.get("model", {}).get("backbone", {}).get("type")
    return {"runtime": "tao", "description": f"TAO Visual ChangeNet classify with backbone {backbone}"}


def trajectory_lines(state: Mapping[str, Any], phase1_best: float | None, contract: MetricContract) -> list[str]:
    """Phase 1 best (validation) -> baseline -> iterations -> Phase 3, each with its contract value."""
    unit = contract.unit
    lines = [f"# Trajectory of {state['results_dir']}", "", f"KPI target: {render_target(contract)}", ""]
    if phase1_best is not None:
        lines.append(f"- Phase 1 AutoML best: {phase1_best:.4g}{unit} on the validation set")
    iterations = sorted(
        (label for label in state["iterations"] if label.startswith("iter")), key=lambda lab: int(lab[4:])
    )
    order = [BASELINE, *iterations]
    if FINAL_AUTOML in state["iterations"]:
        order.append(FINAL_AUTOML)
    for label in order:
        entry = state["iterations"].get(label, {})
        result = entry.get("metric_result")
        if isinstance(result, Mapping):
            verdict = "passes" if result.get("passed") else "fails"
            lines.append(f"- {label}: {result['value']:.4g}{unit} on the KPI set ({verdict} the target)")
        else:
            lines.append(f"- {label}: not evaluated ({entry.get('status', 'absent')})")
    return lines


def write_trajectory(layout: RunLayout, *, phase1_best: float | None, best: BestModel) -> Path:
    state = read_state(layout.root)
    contract = MetricContract.from_dict(state["metric_contract"])
    lines = trajectory_lines(state, phase1_best, contract)
    lines += ["", f"Deliverable: {best.iteration} ({best.checkpoint})"]
    atomic_write_text(layout.trajectory, "\n".join(lines) + "\n")
    return layout.trajectory
