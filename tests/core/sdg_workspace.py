"""A synthetic workspace with procedural SDG outputs, and the helpers of the SDG ingestion, assembly and merge
validation tests (`tests/core/conftest.py` builds the workspace once per module and copies it per test)."""

from __future__ import annotations

import csv
from pathlib import Path

from aoi_pipeline.changenet.sdg import SdgSpec, generate
from aoi_pipeline.core.assembly import assemble, write_assembly
from aoi_pipeline.core.dataset import read_dataset_csv
from aoi_pipeline.core.sdg_ingest import ingest_sdg
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

LIGHT, EXT = "SolderLight", ".png"
RUN = "results/run_t"
ALLOCATION = {"open": 2, "short": 1}
SDG_NAMES = ("PCB+open_00000.png", "PCB+open_00001.png", "PCB+short_00000.png")


def build_sdg_workspace(root: Path) -> Path:
    """Write a synthetic workspace at `root` with procedural SDG outputs for iterations 1 and 2."""
    write_workspace(root, SynthSpec(boards=12, size=32, seed=1))
    for number in (1, 2):
        generate(
            SdgSpec(
                pairs_csv=root / "train" / "base" / "training_set.csv",
                images_dir=root / "images",
                allocation=dict(ALLOCATION),
                results_dir=root / RUN / f"iter{number}" / "anomalygen" / "sdg",
                seed=number,
            )
        )
    return root


def sdg_dir(root: Path, number: int = 1) -> Path:
    return root / RUN / f"iter{number}" / "anomalygen" / "sdg"


def images_dir(root: Path, number: int = 1) -> Path:
    return root / RUN / f"iter{number}" / "dataset" / "images"


def ingest(root: Path, number: int = 1, **overrides):
    arguments = {
        "workspace_root": root,
        "dataset_images_dir": images_dir(root, number),
        "subdir": f"synthetic_iter{number}",
        "light": LIGHT,
        "image_ext": EXT,
        **overrides,
    }
    return ingest_sdg(sdg_dir(root, number), **arguments)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def as_mined(row: dict[str, str], target_row: int, similarity: float) -> dict[str, object]:
    """A pool row as mining hands it over: workspace coordinates, pool label (here upper-cased), provenance."""
    return {
        "input_path": f"images/{row['input_path']}",
        "golden_path": f"images/{row['golden_path']}",
        "label": row["label"].upper(),
        "object_name": row["object_name"],
        "boardname": row["boardname"],
        "pool_row": str(target_row + 100),
        "pool_filepath": f"{row['input_path']}/{row['object_name']}_{LIGHT}{EXT}",
        "target_row": str(target_row),
        "similarity": similarity,
    }


def pool_rows(root: Path) -> list[dict[str, str]]:
    return read_rows(root / "augmentation" / "mining_pool" / "mining_pool.csv")


def assemble_iter1(root: Path) -> tuple[Path, Path]:
    """Assemble and write iteration 1 (base + SDG + 4 pool rows); return the combined and provenance CSVs."""
    result = assemble(
        iteration=1,
        previous=read_dataset_csv(root / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=ingest(root).rows,
        mined_rows=[as_mined(row, n, 0.95) for n, row in enumerate(pool_rows(root)[:4])],
    )
    dataset = root / RUN / "iter1" / "dataset"
    combined, provenance = dataset / "train_combined_iter1.csv", dataset / "train_combined_iter1_provenance.csv"
    write_assembly(result, combined_csv=combined, provenance_csv=provenance)
    return combined, provenance
