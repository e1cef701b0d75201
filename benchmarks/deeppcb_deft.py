"""The DEFT loop on DeepPCB-AOI: does the data-improvement loop halve FAR@99 with at most 25% of the pool?

Trains a baseline on the seed training set, then runs the Phase 2 loop (RCA -> routing -> SDG -> k-NN mining
-> merge -> warm-started retraining -> KPI evaluation) for `--iterations`, with the KPI target
`FAR < 5% at Recall=99%`. The stages are the pipeline's own (`aoi_pipeline.pipeline.deft.run_loop`), run without
Prefect so the benchmark runs on a bare GPU machine. Reports per iteration: FAR at 99% and 100% recall on
`kpi/testing_set.csv`, training rows added by source, and the share of the mining pool used.

    python benchmarks/deeppcb_deft.py --workspace ../shared/data/deeppcb-aoi-copy --iterations 3 --epochs 20
    python benchmarks/deeppcb_deft.py --workspace /tmp/ws --iterations 1 --epochs 1 --size 64   # CPU smoke run

The workspace gets `results/<run>/`; use a copy of the data set, never the shared original.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from aoi_pipeline.config import DeftSettings, config_from_mapping
from aoi_pipeline.core.far import far_at_recall, read_scored_csv
from aoi_pipeline.core.mining_rules import BALANCES, RANKS
from aoi_pipeline.core.spec.yaml_io import dump_spec
from aoi_pipeline.core.stages import BASELINE
from aoi_pipeline.core.state import read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.pipeline import deft
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.evaluation import evaluate_and_commit
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_report import refresh_run_report
from aoi_pipeline.pipeline.run_specs import workspace_base_spec
from aoi_pipeline.pipeline.run_steps import ensure_run_state, finalize_phase2, train_baseline
from automl_sweep_support import QuietRunner

TARGET = "FAR < 5% at Recall=99%"


def pipeline_config(args: argparse.Namespace) -> dict[str, Any]:
    mapping = {
        "workspace": str(args.workspace),
        "kpi_target": TARGET,
        "gpus": "auto",
        "dataset": {"image_ext": ".png"},
        "spec_overrides": [
            f"dataset.classify.image_width={args.size}",
            f"dataset.classify.image_height={args.size}",
            f"train.optim.lr={args.lr}",
            f"dataset.classify.fpratio_sampling={args.fpratio}",
            "model.classify.difference_module=euclidean",
        ],
        "phase1": {"enabled": False, "batch_size": args.batch, "num_epochs": args.epochs},
        "phase3": {"enabled": False},
        "deft": {
            "max_iterations": args.iterations,
            "num_epochs": args.epochs,
            "num_sdg": args.num_sdg,
            "top_k_per_target": args.top_k,
            "min_similarity": args.min_similarity,
            "max_pool_share": args.max_pool_share,
            "control": args.control,
            "confirm_seeds": args.confirm_seeds,
            "mining_rank": args.mining_rank,
            "mining_label_balance": args.label_balance,
            "mining_max_per_board": args.max_per_board,
            "mining_explore_share": args.explore_share,
        },
    }
    if args.seed is not None:
        mapping["spec_overrides"].append(f"train.seed={args.seed}")
    return mapping


def stage_runner(ctx: RunContext, base_spec: dict) -> Any:
    def run_stage(label: str, stage: str) -> None:
        started = time.monotonic()
        print(f"[{label} {stage}]", flush=True)
        if stage == "train" and label == BASELINE:
            train_baseline(ctx, base_spec)
        elif stage == "evaluate":
            evaluate_and_commit(ctx, label)
        elif stage == "finalize":
            finalize_phase2(ctx.layout, label=label, stop_reason=deft.stop_reason(ctx, label))
        else:
            try:
                deft.ITERATION_STAGES[stage](ctx, label)
            except Exception as error:
                deft.commit_failure(ctx, label, stage, error, started)
                raise
        print(f"  {read_state(ctx.layout.root)['events'][-1]['summary']}", flush=True)

    return run_stage


def _sources(path: str | None) -> dict[str, int]:
    if not path:
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        counts: dict[str, int] = {}
        for row in csv.DictReader(handle):
            counts[row["source"]] = counts.get(row["source"], 0) + 1
    return counts


def summarise(layout: RunLayout, workspace: Workspace) -> dict[str, Any]:
    state = read_state(layout.root)
    with workspace.mining_pool_csv.open(newline="", encoding="utf-8") as handle:
        pool_rows = sum(1 for _ in csv.DictReader(handle))
    rows, mined_total, previous = [], 0, None
    labels = [BASELINE, *sorted((k for k in state["iterations"] if k.startswith("iter")), key=lambda k: int(k[4:]))]
    for label in labels:
        entry = state["iterations"][label]
        if "inference_csv" not in entry:
            continue
        scored = read_scored_csv(Path(entry["inference_csv"]))
        sources = _sources(entry.get("provenance_csv"))
        added = {k: v for k, v in sources.items() if k in ("sdg", "mined")}
        mined_total += int(entry.get("mining_mined_count") or 0)
        rows.append(
            {
                "iteration": label,
                "far_at_99": round(far_at_recall(scored, 99.0).far_pct, 3),
                "far_at_100": round(far_at_recall(scored, 100.0).far_pct, 3),
                "training_rows": sum(sources.values()) if sources else None,
                "added": added,
                "pool_share_used_pct": round(100.0 * mined_total / pool_rows, 2),
            }
        )
        previous = rows[-1]
    baseline = rows[0]["far_at_99"] if rows else None
    return {
        "target": TARGET,
        "status": state["status"],
        "iterations": rows,
        "baseline_far_at_99": baseline,
        "final_far_at_99": previous["far_at_99"] if previous else None,
        "goal_far_halved": bool(rows and baseline and previous["far_at_99"] <= baseline / 2),
        "goal_pool_share_at_most_25pct": bool(rows and previous["pool_share_used_pct"] <= 25.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a COPY of the DeepPCB-AOI workspace")
    parser.add_argument("--run-name", default="run_deft_benchmark")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--fpratio", type=float, default=0.5)
    parser.add_argument("--num-sdg", type=int, default=120)
    parser.add_argument("--top-k", type=int, default=5)
    rules = DeftSettings()
    parser.add_argument("--min-similarity", type=float, default=rules.min_similarity, help="deft.min_similarity")
    parser.add_argument("--max-pool-share", type=float, default=0.25, help="deft.max_pool_share")
    parser.add_argument("--control", choices=("none", "random"), default="random", help="deft.control")
    parser.add_argument("--confirm-seeds", type=int, default=1, help="deft.confirm_seeds")
    parser.add_argument("--seed", type=int, default=None, help="train.seed of every training (default: the spec's)")
    parser.add_argument("--mining-rank", choices=RANKS, default=rules.mining_rank, help="deft.mining_rank")
    parser.add_argument("--label-balance", choices=BALANCES, default=rules.mining_label_balance)
    parser.add_argument("--max-per-board", type=int, default=rules.mining_max_per_board, help="0: no cap")
    parser.add_argument("--explore-share", type=float, default=rules.mining_explore_share)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.max_per_board = args.max_per_board or None

    config = config_from_mapping(pipeline_config(args))
    layout = RunLayout(config.resolved_results_root / args.run_name)
    ctx = RunContext.from_config(config, layout, QuietRunner())
    workspace = ctx.workspace
    layout.root.mkdir(parents=True, exist_ok=True)
    base_spec = workspace_base_spec(config, workspace)
    dump_spec(base_spec, layout.base_spec)
    ensure_run_state(ctx)
    started = time.monotonic()
    try:
        deft.run_loop(ctx, stage_runner(ctx, base_spec))
    finally:
        refresh_run_report(ctx)
        report = summarise(layout, workspace)
        report["wall_s"] = round(time.monotonic() - started, 1)
        print(f"{'iteration':10} {'FAR@99 %':>9} {'FAR@100 %':>10} {'rows':>6} {'pool used %':>11}  added")
        for row in report["iterations"]:
            print(
                f"{row['iteration']:10} {row['far_at_99']:9} {row['far_at_100']:10} {row['training_rows'] or '-':>6} "
                f"{row['pool_share_used_pct']:11}  {row['added']}"
            )
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
