"""Quality of the reference runtime on real PCB pairs: FAR at 95/99/100 % defect recall on DeepPCB-AOI.

Trains `aoi-changenet` twice on `../shared/data/deeppcb-aoi` — on the seed training set alone, and on the seed
set plus the whole mining pool (the upper bound the improvement loop works towards) — scores
`kpi/testing_set.csv` with the latest and the best-`val_far` checkpoint of each, and reports FAR at 95, 99 and
100 % recall as JSON and as a table. Goal for seed + pool: FAR@99 <= 5 %.

    python benchmarks/deeppcb_quality.py --size 160 --epochs 30 --device cuda          # the real run (GPU)
    python benchmarks/deeppcb_quality.py --size 64 --epochs 2 --pool-fraction 0.05     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from aoi_pipeline.changenet.cli import main as changenet
from aoi_pipeline.core.far import far_at_recall, read_scored_csv
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.yaml_io import dump_spec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "deeppcb-aoi"
RECALLS = (95.0, 99.0, 100.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the DeepPCB-AOI workspace")
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppcb_quality"), help="results directory")
    parser.add_argument("--size", type=int, default=160, help="image side in pixels")
    parser.add_argument("--epochs", "--max-epochs", dest="epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed-epochs", type=int, default=None, help="epochs of the seed-only run (--epochs)")
    parser.add_argument("--seed-batch", type=int, default=None, help="batch of the seed-only run (--batch)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--fpratio", type=float, default=0.5, help="dataset.classify.fpratio_sampling")
    parser.add_argument("--device", default="auto", help="reference.device: auto, cpu, cuda")
    parser.add_argument("--pool-fraction", type=float, default=1.0, help="share of the mining pool used")
    parser.add_argument("--runs", default="seed,seed_pool", help="comma-separated: seed, seed_pool")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", type=Path, default=None, help="also write the results JSON here")
    add_model_args(parser)
    return parser.parse_args(argv)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The reference network's options (`reference.backbone`, `reference.register_fraction`)."""
    parser.add_argument("--backbone", default="small", help="reference.backbone: small or resnet")
    parser.add_argument("--register-fraction", type=float, default=0.08, help="reference.register_fraction")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def combined_csv(data: Path, out: Path, fraction: float, seed: int) -> Path:
    """Seed training set + (a share of) the mining pool, written as one training CSV."""
    columns, seed_rows = read_rows(data / "train" / "base" / "training_set.csv")
    _, pool_rows = read_rows(data / "augmentation" / "mining_pool" / "mining_pool.csv")
    if fraction < 1.0:
        pool_rows = random.Random(seed).sample(pool_rows, max(1, int(len(pool_rows) * fraction)))
    path = out / "seed_pool_training_set.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(seed_rows + pool_rows)
    return path


def write_spec(args: argparse.Namespace, run: str, train_csv: Path, validation_csv: Path | None = None) -> Path:
    images = str(args.data.resolve() / "images")
    epochs = (args.seed_epochs if run == "seed" else None) or args.epochs
    batch = (args.seed_batch if run == "seed" else None) or args.batch
    spec = baseline_spec()
    classify = spec["dataset"]["classify"]
    blocks = {
        "train_dataset": train_csv,
        "validation_dataset": validation_csv or args.data / "train" / "base" / "validation_set.csv",
        "test_dataset": args.data / "kpi" / "testing_set.csv",
        "infer_dataset": args.data / "kpi" / "testing_set.csv",
    }
    for block, csv_path in blocks.items():
        classify[block] = {"csv_path": str(Path(csv_path).resolve()), "images_dir": images}
    classify.update(image_ext=".png", image_width=args.size, image_height=args.size, batch_size=batch, workers=8)
    classify["fpratio_sampling"] = args.fpratio
    classify["input_map"] = {"SolderLight": 0}
    spec["results_dir"] = str((args.out / run).resolve())
    spec["train"].update(
        num_epochs=epochs,
        validation_interval=max(1, epochs // 6),
        checkpoint_interval=epochs,
        seed=args.seed,
        checkpointer={"enable_topk": True, "monitor": "val_far", "mode": "min", "save_top_k": 1},
    )
    spec["train"]["optim"]["lr"] = args.lr
    spec["reference"] = {
        "device": args.device,
        "backbone": args.backbone,
        "register_fraction": args.register_fraction,
    }
    path = args.out / run / "spec.yaml"
    dump_spec(spec, path)
    return path


def far_table(inference_csv: Path) -> dict[str, float]:
    rows = read_scored_csv(inference_csv)
    return {f"far_at_{recall:g}": far_at_recall(rows, recall).far_pct for recall in RECALLS}


def run_variant(args: argparse.Namespace, run: str, train_csv: Path) -> dict[str, Any]:
    spec_path = write_spec(args, run, train_csv)
    started = time.perf_counter()
    if changenet(["train", "-e", str(spec_path)]) != 0:
        raise SystemExit(f"training {run} failed; see {args.out / run / 'train'}")
    train_seconds = time.perf_counter() - started
    train_dir = args.out / run / "train"
    result: dict[str, Any] = {"train_rows": sum(1 for _ in train_csv.open()) - 1, "train_seconds": train_seconds}
    candidates = {"latest": train_dir / "changenet_model_classify_latest.pth"}
    best = sorted(train_dir.glob("model_best_*.pth"))
    if best:
        candidates["best_val_far"] = best[-1]
    for kind, checkpoint in candidates.items():
        results_dir = args.out / run / "inference" / kind
        code = changenet(
            [
                "inference",
                "-e",
                str(spec_path),
                f"inference.checkpoint={checkpoint}",
                f"inference.results_dir={results_dir}",
                "inference.batch_size=512",
            ]
        )
        if code != 0:
            raise SystemExit(f"inference {run}/{kind} failed")
        result[kind] = {"checkpoint": checkpoint.name, **far_table(results_dir / "inference.csv")}
    return result


def render(results: dict[str, Any]) -> str:
    lines = [
        "| training set | rows | checkpoint | FAR@95 | FAR@99 | FAR@100 | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, result in results["runs"].items():
        for kind in ("latest", "best_val_far"):
            if kind in result:
                far = result[kind]
                lines.append(
                    f"| {run} | {result['train_rows']} | {kind} | {far['far_at_95']:.2f} % | "
                    f"{far['far_at_99']:.2f} % | {far['far_at_100']:.2f} % | {result['train_seconds']:.0f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "kpi" / "testing_set.csv").is_file():
        print(f"DeepPCB-AOI workspace not found at {args.data}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results: dict[str, Any] = {"settings": settings, "runs": {}}
    for run in runs:
        if run == "seed":
            train_csv = args.data / "train" / "base" / "training_set.csv"
        elif run == "seed_pool":
            train_csv = combined_csv(args.data, args.out, args.pool_fraction, args.seed)
        else:
            raise SystemExit(f"unknown run {run!r}: use seed or seed_pool")
        results["runs"][run] = run_variant(args, run, train_csv)
    text = json.dumps(results, indent=2)
    (args.out / "deeppcb_quality.json").write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
