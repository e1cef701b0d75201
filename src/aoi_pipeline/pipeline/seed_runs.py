"""Confirm Phase 2's final candidate over `deft.confirm_seeds` trainings before the handoff.

The candidate the contract picks is retrained `confirm_seeds - 1` more times with its exact training spec
(same CSV, recipe and warm start; only `train.seed` differs) and each retraining is scored on the confirm
part like any iteration. The values, their mean and spread, the runner-up and whether the candidate beats it
by more than the spread are recorded once in the run state (`confirm_seeds`), so a rerun of the handoff does
not retrain, and `best_model.json` states them. With `confirm_seeds: 1` nothing is retrained or recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import Candidate, check_result, pick_best
from aoi_pipeline.core.seed_confirmation import SeedConfirmation, from_dict
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.core.state import read_state, record_run_fact
from aoi_pipeline.errors import SpecError
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.evaluation import evaluate_checkpoints
from aoi_pipeline.pipeline.job_runner import require_success, set_aside
from aoi_pipeline.pipeline.run_specs import training_spec

DEFAULT_SEED = 1234


def ranked_candidates(state: Mapping[str, Any], contract: MetricContract) -> list[tuple[str, float]]:
    """Every completed, evaluated candidate of the loop as (label, value), best first by the contract."""
    candidates = []
    for label, entry in state["iterations"].items():
        raw = entry.get("metric_result")
        if entry.get("status") == "complete" and isinstance(raw, Mapping) and label != "final_automl":
            candidates.append(Candidate(label, check_result(contract, raw, where=f"iterations.{label}")))
    ranked: list[tuple[str, float]] = []
    while candidates:
        best = pick_best(contract, candidates)
        assert best is not None
        ranked.append((best.label, float(best.result.value)))
        candidates = [candidate for candidate in candidates if candidate.label != best.label]
    return ranked


def _retrain(ctx: RunContext, label: str, spec_path: str, offset: int) -> tuple[int, float]:
    """One more training of `label`'s spec with another seed, scored on the confirm part: (seed, value)."""
    base = load_spec(Path(spec_path))
    seed_dir = ctx.layout.root / "confirm_seeds" / label / f"seed_{offset}"
    train_dir = seed_dir / "train"
    set_aside(train_dir)
    seed = _first_seed(spec_path) + offset
    pretrained = _optional(base, "train.pretrained_model_path")
    spec = training_spec(
        base,
        results_dir=train_dir,
        num_epochs=int(get_key(base, "train.num_epochs")),
        batch_size=ctx.train_batch_size,
        pretrained_model=None if pretrained is None else Path(pretrained),
    )
    spec = set_key(spec, "train.seed", seed)
    dump_spec(spec, seed_dir / f"{label}_seed_{offset}_spec.yaml")
    name = f"{label}-seed{offset}"
    job = ctx.jobs.job(name=f"{name}-train", action="train", spec=spec, results_dir=train_dir)
    require_success(ctx.runner.run(job))
    evaluation = evaluate_checkpoints(ctx, label, spec, train_dir=train_dir, inference_root=seed_dir, name=name)
    return seed, float(evaluation.winner.result.value)


def _optional(spec: dict[str, Any], key: str) -> Any:
    try:
        return get_key(spec, key)
    except SpecError:  # a spec without the key has no value to reuse
        return None


def confirm_final_candidate(ctx: RunContext) -> SeedConfirmation | None:
    """Retrain and score the final candidate; recorded once in the state (a rerun reads it back)."""
    lower_is_better = ctx.contract.operator in ("<", "<=")
    state = read_state(ctx.layout.root)
    if ctx.deft.confirm_seeds <= 1:
        return None
    if "confirm_seeds" in state:
        return from_dict(state["confirm_seeds"], lower_is_better=lower_is_better)
    ranked = ranked_candidates(state, MetricContract.from_dict(state["metric_contract"]))
    if not ranked:
        return None
    label, value = ranked[0]
    entry = state["iterations"][label]
    seeds, values = [int(_first_seed(entry["training_spec"]))], [value]
    for offset in range(1, ctx.deft.confirm_seeds):
        seed, scored = _retrain(ctx, label, entry["training_spec"], offset)
        seeds.append(seed)
        values.append(scored)
    second = next(((other, v) for other, v in ranked[1:]), (None, None))
    confirmation = SeedConfirmation(label, tuple(values), tuple(seeds), lower_is_better, second[0], second[1])
    record_run_fact(ctx.layout.root, "confirm_seeds", confirmation.to_dict())
    return confirmation


def _first_seed(spec_path: str) -> int:
    seed = _optional(load_spec(Path(spec_path)), "train.seed")
    return int(seed) if seed is not None and int(seed) >= 0 else DEFAULT_SEED
