"""Wall time and peak memory of the exact chunked k-NN of the mining stage (`core.mining_knn.knn_topk`).

    python benchmarks/knn_mining.py                                   # 1M pool x 1k targets x 256-d, k=5
    python benchmarks/knn_mining.py --pool-rows 200000 --chunk-rows 65536

Each chunk size runs in a fresh process, because peak RSS (`resource.getrusage`) is a high-water mark per
process. The process fills the pool with random unit vectors block by block, so the pool itself (N x D float32)
is the main memory before the search; it then times `knn_topk` and reads the peak RSS. The extra peak over
the pool is what the chunking bounds: about chunk_rows x targets x 9 bytes (similarities, a partition copy on
the first chunk, a comparison mask). Every run checks a few targets against a brute-force full scan, and the
indices of all runs must agree. Numbers are printed as a table and as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from aoi_pipeline.core.mining import select
from aoi_pipeline.core.mining_cut import pool_similarity_moments
from aoi_pipeline.core.mining_knn import knn_topk
from aoi_pipeline.core.mining_rules import MiningRules, PoolFacts, apply_rules

_MIB = 1024 * 1024
_BLOCK_ROWS = 4096
_CHECKED_TARGETS = 4


def _unit_vectors(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, _BLOCK_ROWS):
        block = rng.standard_normal((min(_BLOCK_ROWS, rows - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + block.shape[0]] = block
    return out


def _current_rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _brute_force_gap(targets: np.ndarray, pool: np.ndarray, sims: np.ndarray, k: int) -> float:
    """Largest difference between the returned similarities and a full scan, over a few targets."""
    gap = 0.0
    for row in range(min(_CHECKED_TARGETS, targets.shape[0])):
        full = pool @ targets[row]
        best = np.sort(np.partition(full, full.size - k)[full.size - k :])[::-1]
        gap = max(gap, float(np.abs(best - sims[row]).max()))
    return gap


def _time_rules(rng: np.random.Generator, indices: np.ndarray, sims: np.ndarray, pool_rows: int) -> float:
    """Seconds of the candidates' selection and the default rules (`core.mining_rules`) on the k-NN result, with
    random labels (60 % PASS), boards of 15 rows and scores, and a budget of half the candidates."""
    keys = [f"b{i // 15}/test/T{i % 15}.png" for i in range(pool_rows)]
    labels = np.where(rng.random(pool_rows) < 0.6, "PASS", "open").tolist()
    boards = [key.split("/", 1)[0] for key in keys]
    started = time.perf_counter()
    selection = select(indices, sims, min_similarity=-1.0, excluded_pool_indices=(), history=(), pool_keys=keys)
    facts = PoolFacts.of(labels, boards, rng.random(pool_rows), 0.5)
    rules = MiningRules(rank="uncertainty", label_balance="pool", explore_share=0.25)
    apply_rules(selection, indices, rules=rules, pool=facts, max_kept=selection.candidate_count // 2)
    return time.perf_counter() - started


def run_one(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    pool = _unit_vectors(rng, args.pool_rows, args.dim)
    targets = _unit_vectors(rng, args.targets, args.dim)
    rss_before = _current_rss_mib()
    started = time.perf_counter()
    indices, sims = knn_topk(targets, pool, k=args.k, chunk_rows=args.chunk_rows[0])
    seconds = time.perf_counter() - started
    # The calibrated cut's exact per-target moments (one more pass over the pool), timed on their own.
    started = time.perf_counter()
    pool_similarity_moments(targets, pool, chunk_rows=args.chunk_rows[0])
    moments_seconds = time.perf_counter() - started
    peak = _peak_rss_mib()  # before the rules' timing, whose test lists of a million keys are not mining's memory
    rules_seconds = _time_rules(rng, indices, sims, args.pool_rows)
    return {
        "chunk_rows": args.chunk_rows[0],
        "pool_rows": args.pool_rows,
        "targets": args.targets,
        "dim": args.dim,
        "k": args.k,
        "knn_seconds": round(seconds, 2),
        "moments_seconds": round(moments_seconds, 2),
        "rules_seconds": round(rules_seconds, 2),
        "pool_mib": round(pool.nbytes / _MIB, 1),
        "rss_before_knn_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_over_inputs_mib": round(peak - rss_before, 1),
        "chunk_estimate_mib": round(args.chunk_rows[0] * args.targets * 9 / _MIB, 1),
        "max_gap_to_full_scan": _brute_force_gap(targets, pool, sims, args.k),
        "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest()[:16],
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }


def run_all(args: argparse.Namespace) -> list[dict]:
    results = []
    for chunk_rows in args.chunk_rows:
        command = [
            sys.executable,
            __file__,
            "--one",
            *("--pool-rows", str(args.pool_rows), "--targets", str(args.targets), "--dim", str(args.dim)),
            *("--k", str(args.k), "--seed", str(args.seed), "--chunk-rows", str(chunk_rows)),
        ]
        completed = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(f"chunk_rows={chunk_rows}: done", file=sys.stderr, flush=True)
    return results


def print_table(results: list[dict]) -> None:
    first = results[0]
    print(
        f"pool {first['pool_rows']:,} x {first['dim']} float32 ({first['pool_mib']} MiB), "
        f"{first['targets']:,} targets, k={first['k']}"
    )
    header = (
        f"{'chunk_rows':>10}  {'knn s':>7}  {'moments s':>9}  {'rules s':>7}  {'peak RSS MiB':>12}  "
        f"{'over inputs MiB':>15}  {'estimate MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    for row in results:
        print(
            f"{row['chunk_rows']:>10}  {row['knn_seconds']:>7.2f}  {row['moments_seconds']:>9.2f}  "
            f"{row['rules_seconds']:>7.2f}  "
            f"{row['peak_rss_mib']:>12.1f}  "
            f"{row['peak_over_inputs_mib']:>15.1f}  {row['chunk_estimate_mib']:>12.1f}"
        )
    digests = {row["indices_sha256"] for row in results}
    gap = max(row["max_gap_to_full_scan"] for row in results)
    print(f"indices identical across chunk sizes: {len(digests) == 1}; max gap to a full scan: {gap:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-rows", type=int, default=1_000_000)
    parser.add_argument("--targets", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[16_384, 65_536, 262_144])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    results = run_all(args)
    print_table(results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
