"""Builders of a tiny synthetic AOI workspace for the reference runtime's tests.

Goldens are random blocky patterns (32 px by default); a PASS test image is its golden shifted by one pixel
with a little noise, a defect test image is its golden with a bright or dark blob painted in. The spec is the
DEFT baseline pointed at this workspace, shrunk to seconds on a CPU: 32 px, batch 8, 2 epochs.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.yaml_io import dump_spec

HEADER = ("input_path", "golden_path", "label", "object_name", "boardname")
LIGHT = "SolderLight"


def blocky_golden(rng: np.random.Generator, size: int) -> np.ndarray:
    """A binary pattern of 4x4-pixel blocks, like traces on a binarised PCB scan."""
    blocks = rng.random((size // 4, size // 4)) < 0.45
    return np.kron(blocks, np.ones((4, 4), dtype=bool)).astype(np.uint8) * 255


def pass_test(rng: np.random.Generator, golden: np.ndarray) -> np.ndarray:
    shifted = np.roll(golden, shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
    noise = rng.normal(0, 8, golden.shape)
    return np.clip(shifted + noise, 0, 255).astype(np.uint8)


def defect_test(rng: np.random.Generator, golden: np.ndarray) -> np.ndarray:
    size = golden.shape[0]
    test = golden.copy()
    y, x = rng.integers(2, size - 8, size=2)
    test[y : y + 6, x : x + 6] = 255 - test[y + 3, x + 3]
    return test


@dataclass(frozen=True)
class Workspace:
    """Paths of a built workspace and the spec file that trains on it."""

    root: Path
    images: Path
    train_csv: Path
    validation_csv: Path
    test_csv: Path
    spec_path: Path
    results: Path

    def rows(self, csv_path: Path) -> list[dict[str, str]]:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def write_split(
    images: Path, name: str, count: int, rng: np.random.Generator, size: int, *, defect_every: int = 3
) -> list[dict[str, str]]:
    rows = []
    for index in range(count):
        board = f"{name}{index:03d}"
        golden = blocky_golden(rng, size)
        defect = index % defect_every == 0
        test = defect_test(rng, golden) if defect else pass_test(rng, golden)
        for side, array in (("test", test), ("golden", golden)):
            path = images / board / side / f"T00_{LIGHT}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array, mode="L").save(path)
        rows.append(
            {
                "input_path": f"{board}/test",
                "golden_path": f"{board}/golden",
                "label": ("open" if index % 2 else "short") if defect else "PASS",
                "object_name": "T00",
                "boardname": board,
            }
        )
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, str]], columns: Sequence[str] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_workspace(root: Path, *, pairs: int = 24, size: int = 32, seed: int = 0) -> Workspace:
    rng = np.random.default_rng(seed)
    images = root / "images"
    train_csv = write_csv(root / "train" / "training_set.csv", write_split(images, "tr", pairs, rng, size))
    validation_csv = write_csv(root / "train" / "validation_set.csv", write_split(images, "va", 12, rng, size))
    test_csv = write_csv(root / "kpi" / "testing_set.csv", write_split(images, "te", 12, rng, size))
    results = root / "results"
    spec = baseline_spec()
    classify = spec["dataset"]["classify"]
    for block, csv_path in (
        ("train_dataset", train_csv),
        ("validation_dataset", validation_csv),
        ("test_dataset", test_csv),
        ("infer_dataset", test_csv),
    ):
        classify[block] = {"csv_path": str(csv_path), "images_dir": str(images)}
    classify.update(image_ext=".png", image_width=size, image_height=size, batch_size=8, workers=1)
    classify["input_map"] = {LIGHT: 0}
    spec["results_dir"] = str(results)
    spec["train"].update(num_epochs=2, validation_interval=1, checkpoint_interval=1, seed=7)
    spec["train"]["optim"]["lr"] = 1e-3
    spec["model"]["classify"]["embed_dec"] = 8
    spec_path = root / "spec.yaml"
    dump_spec(spec, spec_path)
    return Workspace(root, images, train_csv, validation_csv, test_csv, spec_path, results)


def run_subprocess(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `aoi-changenet` as its own process (console-script module), capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "aoi_pipeline.changenet.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def status_records(results_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (results_dir / "status.json").read_text().splitlines() if line.strip()]
