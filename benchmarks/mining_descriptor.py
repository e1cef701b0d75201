"""Does the mining descriptor find rows that look like a failure, or rows of the same board design?

Takes a `deeppcb_deft.py` run directory after its first iteration's mining stage: its baseline checkpoint, the
iteration's 350 mining targets (steer part of the KPI set) and the mining pool, with the embed specs the loop
wrote. For each descriptor it embeds both CSVs with that checkpoint and reports, over each target's 50 nearest
pool rows by cosine: the share with the target's PASS/defect class and exact label, the share from the target's
board design (DeepPCB: the first five digits of `b<group><n>`), the share the model gets wrong at the RCA's
threshold, how far they stand out of the target's similarity distribution over the whole pool (mean z), and the
share below z = 2 (what the calibrated cut `deft.mining_min_z: 2.0` would remove). The same
shares for random pool rows are the reference. Descriptors: `region` (the runtime's `describe`: encoder features
and signed change at the difference region), `tile_mean` (the descriptor before it: features averaged over the
whole tile plus the pooled change embedding), `change` (the pooled change embedding alone, what the head sees).

    python benchmarks/mining_descriptor.py --run WS/results/run_deft_benchmark --k 50
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aoi_pipeline.changenet import infer
from aoi_pipeline.changenet.model import ChangeNetClassifier
from aoi_pipeline.changenet.runtime_spec import read_runtime_spec

Describe = Callable[[ChangeNetClassifier, torch.Tensor, torch.Tensor], torch.Tensor]


def tile_mean(model: ChangeNetClassifier, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
    """The earlier descriptor: encoder features averaged over the tile, and the pooled change embedding."""
    features, change = model._features(test, golden)
    appearance = torch.cat([f.float().mean(dim=(2, 3)) for f in features], dim=1)
    return torch.cat([F.normalize(appearance, dim=1), F.normalize(change.float(), dim=1)], dim=1)


def pooled_change(model: ChangeNetClassifier, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
    return F.normalize(model._features(test, golden)[1].float(), dim=1)


DESCRIPTORS: dict[str, Describe | None] = {"region": None, "tile_mean": tile_mean, "change": pooled_change}


def design_of(path: str) -> str:
    """DeepPCB's design group of a row: `b20085180/test` -> `20085`."""
    return path.split("/", 1)[0][1:6]


def neighbour_shares(
    similarity: np.ndarray, targets: list[dict[str, str]], pool: list[dict[str, str]], pool_wrong: np.ndarray, k: int
) -> dict[str, float]:
    """Shares over every target's k nearest pool rows (by `similarity`, targets x pool), as fractions."""
    labels = np.array([row["label"] for row in pool])
    designs = np.array([design_of(row["input_path"]) for row in pool])
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    shares: dict[str, list[float]] = {
        "same_class": [], "same_label": [], "same_design": [], "wrong": [], "z": [], "below_z2": []
    }  # fmt: skip
    for index, target in enumerate(targets):
        picked = nearest[index]
        shares["same_class"].append(float(np.mean((labels[picked] == "PASS") == (target["label"] == "PASS"))))
        shares["same_label"].append(float(np.mean(labels[picked] == target["label"])))
        shares["same_design"].append(float(np.mean(designs[picked] == design_of(target["input_path"]))))
        shares["wrong"].append(float(np.mean(pool_wrong[picked])))
        row = similarity[index]
        z = (row[picked] - row.mean()) / (row.std() + 1e-12)
        shares["z"].append(float(z.mean()))
        shares["below_z2"].append(float(np.mean(z < 2.0)))  # what `deft.mining_min_z: 2.0` would remove
    return {name: round(float(np.mean(values)), 3) for name, values in shares.items()}


def random_shares(
    targets: list[dict[str, str]], pool: list[dict[str, str]], pool_wrong: np.ndarray
) -> dict[str, float]:
    """The same shares for pool rows drawn at random (their expectation: the pool's own shares per target)."""
    labels = np.array([row["label"] for row in pool])
    designs = np.array([design_of(row["input_path"]) for row in pool])

    def mean_over_targets(share: Callable[[dict[str, str]], float]) -> float:
        return round(float(np.mean([share(target) for target in targets])), 3)

    return {
        "same_class": mean_over_targets(lambda t: float(np.mean((labels == "PASS") == (t["label"] == "PASS")))),
        "same_label": mean_over_targets(lambda t: float(np.mean(labels == t["label"]))),
        "same_design": mean_over_targets(lambda t: float(np.mean(designs == design_of(t["input_path"])))),
        "wrong": round(float(pool_wrong.mean()), 3),
    }


def embed(spec_path: Path, describe: Describe | None) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Unit descriptors, scores and rows of an embed spec's CSV, with `describe` in place of the runtime's."""
    original = ChangeNetClassifier.describe
    if describe is not None:
        ChangeNetClassifier.describe = describe  # type: ignore[method-assign,assignment]
    try:
        job = infer.plan_scoring(read_runtime_spec(spec_path, [], "embed"))
        result, _ = infer._score(job, embeddings=True)
    finally:
        ChangeNetClassifier.describe = original  # type: ignore[method-assign]
    assert result.embeddings is not None
    with job.dataset.path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return result.embeddings, result.scores, rows


def measure(run: Path, k: int, names: list[str]) -> dict[str, Any]:
    [mining] = sorted((run / "iter1" / "mining_results").iterdir())[-1:]
    threshold = json.loads((run / "baseline" / "inference" / "latest" / "metric_result_steer.json").read_text())
    cut = float(threshold["threshold"])
    table: dict[str, Any] = {"run": str(run), "k": k, "rca_threshold": cut}
    for name in names:
        target_vectors, _, targets = embed(mining / "target_embeddings" / "spec.yaml", DESCRIPTORS[name])
        pool_vectors, pool_scores, pool = embed(mining / "source_embeddings" / "spec.yaml", DESCRIPTORS[name])
        is_pass = np.array([row["label"] == "PASS" for row in pool])
        pool_wrong = np.where(is_pass, pool_scores >= cut, pool_scores < cut)
        similarity = target_vectors @ pool_vectors.T
        nearest = np.sort(np.partition(similarity, -k, axis=1)[:, -k:], axis=1)
        table[name] = neighbour_shares(similarity, targets, pool, pool_wrong, k) | {
            "dim": int(target_vectors.shape[1]),
            "median_cosine_pool": round(float(np.median(similarity)), 3),
            "median_cosine_nearest": round(float(np.median(nearest)), 3),
        }
        table["random"] = random_shares(targets, pool, pool_wrong)
        print(json.dumps({name: table[name]}), flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a deeppcb_deft.py run directory (after iter1 mining)")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--descriptors", default=",".join(DESCRIPTORS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    table = measure(args.run, args.k, [name for name in args.descriptors.split(",") if name])
    print(json.dumps(table, indent=2))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
