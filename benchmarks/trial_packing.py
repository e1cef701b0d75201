"""N small-model trials on K slots of one GPU: wall time against ceil(N/K) x the time of one trial alone.

One trial (a training job and its validation inference, `pipeline.trials.run_trial`) runs alone on a whole
GPU; then N trials with the same parameters run K at a time at `gpus_per_job` 1/K through the local
launcher's GPU slots. The ratio wall(N) / (ceil(N/K) x t_one) is the cost of sharing the GPU (below 1: the
trials overlap their start-up and data loading with each other's compute). GPU utilisation is nvidia-smi's,
sampled every 200 ms during the packed run. Goal: at most 1.15 x with K = 4 on one H100/H200.

    python benchmarks/trial_packing.py --workspace COPY_OF_DEEPPCB --trials 8 --slots 4 --epochs 20 --size 128
    python benchmarks/trial_packing.py --workspace /tmp/ws --trials 2 --slots 2 --epochs 2 --size 32  # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from aoi_pipeline.pipeline.run_specs import workspace_base_spec
from aoi_pipeline.pipeline.trials import run_trial
from automl_sweep_support import GpuSampler, phase1_config, phase1_context

PARAMS = {"train.optim.lr": 2e-3}


def run_trials(args: argparse.Namespace, *, share: float, count: int, parallel: int, name: str) -> dict[str, Any]:
    phase1 = {"recommendations": count, "parallel": parallel, "num_epochs": args.epochs, "batch_size": args.batch}
    config = phase1_config(args.workspace, args.workspace / "results", share=share, phase1=phase1, size=args.size)
    ctx = phase1_context(config, f"{name}_{int(time.time())}")
    base = workspace_base_spec(config, ctx.workspace)
    started = time.monotonic()
    with GpuSampler() as gpu, ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [
            pool.submit(run_trial, ctx, phase="phase1", number=n, params=PARAMS, base_spec=base) for n in range(count)
        ]
        outcomes = [future.result() for future in futures]
    wall = time.monotonic() - started
    return {
        "wall_s": round(wall, 1),
        "trial_s": [round(o.duration_s, 1) for o in outcomes],
        "states": [o.state for o in outcomes],
        "far_pct": [o.far_pct for o in outcomes],
        "gpus_per_job": ctx.jobs.gpus,
        **gpu.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a COPY of the DeepPCB-AOI workspace")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4, help="K: trials per GPU (gpus_per_job = 1/K)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    print("[one trial alone]", flush=True)
    alone = run_trials(args, share=1, count=1, parallel=1, name="bench_alone")
    print(f"[{args.trials} trials, {args.slots} per GPU]", flush=True)
    packed = run_trials(args, share=1 / args.slots, count=args.trials, parallel=args.slots, name="bench_packed")
    rounds = math.ceil(args.trials / args.slots)
    ratio = packed["wall_s"] / (rounds * alone["wall_s"])
    report = {
        "alone": alone,
        "packed": packed,
        "ideal_s": round(rounds * alone["wall_s"], 1),
        "ratio": round(ratio, 3),
        "goal_at_most_1_15": ratio <= 1.15,
    }
    print("| N | K | one trial s | ceil(N/K) x one | packed wall s | ratio | GPU util mean / busy % |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.trials} | {args.slots} | {alone['wall_s']} | {report['ideal_s']} | {packed['wall_s']} | "
        f"{report['ratio']} | {packed['gpu_util_mean_pct']} / {packed['gpu_busy_share_pct']} |"
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
