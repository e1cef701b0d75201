"""The stages of a DEFT iteration: RCA, routing, SDG, mining, merge and the warm-started retraining.

Each stage reads what earlier stages committed to `deft_state.json`, writes its artifacts into a fresh folder
of the iteration (`RD/<label>/...`), and commits once. Jobs (SDG, embeddings, training) go through the
`JobRunner`; everything else is the pure core. A stage that fails raises; the flow then commits the stage as
an error, which ends the run (hard stop) with the reason in the state, the report and the Prefect UI.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aoi_pipeline.core import (
    assembly,
    mining,
    mining_knn,
    mining_ledger,
    pool_budget,
    rca,
    routing,
    sdg_ingest,
)
from aoi_pipeline.core.dataset import DatasetCsv, read_dataset_csv, write_dataset_csv
from aoi_pipeline.core.mining_pool import ResolvedPool, resolve_mining_pool, write_resolved_pool
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.core.stages import BASELINE, LoopStep, Stage, iteration_number, previous_label
from aoi_pipeline.core.state import StageCommit, commit_stage, next_stage, read_state, record_run_fact
from aoi_pipeline.core.state_entries import IterationEntry, iteration_entries, iteration_entry
from aoi_pipeline.errors import DatasetError, StateError
from aoi_pipeline.pipeline import mining_choice
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.hard_stop import record_stage_failure
from aoi_pipeline.pipeline.job_runner import require_success, set_aside
from aoi_pipeline.pipeline.kpi_parts import validate_training_csv
from aoi_pipeline.pipeline.run_specs import training_spec, with_train_csv
from aoi_pipeline.pipeline.run_steps import trained_checkpoint_fields
from aoi_pipeline.pipeline.study import trial_counts

VCN_COLUMNS = ("input_path", "golden_path", "label", "object_name")


def fresh_dir(base: Path) -> Path:
    """A new timestamped folder under `base` (a retried stage never writes into an earlier attempt's)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H%M%S")
    folder, n = base / stamp, 1
    while folder.exists():
        folder, n = base / f"{stamp}_{n}", n + 1
    folder.mkdir(parents=True)
    return folder


def _commit(ctx: RunContext, label: str, stage: str, started: float, summary: str, fields: Mapping) -> dict:
    commit = StageCommit(label, stage, "ok", summary, max(time.monotonic() - started, 0.001), dict(fields))
    return commit_stage(ctx.layout.root, commit)


def _skip(ctx: RunContext, label: str, stage: str, started: float, summary: str) -> dict:
    commit = StageCommit(label, stage, "ok", summary, max(time.monotonic() - started, 0.001), {}, skipped=True)
    return commit_stage(ctx.layout.root, commit)


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _entry(ctx: RunContext, label: str) -> IterationEntry:
    return iteration_entry(read_state(ctx.layout.root), label)


# ------------------------------------------------------------------------------------------------ RCA


def run_rca(ctx: RunContext, label: str) -> dict:
    """Gap analysis of `label`'s winning KPI inference on the steer part; feeds the next iteration's routing.

    The confirm part is never analysed: what the loop steers on must not be what it is judged on. A run from
    before the split (no steer CSV recorded) analyses the whole KPI inference, as it always did.
    """
    started = time.monotonic()
    entry = _entry(ctx, label)
    rows = _read_rows(entry.artifact("steer_inference_csv" if entry.steer_inference_csv else "inference_csv"))
    result = rca.analyse_gaps(rows, recall_pct=ctx.recall_pct)
    out = fresh_dir(ctx.layout.iteration_dir(label) / "rca_results")
    artifacts = rca.write_rca(
        result,
        out,
        images_dir=ctx.workspace.images_dir,
        lights=ctx.dataset.lights,
        image_ext=ctx.image_ext,
    )
    targets = ", ".join(result.target_defects[:4]) or "none"
    summary = f"RCA: threshold {result.threshold:.4g}, FAR {result.far_pct:.3g}%, targets {targets}"
    fields = {
        "rca_gaps_csv": str(artifacts.gaps_csv),
        "rca_threshold": result.threshold,
        "rca_target_defects": list(result.target_defects),
    }
    return _commit(ctx, label, Stage.RCA, started, summary, fields)


# -------------------------------------------------------------------------------------------- routing


def resolved_pool(ctx: RunContext) -> ResolvedPool:
    """The mining pool, every row resolved to exactly one file (a missing or empty pool is a hard stop)."""
    pool = resolve_mining_pool(
        ctx.workspace.mining_pool_csv, images_root=ctx.workspace.images_dir, light=ctx.light, image_ext=ctx.image_ext
    )
    target = ctx.layout.root / "inputs" / "mining_pool.resolved.csv"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_resolved_pool(pool, target)
    return pool


def run_routing(ctx: RunContext, label: str) -> dict:
    """Route the previous RCA's weak samples to mining and/or SDG, with the SDG allocation."""
    started = time.monotonic()
    analysed = _entry(ctx, previous_label(label))
    gaps = _read_rows(analysed.artifact("rca_gaps_csv"))
    targets = list(analysed.rca_target_defects)
    pool = resolved_pool(ctx)
    budget = pool_budget.PoolBudget(ctx.deft.max_pool_share, len(pool.rows))
    record_run_fact(ctx.layout.root, "pool_budget", budget.to_dict())
    metrics = analysed.artifact("rca_gaps_csv").parent / rca.METRICS_JSON
    per_label = json.loads(metrics.read_text(encoding="utf-8")).get("per_label", {}) if metrics.exists() else None
    result = routing.route_gaps(
        gaps,
        pool_labels={row["label"] for row in pool.rows},
        num_sdg=ctx.deft.num_sdg,
        target_defects=targets,
        type_costs=routing.sdg_costs(per_label) if per_label is not None else None,
    )
    out = fresh_dir(ctx.layout.iteration_dir(label) / "routing_results")
    artifacts = routing.write_routing(result, out)
    summary = (
        f"Routing: {len(result.mining_targets)} rows to mining, {len(result.sdg_targets)} to SDG "
        f"(allocation {sum(result.allocation.values())}), dropped {', '.join(result.dropped) or 'none'}"
    )
    fields = {
        "routing_mining_csv": str(artifacts.mining_gaps_csv),
        "routing_anomalygen_csv": str(artifacts.sdg_gaps_csv),
    }
    return _commit(ctx, label, Stage.ROUTING, started, summary, fields)


def _routing_dir(ctx: RunContext, label: str) -> Path:
    return _entry(ctx, label).artifact("routing_mining_csv").parent


# ------------------------------------------------------------------------------------------------ SDG


def run_sdg(ctx: RunContext, label: str) -> dict:
    """Generate exactly the routed allocation of synthetic defects (the reference computes it and ignores it)."""
    started = time.monotonic()
    allocation_file = _routing_dir(ctx, label) / "allocation.json"
    allocation = {k: int(v) for k, v in json.loads(allocation_file.read_text(encoding="utf-8")).items() if int(v)}
    if not allocation:
        return _skip(ctx, label, Stage.ANOMALYGEN, started, "SDG skipped: zero routed defect rows")
    results_dir = ctx.layout.iteration_dir(label) / "anomalygen" / "sdg"
    set_aside(results_dir)
    spec = {
        "sdg": {
            "pairs_csv": str(ctx.workspace.training_csv),
            "images_dir": str(ctx.workspace.images_dir),
            "allocation": allocation,
            "results_dir": str(results_dir),
            "light": ctx.light,
            "image_ext": ctx.image_ext,
            "seed": iteration_number(label),
        }
    }
    job = ctx.jobs.job(
        name=f"{label}-sdg",
        action="sdg",
        spec=spec,
        results_dir=results_dir,
        image=ctx.images.sdg,
        uses_gpu=False,
    )
    require_success(ctx.runner.run(job))
    generated = len(_read_rows(results_dir / "SDG_result.csv"))
    requested = sum(allocation.values())
    if generated != requested:
        raise DatasetError.at(
            str(results_dir / "SDG_result.csv"),
            f"SDG generated {generated} samples but {requested} were allocated",
            "read the SDG job log; never train on a silently reduced set",
        )
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(allocation.items()))
    summary = f"SDG: requested={requested}, generated={generated} by type ({by_type})"
    fields = {
        "anomalygen_sdg_csv": str(results_dir / "SDG_result.csv"),
        "anomalygen_allocation_json": str(results_dir / "allocation.json"),
    }
    return _commit(ctx, label, Stage.ANOMALYGEN, started, summary, fields)


# --------------------------------------------------------------------------------------------- mining


def _embed(ctx: RunContext, *, name: str, csv_path: Path, images_dir: Path, out: Path, best: IterationEntry) -> Path:
    """Embeddings of every row of a CSV with the current best model (the runtime's `embed` action)."""
    spec: Spec = load_spec(best.artifact("training_spec"))
    spec["embed"] = {
        "checkpoint": str(best.artifact("best_ckpt_path")),
        "csv_path": str(csv_path),
        "images_dir": str(images_dir),
        "results_dir": str(out),
    }
    job = ctx.jobs.job(name=name, action="embed", spec=spec, results_dir=out, image=ctx.images.embed)
    result = require_success(ctx.runner.run(job))
    return result.log_path


def _vcn_targets(rows: Sequence[Mapping[str, str]], path: Path) -> Path:
    write_dataset_csv(path, VCN_COLUMNS, ({c: row[c] for c in VCN_COLUMNS} for row in rows))
    return path


def _embed_targets_and_pool(
    ctx: RunContext, label: str, targets: Sequence[Mapping[str, str]], pool: ResolvedPool, out: Path
) -> tuple[Any, Any, dict[str, Path]]:
    """(target vectors, pool vectors, job logs) from the previous best model's `embed` of both CSVs."""
    best = _entry(ctx, previous_label(label))
    images = ctx.workspace.images_dir
    pool_rows = [{column: row[column] for column in VCN_COLUMNS} for row in mining.pool_dataset_rows(pool)]
    logs: dict[str, Path] = {}
    for side, rows, folder in (("targets", targets, "target_embeddings"), ("pool", pool_rows, "source_embeddings")):
        csv_path = _vcn_targets(rows, out / f"{side}.csv")
        name = f"{label}-embed-{side}"
        logs[side] = _embed(ctx, name=name, csv_path=csv_path, images_dir=images, out=out / folder, best=best)
    target_vectors = mining_knn.load_embeddings(
        out / "target_embeddings" / "embeddings.npy", out / "target_embeddings" / "embeddings_index.csv"
    )
    pool_vectors = mining_knn.load_embeddings(
        out / "source_embeddings" / "embeddings.npy",
        out / "source_embeddings" / "embeddings_index.csv",
        expect_rows=pool_rows,
    )
    return target_vectors, pool_vectors, logs


def _select_mined(
    ctx: RunContext, pool: ResolvedPool, indices: Any, sims: Any, ledger: mining_ledger.MiningLedger, number: int
) -> Any:
    """The k-NN candidates kept: similar enough, never leaking into validation/KPI, never mined before."""
    excluded = mining.leak_exclusions(
        pool,
        protected=mining_choice.protected_sources(ctx),
        lights=ctx.dataset.lights,
        image_ext=ctx.image_ext,
        candidates={int(index) for index in indices.ravel()},
    )
    return mining.select(
        indices,
        sims,
        min_similarity=ctx.deft.min_similarity,
        excluded_pool_indices=excluded,
        # A rerun of this iteration selects against the history before it, then re-records the same keys.
        history=ledger.mined_keys(before_iteration=number),
        pool_keys=mining.pool_keys(pool),
    )


def run_mining(ctx: RunContext, label: str) -> dict:
    """k-NN mining of real pool images similar to the routed weak samples, never from validation or KPI."""
    started = time.monotonic()
    targets = _read_rows(_entry(ctx, label).artifact("routing_mining_csv"))
    number = iteration_number(label)
    ledger = mining_ledger.MiningLedger(ctx.layout.root / "mining_history.json")
    if not targets:
        ledger.record(number, [], skipped=True, summary={"reason": "zero routed rows"})
        return _skip(ctx, label, Stage.DATA_MINING, started, "Mining skipped: zero routed rows")
    pool = resolved_pool(ctx)
    out = fresh_dir(ctx.layout.iteration_dir(label) / "mining_results")
    clock = time.monotonic()
    target_vectors, pool_vectors, logs = _embed_targets_and_pool(ctx, label, targets, pool, out)
    timings = {"embed": time.monotonic() - clock}
    clock = time.monotonic()
    k = ctx.deft.top_k_per_target
    indices, sims = mining_knn.knn_topk(target_vectors.vectors, pool_vectors.vectors, k=k, chunk_rows=16384)
    timings["knn"] = time.monotonic() - clock
    selection = _select_mined(ctx, pool, indices, sims, ledger, number)
    history = ledger.mined_keys(before_iteration=number)
    choice = mining_choice.choose(
        ctx, label, selection, indices, pool=pool, targets=target_vectors, pool_vectors=pool_vectors, history=history
    )
    selection = choice.selection
    timings.update(choice.timings)
    rows = mining.mined_rows(pool, selection)
    run = mining.MiningRun(
        iteration=number,
        target_count=len(targets),
        embedding_dim=target_vectors.dim,
        top_k=k,
        chunk_rows=16384,
        timings=timings,
    )
    outputs = mining.write_mining_outputs(out, run=run, pool=pool, selection=selection, mined=rows, ledger=ledger)
    keys = [mining.pool_keys(pool)[candidate.pool_index] for candidate in selection.kept]
    ledger.record(number, keys, summary={"candidates": selection.candidate_count, "kept": len(keys)})
    summary = (
        f"Mining: mined={len(rows)} pool images for {len(targets)} targets "
        f"(similarity cut {selection.similarity_threshold} removed {selection.rejected_by_similarity}, "
        f"already mined {selection.already_mined}, leak-excluded {selection.excluded_leak}; {choice.text})"
    )
    fields = {
        **{name: str(path) for name, path in outputs.items()},
        "mining_history": str(ledger.path),
        "mining_target_embeddings": str(out / "target_embeddings" / "embeddings.npy"),
        "mining_source_embeddings": str(out / "source_embeddings" / "embeddings.npy"),
        "mining_target_log": str(logs["targets"]),
        "mining_source_log": str(logs["pool"]),
        "mining_mined_count": len(rows),
        **mining_choice.rule_fields(choice),
    }
    return _commit(ctx, label, Stage.DATA_MINING, started, summary, fields)


# ---------------------------------------------------------------------------------------------- merge


def _previous_training(ctx: RunContext, label: str) -> tuple[DatasetCsv, bool]:
    number = iteration_number(label)
    if number <= 1:
        return read_dataset_csv(ctx.workspace.training_csv), False
    previous = _entry(ctx, f"iter{number - 1}").artifact("combined_training_csv")
    return read_dataset_csv(previous), True


def _added_rows(
    ctx: RunContext, label: str, dataset_dir: Path
) -> tuple[Sequence[Mapping[str, str]], Sequence[Mapping[str, str]]]:
    """(SDG rows ingested into the iteration's dataset folder, mined rows); a merge adding none is a hard stop."""
    entry = _entry(ctx, label)
    number = iteration_number(label)
    sdg_rows: Sequence[Mapping[str, str]] = ()
    if not entry.anomalygen_skipped:
        ingest = sdg_ingest.ingest_sdg(
            entry.artifact("anomalygen_sdg_csv").parent,
            workspace_root=ctx.workspace.root,
            dataset_images_dir=dataset_dir / "images",
            subdir=f"synthetic_iter{number}",
            light=ctx.light,
            image_ext=ctx.image_ext,
        )
        sdg_rows = ingest.rows
    mined: Sequence[Mapping[str, str]] = ()
    if not entry.data_mining_skipped:
        mined = _read_rows(entry.artifact("mining_mined_csv"))
    if not sdg_rows and not mined:
        raise DatasetError.at(
            f"{label} merge",
            "neither SDG nor mining added a row",
            "expand the mining pool or raise num_sdg; never retrain on an unchanged set",
        )
    return sdg_rows, mined


def run_merge(ctx: RunContext, label: str) -> dict:
    """Previous training CSV + SDG rows + mined rows, with provenance, validated for files and leakage."""
    started = time.monotonic()
    number = iteration_number(label)
    dataset_dir = ctx.layout.iteration_dir(label) / "dataset"
    sdg_rows, mined = _added_rows(ctx, label, dataset_dir)
    previous, in_workspace = _previous_training(ctx, label)
    previous_provenance = None
    if in_workspace:
        previous_provenance = assembly.read_provenance(_entry(ctx, f"iter{number - 1}").artifact("provenance_csv"))
    merged = assembly.assemble(
        iteration=number,
        previous=previous,
        previous_in_workspace_coordinates=in_workspace,
        sdg_rows=sdg_rows,
        mined_rows=mined,
        previous_provenance=previous_provenance,
    )
    combined = dataset_dir / f"train_combined_{label}.csv"
    provenance = dataset_dir / f"train_combined_{label}_provenance.csv"
    assembly.write_assembly(merged, combined_csv=combined, provenance_csv=provenance)
    report = dataset_dir / "merge_validation.json"
    validate_training_csv(ctx, combined, report)
    by_source = ", ".join(f"{source} {count}" for source, count in merged.source_counts().items())
    summary = f"Merge: {len(merged.rows)} rows ({by_source}); no missing files, no leakage"
    fields = {
        "combined_training_csv": str(combined),
        "provenance_csv": str(provenance),
        "merge_validation_report": str(report),
    }
    return _commit(ctx, label, Stage.DATA_MERGE, started, summary, fields)


# ---------------------------------------------------------------------------------------------- train


def run_iteration_train(ctx: RunContext, label: str) -> dict:
    """Retrain on the combined CSV, warm-started from the previous best, same epoch budget, fresh dir."""
    started = time.monotonic()
    best = _entry(ctx, previous_label(label))
    combined = _entry(ctx, label).artifact("combined_training_csv")
    base = with_train_csv(load_spec(best.artifact("training_spec")), csv_path=combined, images_dir=ctx.workspace.root)
    train_dir = ctx.layout.train_dir(label)
    set_aside(train_dir)
    spec = training_spec(
        base,
        results_dir=train_dir,
        num_epochs=ctx.deft.num_epochs,
        batch_size=ctx.train_batch_size,
        pretrained_model=best.artifact("best_ckpt_path"),
    )
    spec_path = ctx.layout.iteration_spec(label)
    dump_spec(spec, spec_path)
    require_success(
        ctx.runner.run(ctx.jobs.job(name=f"{label}-train", action="train", spec=spec, results_dir=train_dir))
    )
    fields = trained_checkpoint_fields(train_dir, spec_path)
    summary = f"{label} trained {ctx.deft.num_epochs} epochs on {combined.name}, warm from {best.best_ckpt_path}"
    return _commit(ctx, label, Stage.TRAIN, started, summary, fields)


def commit_failure(ctx: RunContext, label: str, stage: str, error: Exception, started: float) -> None:
    """Record a hard stop: the stage as an error event with the reason and the fix; the run becomes failed."""
    record_stage_failure(ctx.layout.root, label, stage, error, started)


# --------------------------------------------------------------------------------------------- report


def _sources(provenance: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in _read_rows(provenance):
        source = row.get("source", "unknown")
        counts[source] = counts.get(source, 0) + 1
    return counts


def _rca_gaps(state: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per iteration, the RCA's per-type gaps (from the metrics.json beside its gaps table), worst first."""
    gaps: dict[str, list[dict[str, Any]]] = {}
    for label, entry in iteration_entries(state).items():
        table = entry.rca_gaps_csv
        metrics = Path(table).parent / "metrics.json" if table else None
        if metrics is None or not metrics.exists():
            continue
        per_label = json.loads(metrics.read_text(encoding="utf-8")).get("per_label", {})
        rows = [
            {
                "label": name,
                "missed": gap["missed"],
                "forced_far_pct": gap["forced_far_pct"],
                "lowest": gap["lowest_scores"][0] if gap["lowest_scores"] else None,
            }
            for name, gap in per_label.items()
        ]
        gaps[label] = sorted(rows, key=lambda row: (-row["missed"], -row["forced_far_pct"], row["label"]))
    return gaps


def report_extras(ctx: RunContext) -> dict[str, Any]:
    """What the report shows beyond the state: rows by source, SDG/mining counts, pool share, the handoff."""
    state = read_state(ctx.layout.root)
    growth: dict[str, dict[str, int]] = {BASELINE: {"base_train": len(_read_rows(ctx.workspace.training_csv))}}
    counts: dict[str, dict[str, Any]] = {}
    mined_total = 0
    for label, entry in iteration_entries(state).items():
        if entry.provenance_csv and Path(entry.provenance_csv).exists():
            growth[label] = _sources(Path(entry.provenance_csv))
        if entry.mining_mined_count is not None or entry.anomalygen_sdg_csv:
            sdg = entry.anomalygen_sdg_csv
            generated = len(_read_rows(Path(sdg))) if sdg and Path(sdg).exists() else 0
            picked = state["iterations"][label].get("mining_picked_by_rule") or {}
            counts[label] = {"sdg_generated": generated, **{f"mined_{rule}": n for rule, n in picked.items()}}
            mined_total += entry.mining_mined_count or 0
    extras: dict[str, Any] = {
        "training_rows_by_source": growth,
        "sdg_and_mining": counts,
        "rca_gaps": _rca_gaps(state),
    }
    pool_csv = ctx.layout.root / "inputs" / "mining_pool.resolved.csv"
    if pool_csv.exists():
        pool_rows = len(_read_rows(pool_csv))
        extras["pool_share_used_pct"] = 100.0 * mined_total / pool_rows if pool_rows else 0.0
    if ctx.layout.best_model.exists():
        extras["handoff"] = json.loads(ctx.layout.best_model.read_text(encoding="utf-8"))
    if trials := trial_counts(ctx.layout):
        extras["automl_trials"] = trials
    return extras


def iteration_summary(ctx: RunContext, label: str) -> str:
    """A short markdown summary of one evaluated iteration (the per-iteration Prefect artifact)."""
    state = read_state(ctx.layout.root)
    entry = iteration_entry(state, label)
    result = entry.metric_result
    if result is None or result.value is None:
        raise StateError.at(
            f"deft_state.json: iterations.{label}.metric_result",
            "is not recorded, so the iteration cannot be summarised",
            f"summarise {label} only after its evaluate stage is committed",
        )
    previous = iteration_entry(state, previous_label(label)).metric_result
    unit = ctx.contract.unit
    lines = [
        f"## DEFT {label}",
        f"- {ctx.contract.display_name}: **{result.value:.4g}{unit}** "
        f"({'meets' if result.passed else 'misses'} the target)",
    ]
    if previous is not None and previous.value is not None and label != previous_label(label):
        lines.append(f"- change vs {previous_label(label)}: {result.value - previous.value:+.4g}{unit}")
    if entry.provenance_csv:
        sources = ", ".join(f"{k} {v}" for k, v in _sources(Path(entry.provenance_csv)).items())
        lines.append(f"- training rows by source: {sources}")
    lines.append(f"- checkpoint: `{entry.best_ckpt_path}`")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- loop


def next_step(ctx: RunContext) -> tuple[str, str]:
    """(label, stage) the loop runs next; after a hard stop, the failed stage (a rerun retries it once)."""
    state = read_state(ctx.layout.root)
    step = next_stage(state)
    if step.stage != LoopStep.HALT:
        return step.label, step.stage
    failed = state["events"][-1]
    return failed["iter"], LoopStep.FINALIZE if failed["stage"] == Stage.LOOP_STOP else failed["stage"]


def stop_reason(ctx: RunContext, label: str) -> str:
    """Why the loop stops at `label`: the contract met, the iteration budget spent, else the pool budget."""
    state = read_state(ctx.layout.root)
    if iteration_entry(state, label).passed:
        return "metric_met"
    if iteration_number(label) >= state["max_iterations"] or not pool_budget.stops_loop(state):
        return "max_iterations"
    return pool_budget.STOP_REASON


def run_loop(ctx: RunContext, run_stage: Callable[[str, str], None]) -> str:
    """Run Phase 2 to its end, one committed stage at a time; returns the final iteration label.

    `run_stage(label, stage)` runs one stage (a Prefect task in the flow, a plain call in benchmarks) for the
    stages of `next_step`: train (baseline), evaluate, finalize and every name of `ITERATION_STAGES`.
    """
    while True:
        label, stage = next_step(ctx)
        if stage == LoopStep.COMPLETE:
            return label
        run_stage(label, stage)


ITERATION_STAGES: dict[str, Callable[[RunContext, str], dict]] = {
    Stage.RCA: run_rca,
    Stage.ROUTING: run_routing,
    Stage.ANOMALYGEN: run_sdg,
    Stage.DATA_MINING: run_mining,
    Stage.DATA_MERGE: run_merge,
    Stage.TRAIN: run_iteration_train,
}
