"""Ablation of the DEFT loop on DeepPCB-AOI: is targeted data worth more than random pool rows?

Every figure is on the confirm part of the KPI set (the board-hash split the pipeline records), at equal added
rows: `--added` rows (at most 25 % of the pool) on top of the seed training set. Units, each one process of
`deeppcb_deft.py` (one iteration of the pipeline's own loop, warm-started from the baseline) per seed:

* `loop_s<seed>`: RCA -> SDG (`--sdg` rows, allocated by cost) + k-NN mining (the rest, capped by the pool
  budget); its baseline is the seed-only arm, its control (`deft.control: random`, as many random pool rows as
  the loop added, same warm start) the random arm;
* `mining_s<seed>`: mining only (no SDG), all `--added` rows mined;
* `sdg_s<seed>`: SDG only (`--added` synthetic rows; the mining cut `min_similarity: 1.0` keeps no candidate);
* `oldmining_s<seed>`: the loop with the selection before the mining rules (highest similarity first, any
  labels, no exploration), the same seeds and rows added, no control: the rules' own effect;
* `pool_s<seed>`: the ceiling, a baseline trained on the seed set plus the whole pool (no iteration);
* `lodo_<design>`: the loop (seed 1) on a workspace without that design's training, validation and pool rows,
  scored on that design's confirm rows, against the same rows when the design was seen (`loop_s1`).

Every unit that mines uses the product's mining rules (`deft.mining_rank`, `mining_label_balance`,
`mining_max_per_board`, `mining_explore_share`: their defaults unless `--mining-rank`, `--label-balance`,
`--max-per-board`, `--explore-share` say otherwise; recorded in each unit's settings), so "mining only" includes the
rules' share of random exploration rows. `--mining-rank similarity --label-balance none --explore-share 0` is the
old selection.

Resumable: each unit writes `OUT/units/<unit>.json` when done and is skipped afterwards; a unit cut off by
`--budget-s` resumes from its last committed stage (the loop's own state). `--parallel` units share the GPU.

    python benchmarks/deeppcb_ablation.py --data ../shared/data/deeppcb-aoi --out /tmp/ablation --size 128 \\
        --epochs 25 --batch 64 --added 1200 --sdg 240 --seeds 1,2,3 --lodo 00041,20085 --parallel 14 --budget-s 480
    python benchmarks/deeppcb_ablation.py --out /tmp/ablation --summary-only     # the table of what is done
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from aoi_pipeline.config import DeftSettings
from aoi_pipeline.core.far import ScoredRows, far_at_recall
from aoi_pipeline.core.mining_rules import BALANCES, RANKS
from deeppcb_designs import SETS, design_of

HERE = Path(__file__).resolve().parent
RECALLS = (95.0, 99.0, 100.0)
ARMS = ("seed_only", "random", "mining", "sdg", "loop", "loop_old_mining", "pool")
#: The selection before the rules of core/mining_rules.py: the highest similarities over all targets.
OLD_MINING = {"rank": "similarity", "label_balance": "none", "max_per_board": None, "explore_share": 0.0}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def make_workspace(data: Path, target: Path, *, without: str | None = None, pool_in_training: bool = False) -> Path:
    """A workspace of CSVs beside a link to the data's images: without one design, or seed + pool as training."""
    if (target / "images").exists():
        return target
    for key in ("training", "validation", "kpi", "pool"):
        columns, rows = read_csv(data.joinpath(*SETS[key]))
        if key == "training" and pool_in_training:
            rows += read_csv(data.joinpath(*SETS["pool"]))[1]
        if without is not None and key != "kpi":
            rows = [row for row in rows if design_of(row["boardname"]) != without]
        write_csv(target.joinpath(*SETS[key]), columns, rows)
    (target / "images").symlink_to((data / "images").resolve())
    return target


def far(path: Path, design: str | None = None) -> dict[str, float]:
    """FAR (%) at 95, 99 and 100 % recall of a scored CSV, on one design's rows when named."""
    _, rows = read_csv(path)
    if design is not None:
        rows = [row for row in rows if design_of(row["boardname"]) == design]
    scored = ScoredRows(tuple(r["label"] for r in rows), np.array([float(r["siamese_score"]) for r in rows]))
    return {f"far_at_{int(r)}": round(far_at_recall(scored, r).far_pct, 3) for r in RECALLS} | {"rows": len(rows)}


def provenance(path: Path) -> dict[str, int]:
    """Training rows of an iteration (or its control) by source: base_train, sdg, mined, random..."""
    counts: dict[str, int] = {}
    for row in read_csv(path)[1]:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    return counts


def unit_plan(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    pool_rows = len(read_csv(args.data.joinpath(*SETS["pool"]))[1])
    mined = args.added - args.sdg
    # Half a row above the count: the budget is floor(share x pool rows), and the share travels as text.
    # `--added` rows per iteration; the pool budget covers every iteration's mined rows.
    loop = {"num_sdg": args.sdg, "share": (args.iterations * mined + 0.5) / pool_rows, "control": "random"}
    loop["min_sim"] = -1.0
    loop["mining"] = {  # recorded with every unit's figures: which selection rules mined its rows
        "rank": args.mining_rank,
        "label_balance": args.label_balance,
        "max_per_board": args.max_per_board or None,
        "explore_share": args.explore_share,
        "top_k": args.top_k,
    }
    # In order of what the table needs most: the loop runs give three arms each (seed-only, loop, random).
    plan: dict[str, dict[str, Any]] = {
        f"loop_s{seed}": {**loop, "seed": seed, "ws": "full", "iterations": args.iterations} for seed in args.seeds
    }
    for seed in args.seeds:
        plan[f"mining_s{seed}"] = {**loop, "num_sdg": 0, "share": (args.added + 0.5) / pool_rows, "control": "none"}
        plan[f"mining_s{seed}"].update(seed=seed, ws="full", iterations=1)
        plan[f"sdg_s{seed}"] = {**loop, "num_sdg": args.added, "share": 1.5 / pool_rows, "control": "none"}
        plan[f"sdg_s{seed}"].update(seed=seed, ws="full", iterations=1, min_sim=1.0)
        plan[f"pool_s{seed}"] = {**loop, "seed": seed, "ws": "pool", "iterations": 0, "control": "none"}
        plan[f"oldmining_s{seed}"] = {**loop, "seed": seed, "ws": "full", "iterations": 1, "control": "none"}
        plan[f"oldmining_s{seed}"]["mining"] = {**loop["mining"], **OLD_MINING}
    pool_designs = [design_of(row["boardname"]) for row in read_csv(args.data.joinpath(*SETS["pool"]))[1]]
    for design in args.lodo:
        rows_left = sum(1 for d in pool_designs if d != design)  # the same mined count from a smaller pool
        plan[f"lodo_{design}"] = {**loop, "seed": args.seeds[0], "ws": f"without_{design}"}
        plan[f"lodo_{design}"].update(
            iterations=args.iterations, share=min(1.0, (args.iterations * mined + 0.5) / rows_left)
        )
    return plan


def unit_workspace(args: argparse.Namespace, unit: dict[str, Any]) -> Path:
    """The unit's workspace under OUT/ws (the runs live inside it: SDG images must lie inside the workspace)."""
    ws = unit["ws"]
    without = ws.removeprefix("without_") if ws.startswith("without_") else None
    return make_workspace(args.data, args.out / "ws" / ws, without=without, pool_in_training=ws == "pool")


def run_unit(args: argparse.Namespace, name: str, unit: dict[str, Any], deadline: float) -> str:
    done = args.out / "units" / f"{name}.json"
    done.parent.mkdir(parents=True, exist_ok=True)
    if done.is_file():
        return f"{name}: done before"
    if time.monotonic() > deadline - 30:
        return f"{name}: not started (budget)"
    workspace = unit_workspace(args, unit)
    rules = unit["mining"]
    command = [
        sys.executable, str(HERE / "deeppcb_deft.py"), "--workspace", str(workspace),
        "--run-name", name, "--iterations", str(unit["iterations"]),
        "--epochs", str(args.epochs), "--size", str(args.size), "--batch", str(args.batch), "--lr", str(args.lr),
        "--num-sdg", str(unit["num_sdg"]), "--top-k", str(args.top_k), "--min-similarity", str(unit["min_sim"]),
        "--max-pool-share", f"{unit['share']:.6f}", "--control", unit["control"], "--seed", str(unit["seed"]),
        "--mining-rank", rules["rank"], "--label-balance", rules["label_balance"],
        "--max-per-board", str(rules["max_per_board"] or 0), "--explore-share", str(rules["explore_share"]),
    ]  # fmt: skip
    log = args.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            partial = score_unit(workspace / "results" / name, name, unit)
            done.with_suffix(".partial").write_text(json.dumps(partial, indent=2), encoding="utf-8")
            return f"{name}: cut off by the budget after {time.monotonic() - started:.0f} s (resumes next time)"
    if code != 0:
        return f"{name}: FAILED (exit {code}); see {log}"
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(score_unit(workspace / "results" / name, name, unit), indent=2), encoding="utf-8")
    return f"{name}: done in {time.monotonic() - started:.0f} s"


def scored(path: Path, design: str | None = None) -> dict[str, float] | None:
    """`far` of the one confirm CSV under `path` (the control's excluded), None while it is not written yet."""
    control = path / "control"
    found = sorted(p for p in path.rglob("inference_confirm.csv") if control not in p.parents or path == control)
    return far(found[0], design) if found else None


def added_rows(provenance_csv: Path) -> dict[str, int] | None:
    if not provenance_csv.is_file():
        return None
    return {k: v for k, v in provenance(provenance_csv).items() if k != "base_train"}


def score_unit(run: Path, name: str, unit: dict[str, Any]) -> dict[str, Any]:
    """The unit's confirm figures; a part its run has not reached yet (a unit cut off by the budget) is absent."""
    label = f"iter{max(1, unit['iterations'])}"  # the last iteration: its control added the same rows to iter N-1
    iteration, control = run / label, run / label / "control"
    figures: dict[str, Any] = {"unit": name, "seed": unit["seed"], "settings": unit}
    parts = {"baseline": scored(run / "baseline")}
    if unit["iterations"]:
        parts["iter1"] = scored(iteration)
        parts["added"] = added_rows(iteration / "dataset" / f"train_combined_{label}_provenance.csv")
        parts["control"] = scored(control)
        if parts["control"] is not None:
            parts["control"]["added"] = added_rows(control / "dataset" / f"train_control_{label}_provenance.csv")
    figures.update({k: v for k, v in parts.items() if v is not None})
    if name.startswith("lodo_"):
        design = name.removeprefix("lodo_")
        held = {"baseline": scored(run / "baseline", design), "iter1": scored(iteration, design)}
        held["control"] = scored(control, design)
        figures["held_out_design"] = {k: v for k, v in held.items() if v is not None}
    return figures


def arm_figures(units: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per arm, the confirm figures of each seed."""
    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for name, unit in sorted(units.items()):
        kind = name.split("_s")[0]
        if kind == "loop" and "baseline" in unit:
            arms["seed_only"].append(unit["baseline"])
        if kind in ("loop", "mining", "sdg") and "iter1" in unit:
            arms[kind].append({**unit["iter1"], "added": unit.get("added")})
        if kind == "oldmining" and "iter1" in unit:
            arms["loop_old_mining"].append({**unit["iter1"], "added": unit.get("added")})
        if kind == "loop" and "control" in unit:
            arms["random"].append(unit["control"])
        if kind == "pool" and "baseline" in unit:
            arms["pool"].append(unit["baseline"])
    return arms


def mean_spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), 2), "sd": round(sd, 2), "min": min(values), "max": max(values)} | {
        "n": len(values)
    }


def summarise(out: Path, data: Path) -> dict[str, Any]:
    units = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "units").glob("*.json"))}
    partial = {
        p.stem: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((out / "units").glob("*.partial"))
        if p.stem not in units
    }
    merged = {**partial, **units}  # a unit cut off by the budget counts with the parts it finished
    pool_rows = len(read_csv(data.joinpath(*SETS["pool"]))[1])
    table = {}
    for arm, runs in arm_figures(merged).items():
        row = {f"far_at_{int(r)}": mean_spread([run[f"far_at_{int(r)}"] for run in runs]) for r in RECALLS}
        added = [sum((run.get("added") or {}).values()) for run in runs if run.get("added") is not None]
        row["added_rows"] = added
        # Every added row but the synthetic ones comes from the pool (mined, or random in the control).
        row["pool_share_pct"] = [
            round(100.0 * sum(v for k, v in (run.get("added") or {}).items() if k != "sdg") / pool_rows, 2)
            for run in runs
        ]
        table[arm] = row
    lodo = {}
    for name, unit in merged.items():
        if name.startswith("lodo_"):
            design = name.removeprefix("lodo_")
            seen = merged.get("loop_s1") or next((u for n, u in merged.items() if n.startswith("loop_s")), None)
            seen_figures = None
            if seen is not None:
                run = out / "ws" / "full" / "results" / seen["unit"]
                last = run / f"iter{max(1, seen['settings']['iterations'])}"
                seen_figures = {"baseline": scored(run / "baseline", design), "iter1": scored(last, design)}
                seen_figures["control"] = scored(last / "control", design)
            lodo[design] = {"unseen": unit.get("held_out_design"), "seen": seen_figures}
    return {
        "units_done": sorted(units),
        "units_partial": sorted(partial),
        "arms": table,
        "leave_one_design_out": lodo,
        "goals": goals(table),
    }


def goals(table: dict[str, Any]) -> dict[str, Any]:
    def m(arm: str) -> float | None:
        return table[arm]["far_at_99"]["mean"]

    loop, random_, seed, pool = m("loop"), m("random"), m("seed_only"), m("pool")
    result: dict[str, Any] = {}
    if loop is not None and random_:
        result["loop_over_random"] = round(loop / random_, 3)
        result["loop_over_random_met (<= 0.67)"] = loop <= 0.67 * random_
    if loop is not None and seed is not None:
        result["seed_only_over_loop"] = round(seed / loop, 3) if loop else None
        result["seed_only_over_loop_met (>= 3)"] = bool(loop and seed / loop >= 3.0)
    if loop is not None and pool:
        result["loop_over_pool"] = round(loop / pool, 3)
        result["loop_within_1.5x_pool_met"] = loop <= 1.5 * pool
    return result


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'arm':15} {'n':>2} {'FAR@95 %':>15} {'FAR@99 %':>15} {'FAR@100 %':>15}  added rows / pool share %")
    for arm, row in summary["arms"].items():
        cells = [f"{row[k]['mean']} ± {row[k]['sd']}" for k in ("far_at_95", "far_at_99", "far_at_100")]
        n = row["far_at_99"]["n"]
        shares = row["pool_share_pct"]
        print(f"{arm:15} {n:>2} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}  {row['added_rows']} {shares}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "deeppcb-aoi")
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppcb_ablation"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--added", type=int, default=1200, help="rows every arm adds to the seed set per iteration")
    parser.add_argument("--iterations", type=int, default=1, help="DEFT iterations of the loop and LODO units")
    parser.add_argument("--sdg", type=int, default=240, help="of which the loop's SDG rows")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2, 3])
    parser.add_argument("--lodo", type=lambda s: [x for x in s.split(",") if x], default=["00041", "20085"])
    parser.add_argument("--units", default="", help="only these units (comma-separated names)")
    rules = DeftSettings()  # the mining rules of every unit that mines; the product's defaults unless given
    parser.add_argument("--mining-rank", choices=RANKS, default=rules.mining_rank, help="deft.mining_rank")
    parser.add_argument("--label-balance", choices=BALANCES, default=rules.mining_label_balance)
    parser.add_argument("--max-per-board", type=int, default=rules.mining_max_per_board or 0, help="0: no cap")
    parser.add_argument("--explore-share", type=float, default=rules.mining_explore_share)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--budget-s", type=float, default=500.0, help="stop (resumably) after this many seconds")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.joinpath(*SETS["kpi"]).is_file():
        print(f"DeepPCB-AOI workspace not found at {args.data}", file=sys.stderr)
        return 2
    if not args.summary_only:
        plan = unit_plan(args)
        if args.units:
            plan = {k: v for k, v in plan.items() if k in args.units.split(",")}
        for unit in plan.values():
            unit_workspace(args, unit)  # before the units start: several share one workspace
        deadline = time.monotonic() + args.budget_s
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for line in pool.map(lambda item: run_unit(args, item[0], item[1], deadline), plan.items()):
                print(line, flush=True)
    summary = summarise(args.out, args.data)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print_table(summary)
    print(json.dumps({"goals": summary["goals"], "leave_one_design_out": summary["leave_one_design_out"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
