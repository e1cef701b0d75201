"""SDG ingestion: staging every generated pair in workspace coordinates, skips counted, shortfalls refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sdg_workspace import (
    EXT,
    LIGHT,
    RUN,
    SDG_NAMES,
    images_dir,
    ingest,
    read_rows,
    sdg_dir,
    write_rows,
)

from aoi_pipeline.core.dataset import image_files
from aoi_pipeline.core.sdg_ingest import ingest_sdg
from aoi_pipeline.errors import DatasetError


def test_ingest_stages_every_pair_with_workspace_coordinates(workspace: Path) -> None:
    result = ingest(workspace)

    listed = [Path(row["image"]).name for row in read_rows(sdg_dir(workspace) / "SDG_result.csv")]
    assert sorted(listed) == sorted(SDG_NAMES)
    assert result.paired == 3 and result.skipped_unpaired == () and result.skipped_guardrail == ()
    assert result.labels == {"open": 2, "short": 1}
    assert result.converted == 0
    expected_ng = f"{RUN}/iter1/dataset/images/synthetic_iter1_ng/"
    expected_ok = f"{RUN}/iter1/dataset/images/synthetic_iter1_ok/"
    assert [row["object_name"] for row in result.rows] == [Path(name).stem for name in sorted(listed)]
    for row in result.rows:
        assert (row["input_path"], row["golden_path"]) == (expected_ng, expected_ok)
        test_file, golden_file = image_files(row, images_dir=workspace, lights=(LIGHT,), image_ext=EXT)
        source = f"{row['object_name']}.png"
        assert test_file.read_bytes() == (sdg_dir(workspace) / "reconstructed_image" / source).read_bytes()
        assert golden_file.read_bytes() == (sdg_dir(workspace) / "original_image" / source).read_bytes()
        assert row["sdg_file"] == f"{RUN}/iter1/anomalygen/sdg/reconstructed_image/{source}"
    assert result.summary()["ingested_count"] == 3


def test_ingest_converts_to_the_spec_image_format(workspace: Path) -> None:
    result = ingest(workspace, image_ext="jpg")

    assert result.converted == 3
    for row in result.rows:
        test_file, golden_file = image_files(row, images_dir=workspace, lights=(LIGHT,), image_ext=".jpg")
        source = sdg_dir(workspace) / "reconstructed_image" / f"{row['object_name']}.png"
        with Image.open(test_file) as staged, Image.open(source) as original:
            assert staged.format == "JPEG"
            difference = np.abs(np.asarray(staged.convert("L"), float) - np.asarray(original.convert("L"), float))
        assert difference.mean() < 8  # JPEG at quality 95 keeps the picture, not the bytes
        assert golden_file.is_file()


def test_unpaired_files_are_skipped_and_counted(workspace: Path) -> None:
    folder = sdg_dir(workspace)
    shutil.copy(folder / "reconstructed_image" / SDG_NAMES[0], folder / "reconstructed_image" / "PCB+open_00099.png")
    shutil.copy(folder / "original_image" / SDG_NAMES[2], folder / "original_image" / "PCB+spur_00007.png")

    result = ingest(workspace)

    assert result.skipped_unpaired == ("reconstructed_image/PCB+open_00099.png", "original_image/PCB+spur_00007.png")
    assert result.paired == 3 and len(result.rows) == 3
    staged = sorted(path.name for path in images_dir(workspace).rglob("*.png"))
    assert "PCB+open_00099_SolderLight.png" not in staged and "PCB+spur_00007_SolderLight.png" not in staged
    assert result.summary()["skipped_unpaired_count"] == 2


def test_guardrail_blocked_samples_are_skipped_and_counted(workspace: Path) -> None:
    result_csv = sdg_dir(workspace) / "SDG_result.csv"
    rows = read_rows(result_csv)
    for row in rows:
        if row["image"].endswith("PCB+open_00001.png"):
            row["guardrail_pass"] = "0"
    write_rows(result_csv, rows)

    result = ingest(workspace)

    assert result.skipped_guardrail == ("reconstructed_image/PCB+open_00001.png",)
    assert result.paired == 3
    assert [row["object_name"] for row in result.rows] == ["PCB+open_00000", "PCB+short_00000"]
    assert result.labels == {"open": 1, "short": 1}
    assert not (images_dir(workspace) / "synthetic_iter1_ng" / "PCB+open_00001_SolderLight.png").exists()


def test_a_result_row_without_its_pair_is_a_shortfall_and_writes_nothing(workspace: Path) -> None:
    (sdg_dir(workspace) / "original_image" / "PCB+short_00000.png").unlink()

    with pytest.raises(DatasetError, match=r"PCB\+short_00000"):
        ingest(workspace)
    assert not images_dir(workspace).exists()


@pytest.mark.parametrize(
    ("allocation", "named"),
    [({"open": 3, "short": 1}, "open"), ({"PCB+open": 2, "PCB+short": 2}, "short")],
)
def test_fewer_pairs_than_allocated_raises(workspace: Path, allocation: dict[str, int], named: str) -> None:
    (sdg_dir(workspace) / "allocation.json").write_text(json.dumps(allocation), encoding="utf-8")

    with pytest.raises(DatasetError, match=rf"{named}: .*allocated but only"):
        ingest(workspace)
    assert not images_dir(workspace).exists()


def test_missing_allocation_raises(workspace: Path) -> None:
    (sdg_dir(workspace) / "allocation.json").unlink()

    with pytest.raises(DatasetError, match=r"allocation\.json is missing"):
        ingest(workspace)


def test_labels_come_from_file_names_normalised(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    folder = root / "sdg"
    names = ("PCB+Excess_Solder_00000.png", "PCB+BRIDGE_00003.png", "odd.png")
    for side in ("reconstructed_image", "original_image"):
        (folder / side).mkdir(parents=True)
        for name in names:
            Image.fromarray(np.full((4, 4), 200, np.uint8)).save(folder / side / name)
    (folder / "SDG_result.csv").write_text(
        "image\n" + "".join(f"reconstructed_image/{name}\n" for name in names), encoding="utf-8"
    )
    (folder / "allocation.json").write_text(json.dumps({"PCB+excess_solder": 1, "bridge": 1}), encoding="utf-8")

    result = ingest_sdg(
        folder, workspace_root=root, dataset_images_dir=root / "ds", subdir="syn", light=LIGHT, image_ext=EXT
    )

    labels = {row["object_name"]: row["label"] for row in result.rows}
    assert labels == {"PCB+Excess_Solder_00000": "excess_solder", "PCB+BRIDGE_00003": "bridge", "odd": "ng"}


def test_a_rerun_rewrites_its_files_but_never_mixes_with_other_files(workspace: Path) -> None:
    first = ingest(workspace)
    assert ingest(workspace).rows == first.rows

    (images_dir(workspace) / "synthetic_iter1_ng" / "stale_SolderLight.png").write_bytes(b"old")
    with pytest.raises(DatasetError, match="already holds 1 file"):
        ingest(workspace)


def test_staging_outside_the_workspace_raises(workspace: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="outside the workspace root"):
        ingest(workspace, dataset_images_dir=tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
