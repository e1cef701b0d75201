"""Phase 1 with pruning against without it on DeepPCB-AOI: GPU time per completed recommendation, best FAR.

Each arm is the pipeline's own Phase 1 sweep (`pipeline.sweep.run_sweep`, TPE, `parallel` trials packed onto
the GPU at `--share` each) over the same recommendations and seeds; the pruning arm stops a trial whose
per-epoch validation FAR trails (the median rule from `--warmup` epochs). GPU time of a trial = its wall time
x its GPU share. Reported per arm: GPU-seconds in all and per completed recommendation, the best validation
FAR of each seed and its spread, and the no-pruning arm's best FAR at the pruning arm's GPU time (equal
GPU-hours). Goal: the same best FAR, within the run-to-run spread, in at most 60 % of the GPU time.

    python benchmarks/automl_pruning.py --workspace COPY_OF_DEEPPCB --seeds 0 1 --recommendations 12 \
        --parallel 4 --share 0.25 --epochs 20 --size 128 --batch 64
    python benchmarks/automl_pruning.py --workspace /tmp/ws --seeds 0 --recommendations 4 --parallel 2 \
        --epochs 3 --size 32 --batch 16      # CPU smoke run

The workspace gets `results/bench_*`; use a copy of the data set, never the shared original.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from aoi_pipeline.core.search_space import build_search_space
from aoi_pipeline.pipeline.pruning import make_pruner, trial_watch
from aoi_pipeline.pipeline.run_specs import workspace_base_spec
from aoi_pipeline.pipeline.study import open_study
from aoi_pipeline.pipeline.sweep import SweepBudget, run_sweep
from aoi_pipeline.pipeline.trials import read_outcome, run_trial
from automl_sweep_support import GpuSampler, phase1_config, phase1_context


def run_arm(args: argparse.Namespace, *, pruner: str, seed: int) -> dict[str, Any]:
    phase1 = {
        "recommendations": args.recommendations,
        "parallel": args.parallel,
        "num_epochs": args.epochs,
        "batch_size": args.batch,
        "seed": seed,
        "pruner": pruner,
        "pruner_warmup_epochs": args.warmup,
    }
    config = phase1_config(args.workspace, args.workspace / "results", share=args.share, phase1=phase1, size=args.size)
    ctx = phase1_context(config, f"bench_{pruner}_seed{seed}_{int(time.time())}")
    settings = ctx.automl("phase1")
    base = workspace_base_spec(config, ctx.workspace)
    study = open_study(
        ctx.layout.study_storage("phase1"), study_name="phase1", seed=seed, recommendations=args.recommendations,
        pruner=make_pruner(settings),
    )  # fmt: skip
    space = build_search_space(settings.search_space, warm_start=False)
    finished_at: dict[int, float] = {}

    def trial(number: int, params: dict[str, Any]) -> Any:
        outcome = run_trial(ctx, phase="phase1", number=number, params=params, base_spec=base)
        finished_at[number] = time.monotonic()
        return outcome

    started = time.monotonic()
    with GpuSampler() as gpu, ThreadPoolExecutor(max_workers=args.parallel) as pool:
        run_sweep(
            study,
            space,
            parallel=args.parallel,
            submit=lambda proposal: pool.submit(trial, proposal.number, proposal.params),
            as_completed=as_completed,
            budget=SweepBudget.of_phase(settings, ctx.jobs.gpus),
            watch=trial_watch(ctx, "phase1", poll_s=0.5),
        )
    return _arm_summary(ctx, sorted(finished_at, key=finished_at.get), time.monotonic() - started, gpu)  # type: ignore[arg-type]


def _arm_summary(ctx: Any, order: list[int], wall_s: float, gpu: GpuSampler) -> dict[str, Any]:
    share = ctx.jobs.gpus or 1.0
    gpu_s, best, trajectory, states = 0.0, None, [], []
    for number in order:
        outcome = read_outcome(ctx.layout.trial_dir("phase1", number))
        if outcome is None:
            continue
        gpu_s += outcome.duration_s * share
        states.append(outcome.state)
        if outcome.state == "complete" and outcome.far_pct is not None:
            best = outcome.far_pct if best is None else min(best, outcome.far_pct)
        trajectory.append((round(gpu_s, 1), best))
    completed = states.count("complete")
    return {
        "wall_s": round(wall_s, 1),
        "gpu_s": round(gpu_s, 1),
        "completed": completed,
        "pruned": states.count("pruned"),
        "other": len(states) - completed - states.count("pruned"),
        "gpu_s_per_completed": round(gpu_s / completed, 1) if completed else None,
        "best_far_pct": best,
        "trajectory": trajectory,
        **gpu.summary(),
    }


def best_at(trajectory: list[tuple[float, float | None]], gpu_s: float) -> float | None:
    """The best FAR a sweep had reached once it had used `gpu_s` GPU-seconds."""
    reached = [best for used, best in trajectory if used <= gpu_s and best is not None]
    return min(reached) if reached else None


def compare(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    none, pruned = arms["none"], arms["median"]
    best = {name: [r["best_far_pct"] for r in runs if r["best_far_pct"] is not None] for name, runs in arms.items()}
    spread = max((max(v) - min(v)) for v in best.values() if v) if all(best.values()) else None
    gpu_ratio = sum(r["gpu_s"] for r in pruned) / max(1e-9, sum(r["gpu_s"] for r in none))
    at_equal = [best_at(n["trajectory"], p["gpu_s"]) for n, p in zip(none, pruned, strict=True)]
    mean = {name: statistics.fmean(v) if v else None for name, v in best.items()}
    same_far = None if spread is None else abs(mean["median"] - mean["none"]) <= max(spread, 1e-9)  # type: ignore[operator]
    return {
        "best_far_pct": best,
        "best_far_mean_pct": mean,
        "run_to_run_spread_pct": spread,
        "gpu_time_ratio": round(gpu_ratio, 3),
        "no_pruning_best_at_pruning_gpu_time": at_equal,
        "goal_same_far_within_spread": same_far,
        "goal_gpu_time_at_most_60pct": gpu_ratio <= 0.6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a COPY of the DeepPCB-AOI workspace")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recommendations", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--share", type=float, default=0.25, help="GPU share per trial (gpus_per_job)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4, help="pruner_warmup_epochs")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    arms: dict[str, list[dict[str, Any]]] = {"none": [], "median": []}
    for seed in args.seeds:
        for pruner in arms:
            print(f"[arm pruner={pruner} seed={seed}]", flush=True)
            arms[pruner].append(run_arm(args, pruner=pruner, seed=seed))
            summary = {k: v for k, v in arms[pruner][-1].items() if k != "trajectory"}
            print(f"  {pruner} seed {seed}: {json.dumps(summary)}", flush=True)
            if args.json:  # what has run so far, should the machine be taken back before the end
                args.json.write_text(json.dumps({"arms": arms}, indent=2), encoding="utf-8")
    report = {"arms": arms, "comparison": compare(arms), "args": {k: str(v) for k, v in vars(args).items()}}
    print("| pruner | seed | trials complete / pruned | GPU-s | GPU-s per completed rec | best val FAR % | wall s |")
    print("|---|---|---|---|---|---|---|")
    for pruner, runs in arms.items():
        for seed, run in zip(args.seeds, runs, strict=True):
            print(
                f"| {pruner} | {seed} | {run['completed']} / {run['pruned']} | {run['gpu_s']} | "
                f"{run['gpu_s_per_completed']} | {run['best_far_pct']} | {run['wall_s']} |"
            )
    print(json.dumps(report["comparison"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
