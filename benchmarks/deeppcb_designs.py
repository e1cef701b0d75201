"""How well the reference runtime carries over to board designs it has not seen: DeepPCB-AOI by design.

A DeepPCB board id is `b<design><n>`: the first five digits name the board design (seven designs). Two
measurements on the KPI set (`kpi/testing_set.csv`), both trained on the seed set plus the whole mining pool:

* seen designs: train on every design, `--seeds` times; FAR@99 on the whole KPI set and on each design's rows
  (goal: the mean over seeds <= 3 %);
* leave-one-design-out: for each `--held-out` design, train without that design's rows (training and
  validation), then FAR@99 on that design's KPI rows; the ratio to the same design's mean FAR@99 when it was
  seen is the carry-over figure (goal: within 2x).

`design_of`, `rows_by_design` and `far_by_design` are shared with the improvement-loop benchmarks.

    python benchmarks/deeppcb_designs.py --size 160 --epochs 40 --batch 256 --seeds 1,2,3 --held-out 20085,13000,00041
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from aoi_pipeline.changenet.cli import main as changenet
from aoi_pipeline.core.far import ScoredRows, far_at_recall
from deeppcb_quality import DEFAULT_DATA, add_model_args, read_rows, write_spec

RECALL = 99.0
SETS = {
    "training": ("train", "base", "training_set.csv"),
    "validation": ("train", "base", "validation_set.csv"),
    "kpi": ("kpi", "testing_set.csv"),
    "pool": ("augmentation", "mining_pool", "mining_pool.csv"),
}


def design_of(board: str) -> str:
    """The design group of a DeepPCB board id `b<design><n>`: its first five digits."""
    return board.lstrip("b")[:5]


def rows_by_design(rows: Iterable[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(design_of(row["boardname"]), []).append(row)
    return dict(sorted(groups.items()))


def far_by_design(inference_csv: Path, recall: float = RECALL) -> dict[str, float]:
    """FAR at `recall` on the whole scored CSV (`all`) and on each design's rows."""
    with inference_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    groups = {"all": rows, **rows_by_design(rows)}
    return {
        name: far_at_recall(
            ScoredRows(tuple(r["label"] for r in members), np.array([float(r["siamese_score"]) for r in members])),
            recall,
        ).far_pct
        for name, members in groups.items()
    }


def write_rows(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def train_and_score(args: argparse.Namespace, run: str, excluded: str | None) -> dict[str, Any]:
    columns, training = read_rows(args.data.joinpath(*SETS["training"]))
    _, pool = read_rows(args.data.joinpath(*SETS["pool"]))
    _, validation = read_rows(args.data.joinpath(*SETS["validation"]))
    keep = [row for row in training + pool if design_of(row["boardname"]) != excluded]
    kept_validation = [row for row in validation if design_of(row["boardname"]) != excluded]
    train_csv = write_rows(args.out / run / "training_set.csv", columns, keep)
    validation_csv = write_rows(args.out / run / "validation_set.csv", columns, kept_validation)
    spec = write_spec(args, run, train_csv, validation_csv)
    started = time.perf_counter()
    if changenet(["train", "-e", str(spec)]) != 0:
        raise SystemExit(f"training {run} failed; see {args.out / run / 'train'}")
    seconds = time.perf_counter() - started
    inference = args.out / run / "inference"
    checkpoint = args.out / run / "train" / "changenet_model_classify_latest.pth"
    code = changenet(
        [
            "inference",
            "-e",
            str(spec),
            f"inference.checkpoint={checkpoint}",
            f"inference.results_dir={inference}",
            "inference.batch_size=512",
        ]
    )
    if code != 0:
        raise SystemExit(f"inference {run} failed")
    return {
        "train_rows": len(keep),
        "train_seconds": round(seconds, 1),
        "far_at_99": far_by_design(inference / "inference.csv"),
    }


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    seen = [run["far_at_99"] for name, run in results["runs"].items() if name.startswith("seen")]
    summary: dict[str, Any] = {}
    if seen:
        summary["seen_far_at_99_mean"] = statistics.mean(run["all"] for run in seen)
        summary["seen_far_at_99_runs"] = [run["all"] for run in seen]
        summary["seen_by_design_mean"] = {
            design: statistics.mean(run[design] for run in seen) for design in seen[0] if design != "all"
        }
    ratios = {}
    for name, run in results["runs"].items():
        if name.startswith("lodo_"):
            design = name.removeprefix("lodo_")
            held = run["far_at_99"][design]
            reference = summary.get("seen_by_design_mean", {}).get(design)
            ratios[design] = {"unseen": held, "seen": reference, "ratio": held / reference if reference else None}
    summary["leave_one_design_out"] = ratios
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppcb_designs"))
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--fpratio", type=float, default=0.5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", default="1,2,3", help="seeds of the seen-design runs ('' = none)")
    parser.add_argument("--held-out", default="20085,13000,00041", help="designs left out one at a time")
    parser.add_argument("--json", type=Path, default=None)
    add_model_args(parser)
    args = parser.parse_args(argv)
    args.seed_epochs = args.seed_batch = None
    if not args.data.joinpath(*SETS["kpi"]).is_file():
        print(f"DeepPCB-AOI workspace not found at {args.data}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        args.seed = seed
        results["runs"][f"seen_seed{seed}"] = train_and_score(args, f"seen_seed{seed}", None)
        print(json.dumps(results["runs"][f"seen_seed{seed}"]), flush=True)
    args.seed = 1
    for design in [d.strip() for d in args.held_out.split(",") if d.strip()]:
        results["runs"][f"lodo_{design}"] = train_and_score(args, f"lodo_{design}", design)
        print(json.dumps(results["runs"][f"lodo_{design}"]), flush=True)
    results["summary"] = summarise(results)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps(results["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
