"""The control arm (`deft.control: random`): what the same amount of ordinary data would have done.

For iteration N the control trains on the same previous training set as the loop, plus as many random pool
rows as the loop added (SDG and mined rows together), with the same recipe and the same warm start, and is
scored on the same confirm part. The random rows never include a validation, KPI or confirm sample (the
same leakage rules as mining) and are drawn with a seed fixed by the iteration, so a rerun draws the same
rows. Its result is recorded with the loop's evaluation (`control_metric_result`), so the report can show
loop against control per iteration. The control model is a measurement only: it is never a candidate.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from aoi_pipeline.core import assembly, mining, mining_ledger
from aoi_pipeline.core.dataset import read_dataset_csv
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.core.mining import Candidate, Selection
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.core.stages import iteration_number, previous_label
from aoi_pipeline.core.state import read_state
from aoi_pipeline.core.state_entries import iteration_entry
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.evaluation import evaluate_checkpoints
from aoi_pipeline.pipeline.job_runner import require_success, set_aside
from aoi_pipeline.pipeline.kpi_parts import protected_kpi, validate_training_csv
from aoi_pipeline.pipeline.run_specs import training_spec, with_train_csv

CONTROL_RESULT_FILE = "control_result.json"


def control_dir(ctx: RunContext, label: str) -> Path:
    return ctx.layout.iteration_dir(label) / "control"


def random_pool_rows(ctx: RunContext, label: str, count: int, taken: set[str]) -> list[dict[str, str]]:
    """`count` pool rows drawn at random (seeded by the label), none a protected sample or already `taken`."""
    from aoi_pipeline.pipeline.deft import resolved_pool  # the loop's own pool resolution

    pool = resolved_pool(ctx)
    keys = mining.pool_keys(pool)
    excluded = mining.leak_exclusions(
        pool,
        protected=[
            CsvInRoot(read_dataset_csv(ctx.workspace.validation_csv), ctx.workspace.images_dir),
            protected_kpi(ctx),
        ],
        lights=ctx.dataset.lights,
        image_ext=ctx.image_ext,
    )
    eligible = [index for index in range(len(pool.rows)) if index not in excluded and keys[index] not in taken]
    drawn = sorted(random.Random(f"control-{label}").sample(eligible, min(count, len(eligible))))
    kept = tuple(Candidate(pool_index=index, target_index=0, similarity=0.0) for index in drawn)
    return mining.mined_rows(pool, Selection(kept, len(kept), 0, 0, 0, -1.0))


def _previous(ctx: RunContext, label: str) -> tuple[Any, bool, Any]:
    number = iteration_number(label)
    if number <= 1:
        return read_dataset_csv(ctx.workspace.training_csv), False, None
    entry = iteration_entry(read_state(ctx.layout.root), f"iter{number - 1}")
    provenance = assembly.read_provenance(entry.artifact("provenance_csv"))
    return read_dataset_csv(entry.artifact("combined_training_csv")), True, provenance


def build_control_csv(ctx: RunContext, label: str) -> tuple[Path, int, int]:
    """(control CSV, rows the loop added, random rows drawn): previous set + as many random pool rows."""
    entry = iteration_entry(read_state(ctx.layout.root), label)
    previous, in_workspace, provenance = _previous(ctx, label)
    added = len(read_dataset_csv(entry.artifact("combined_training_csv")).rows) - len(previous.rows)
    # Pool rows the loop mined before this iteration are in the previous set already: never drawn again.
    ledger = mining_ledger.MiningLedger(ctx.layout.root / "mining_history.json")
    taken = set(ledger.mined_keys(before_iteration=iteration_number(label)))
    rows = random_pool_rows(ctx, label, max(added, 0), taken)
    merged = assembly.assemble(
        iteration=iteration_number(label),
        previous=previous,
        previous_in_workspace_coordinates=in_workspace,
        sdg_rows=(),
        mined_rows=rows,
        previous_provenance=provenance,
    )
    folder = control_dir(ctx, label) / "dataset"
    combined = folder / f"train_control_{label}.csv"
    assembly.write_assembly(
        merged, combined_csv=combined, provenance_csv=folder / f"train_control_{label}_provenance.csv"
    )
    validate_training_csv(ctx, combined, folder / "merge_validation.json")
    return combined, added, len(rows)


def run_control_arm(ctx: RunContext, label: str) -> Path:
    """Train and score the control of `label`; returns its result JSON (value on the confirm part, rows)."""
    combined, added, drawn = build_control_csv(ctx, label)
    best = iteration_entry(read_state(ctx.layout.root), previous_label(label))
    base = with_train_csv(load_spec(best.artifact("training_spec")), csv_path=combined, images_dir=ctx.workspace.root)
    train_dir = control_dir(ctx, label) / "train"
    set_aside(train_dir)
    spec = training_spec(
        base,
        results_dir=train_dir,
        num_epochs=ctx.deft.num_epochs,
        batch_size=ctx.train_batch_size,
        pretrained_model=best.artifact("best_ckpt_path"),
    )
    spec_path = control_dir(ctx, label) / f"{label}_control_spec.yaml"
    dump_spec(spec, spec_path)
    require_success(
        ctx.runner.run(ctx.jobs.job(name=f"{label}-control-train", action="train", spec=spec, results_dir=train_dir))
    )
    evaluation = evaluate_checkpoints(
        ctx, label, spec, train_dir=train_dir, inference_root=control_dir(ctx, label), name=f"{label}-control"
    )
    result = evaluation.winner.result
    document = {
        "arm": "random",
        "value": result.value,
        "passed": result.passed,
        "rows_added_by_loop": added,
        "random_rows": drawn,
        "training_csv": str(combined),
        "checkpoint": str(evaluation.winner.checkpoint),
        "metric_result": str(evaluation.winner.metric_json),
    }
    path = control_dir(ctx, label) / CONTROL_RESULT_FILE
    atomic_write_json(path, document)
    return path
