"""SDG ingestion, combined training CSV assembly with provenance, and the merge validation hard stop."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aoi_pipeline.changenet.sdg import SdgSpec, generate
from aoi_pipeline.core.assembly import (
    PROVENANCE_COLUMNS,
    assemble,
    ingest_sdg,
    read_provenance,
    validate_merge,
    write_assembly,
)
from aoi_pipeline.core.dataset import DatasetCsv, image_files, read_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.errors import DatasetError, LeakageError
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"
LIGHT, EXT = "SolderLight", ".png"
RUN = "results/run_t"
ALLOCATION = {"open": 2, "short": 1}
SDG_NAMES = ("PCB+open_00000.png", "PCB+open_00001.png", "PCB+short_00000.png")
REPORT_KEYS = {
    "status",
    "rows_checked",
    "missing_file_count",
    "train_val_leakage_overlap_count",
    "train_kpi_leakage_overlap_count",
    "validation_csv",
    "kpi_csv",
    "combined_csv",
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic workspace with procedural SDG outputs for iterations 1 and 2 (built once, copied per test)."""
    root = tmp_path_factory.mktemp("template") / "ws"
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


@pytest.fixture
def workspace(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
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


def resolves(root: Path, row: dict[str, str]) -> bool:
    return all(path.is_file() for path in image_files(row, images_dir=root, lights=(LIGHT,), image_ext=EXT))


def sets(root: Path) -> tuple[CsvInRoot, CsvInRoot]:
    images = root / "images"
    validation = CsvInRoot(read_dataset_csv(root / "train" / "base" / "validation_set.csv"), images)
    kpi = CsvInRoot(read_dataset_csv(root / "kpi" / "testing_set.csv"), images)
    return validation, kpi


def merge(root: Path, combined: Path, report: Path) -> dict:
    validation, kpi = sets(root)
    return validate_merge(
        combined,
        workspace_root=root,
        validation=validation,
        kpi=kpi,
        lights=[LIGHT],
        image_ext=EXT,
        report_json=report,
    )


# ---------------------------------------------------------------------------------------------------------
# ingest_sdg


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


# ---------------------------------------------------------------------------------------------------------
# assemble


def test_iter1_prefixes_base_rows_once_and_appends_sdg_and_mined_rows(workspace: Path) -> None:
    base_csv = workspace / "train" / "base" / "training_set.csv"
    base_rows = read_rows(base_csv)
    base_rows[0]["label"], base_rows[1]["label"] = "pass", "Open "
    write_rows(base_csv, base_rows)
    sdg = ingest(workspace).rows
    mined = [as_mined(row, target_row=n, similarity=0.9 + n / 100) for n, row in enumerate(pool_rows(workspace)[:4])]

    result = assemble(
        iteration=1,
        previous=read_dataset_csv(base_csv),
        previous_in_workspace_coordinates=False,
        sdg_rows=sdg,
        mined_rows=mined,
    )

    assert result.columns == ("input_path", "golden_path", "label", "object_name", "boardname", "defect_count")
    assert len(result.rows) == len(base_rows) + 3 + 4
    for row, base in zip(result.rows, base_rows, strict=False):
        assert row["input_path"] == "images/" + base["input_path"]
        assert row["golden_path"] == "images/" + base["golden_path"]
        assert row["boardname"] == base["boardname"]
    assert (result.rows[0]["label"], result.rows[1]["label"]) == ("PASS", "open")
    assert all(row["label"] == "PASS" or row["label"] == row["label"].lower() for row in result.rows)
    assert [row["label"] for row in result.rows[-4:]] == [row["label"] for row in pool_rows(workspace)[:4]]
    assert all(resolves(workspace, row) for row in result.rows)

    sources = [entry["source"] for entry in result.provenance]
    assert sources == ["base_train"] * len(base_rows) + ["sdg"] * 3 + ["mined"] * 4
    for number, (row, entry) in enumerate(zip(result.rows, result.provenance, strict=True), start=1):
        assert entry["row"] == str(number) and entry["iteration"] == "1"
        assert all(entry[column] == row[column] for column in ("input_path", "golden_path", "label", "object_name"))
    assert [entry["sdg_file"].rsplit("/", 1)[-1] for entry in result.provenance if entry["source"] == "sdg"] == list(
        SDG_NAMES
    )
    mined_entries = [entry for entry in result.provenance if entry["source"] == "mined"]
    assert [(entry["target_row"], float(entry["similarity"])) for entry in mined_entries] == [
        (str(n), 0.9 + n / 100) for n in range(4)
    ]
    assert [entry["pool_row"] for entry in mined_entries] == [str(n + 100) for n in range(4)]
    assert [entry["pool_filepath"] for entry in mined_entries] == [m["pool_filepath"] for m in mined]
    assert result.source_counts() == {"base_train": len(base_rows), "sdg": 3, "mined": 4}


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


def test_iter2_keeps_previous_rows_unchanged_and_never_re_prefixes_or_re_adds_base(workspace: Path) -> None:
    combined, provenance = assemble_iter1(workspace)
    previous = read_dataset_csv(combined)
    base_rows = read_rows(workspace / "train" / "base" / "training_set.csv")
    new_mined = [as_mined(row, n, 0.93) for n, row in enumerate(pool_rows(workspace)[4:9])]

    result = assemble(
        iteration=2,
        previous=previous,
        previous_in_workspace_coordinates=True,
        sdg_rows=ingest(workspace, 2).rows,
        mined_rows=new_mined,
        previous_provenance=read_provenance(provenance),
    )

    assert len(result.rows) == len(previous.rows) + 3 + 5  # monotone growth by exactly the new rows
    previous_columns = previous.columns
    assert [tuple(row[c] for c in previous_columns) for row in result.rows[: len(previous.rows)]] == [
        tuple(row[c] for c in previous_columns) for row in previous.rows
    ]
    assert not any(row[c].startswith("images/images/") for row in result.rows for c in ("input_path", "golden_path"))
    base_samples = Counter((f"images/{r['input_path']}", r["object_name"]) for r in base_rows)
    combined_samples = Counter((r["input_path"], r["object_name"]) for r in result.rows)
    assert all(combined_samples[sample] == 1 for sample in base_samples)
    assert all(resolves(workspace, row) for row in result.rows)
    sources = [entry["source"] for entry in result.provenance]
    assert sources == ["previous_iter_train"] * len(previous.rows) + ["sdg"] * 3 + ["mined"] * 5
    origins = Counter((entry["origin"], entry["origin_iteration"]) for entry in result.provenance)
    expected_origins = {("base_train", "0"): len(base_rows), ("sdg", "1"): 3, ("mined", "1"): 4}
    expected_origins.update({("sdg", "2"): 3, ("mined", "2"): 5})
    assert origins == expected_origins
    assert {entry["sdg_file"].split("/")[2] for entry in result.provenance if entry["origin"] == "sdg"} == {
        "iter1",
        "iter2",
    }


@pytest.mark.parametrize(("iteration", "in_workspace"), [(1, True), (2, False)])
def test_iteration_and_coordinate_system_must_agree(workspace: Path, iteration: int, in_workspace: bool) -> None:
    with pytest.raises(DatasetError, match="coordinates"):
        assemble(
            iteration=iteration,
            previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
            previous_in_workspace_coordinates=in_workspace,
            sdg_rows=[],
            mined_rows=[],
        )


def test_malformed_new_rows_are_all_reported(workspace: Path) -> None:
    good = as_mined(pool_rows(workspace)[0], 0, 0.95)
    without_golden = {key: value for key, value in good.items() if key != "golden_path"}
    with pytest.raises(DatasetError) as raised:
        assemble(
            iteration=1,
            previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
            previous_in_workspace_coordinates=False,
            sdg_rows=[{**good, "label": None}],
            mined_rows=[good, without_golden],
        )
    wheres = [problem.where for problem in raised.value.problems]
    assert wheres == ["sdg row 1", "mined row 2"]


def test_a_new_row_repeating_a_training_sample_is_dropped_and_listed(workspace: Path) -> None:
    base_csv = workspace / "train" / "base" / "training_set.csv"
    base = read_rows(base_csv)
    repeat = as_mined(base[2], 7, 0.99)
    repeat["input_path"] += "/"  # the same directory, written differently
    fresh = as_mined(pool_rows(workspace)[0], 8, 0.95)

    result = assemble(
        iteration=1,
        previous=read_dataset_csv(base_csv),
        previous_in_workspace_coordinates=False,
        sdg_rows=[],
        mined_rows=[repeat, fresh],
    )

    assert len(result.rows) == len(base) + 1
    assert result.rows[-1]["object_name"] == fresh["object_name"]
    assert [(d["source"], d["index"], d["duplicate_of_row"]) for d in result.dropped_duplicates] == [
        ("mined", "1", "3")
    ]


def test_extra_columns_keep_previous_extras_first_then_new_ones(workspace: Path) -> None:
    mined = {**as_mined(pool_rows(workspace)[0], 0, 0.95), "line_id": "L7"}

    result = assemble(
        iteration=1,
        previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=ingest(workspace).rows,
        mined_rows=[mined],
    )

    assert result.columns[4:] == ("boardname", "defect_count", "line_id")
    assert result.rows[-1]["line_id"] == "L7"
    assert all(row["line_id"] == "" for row in result.rows[:-1])
    assert not {"sdg_file", "similarity", "target_row", "pool_row", "pool_filepath"} & set(result.columns)


def test_write_assembly_writes_aligned_csvs(workspace: Path) -> None:
    combined, provenance = assemble_iter1(workspace)

    combined_rows, provenance_rows = read_rows(combined), read_rows(provenance)
    assert len(combined_rows) == len(provenance_rows) > 0
    with provenance.open(encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(PROVENANCE_COLUMNS)
    for row, entry in zip(combined_rows, provenance_rows, strict=True):
        assert (row["input_path"], row["object_name"]) == (entry["input_path"], entry["object_name"])


_CELL = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=6)
_LABEL = st.sampled_from(["PASS", "pass", " Pass", "open", "Short ", "PIN_HOLE", "ng"])


@st.composite
def _rows(draw: st.DrawFn, tag: str, max_size: int) -> list[dict[str, str]]:
    count = draw(st.integers(0, max_size))
    return [
        {
            "input_path": f"{tag}/{draw(_CELL)}",
            "golden_path": f"{tag}/{draw(_CELL)}",
            "label": draw(_LABEL),
            "object_name": f"{tag}{index}",
        }
        for index in range(count)
    ]


@settings(max_examples=60, deadline=None)
@given(
    previous=_rows("p", 12), sdg=_rows("s", 6), mined=_rows("m", 6), prefix=st.sampled_from(["images", "kpi/images"])
)
def test_iter1_assembly_properties(
    previous: list[dict[str, str]], sdg: list[dict[str, str]], mined: list[dict[str, str]], prefix: str
) -> None:
    base = DatasetCsv(
        path=Path("base.csv"), columns=("input_path", "golden_path", "label", "object_name"), rows=tuple(previous)
    )

    result = assemble(
        iteration=1,
        previous=base,
        previous_in_workspace_coordinates=False,
        sdg_rows=sdg,
        mined_rows=mined,
        images_prefix=prefix + "/",
    )

    def label(raw: str) -> str:
        return "PASS" if raw.strip().lower() == "pass" else raw.strip().lower()

    expected = (
        [
            {**row, "input_path": f"{prefix}/{row['input_path']}", "golden_path": f"{prefix}/{row['golden_path']}"}
            for row in previous
        ]
        + sdg
        + mined
    )
    assert result.rows == tuple({**row, "label": label(row["label"])} for row in expected)
    assert [entry["source"] for entry in result.provenance] == (
        ["base_train"] * len(previous) + ["sdg"] * len(sdg) + ["mined"] * len(mined)
    )
    assert [entry["row"] for entry in result.provenance] == [str(n) for n in range(1, len(expected) + 1)]


# ---------------------------------------------------------------------------------------------------------
# validate_merge


def test_a_clean_merge_passes_and_writes_its_report(workspace: Path) -> None:
    combined, _ = assemble_iter1(workspace)
    report_path = workspace / RUN / "iter1" / "dataset" / "merge_validation.json"

    report = merge(workspace, combined, report_path)

    assert report == json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report) >= REPORT_KEYS
    assert report["status"] == "ok"
    assert report["rows_checked"] == len(read_rows(combined))
    assert (report["missing_file_count"], report["train_val_leakage_overlap_count"]) == (0, 0)
    assert report["train_kpi_leakage_overlap_count"] == 0
    assert report["combined_csv"] == str(combined)


def test_a_planted_leak_is_found_across_coordinate_systems(workspace: Path) -> None:
    validation_rows = read_rows(workspace / "train" / "base" / "validation_set.csv")
    kpi_rows = read_rows(workspace / "kpi" / "testing_set.csv")
    result = assemble(
        iteration=1,
        previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=[],
        mined_rows=[
            as_mined(kpi_rows[2], 0, 0.97),
            as_mined(kpi_rows[5], 1, 0.96),
            as_mined(validation_rows[0], 2, 0.95),
        ],
    )
    dataset = workspace / RUN / "iter1" / "dataset"
    combined = dataset / "train_combined_iter1.csv"
    write_assembly(result, combined_csv=combined, provenance_csv=dataset / "provenance.csv")
    # The raw strings never match: combined paths carry images/, the KPI and validation CSVs do not.
    assert not {row["input_path"] for row in result.rows} & {row["input_path"] for row in kpi_rows + validation_rows}
    report_path = dataset / "merge_validation.json"

    with pytest.raises(LeakageError):
        merge(workspace, combined, report_path)

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["status"] == "failed"
    assert report["train_kpi_leakage_overlap_count"] == 2
    assert report["train_val_leakage_overlap_count"] == 1
    assert report["missing_file_count"] == 0


def test_missing_images_fail_the_merge_with_a_count(workspace: Path) -> None:
    broken = as_mined(pool_rows(workspace)[0], 0, 0.95)
    broken["input_path"] = "images/nowhere/test"
    result = assemble(
        iteration=1,
        previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=[],
        mined_rows=[broken],
    )
    dataset = workspace / RUN / "iter1" / "dataset"
    write_assembly(result, combined_csv=dataset / "combined.csv", provenance_csv=dataset / "provenance.csv")
    report_path = dataset / "merge_validation.json"

    with pytest.raises(DatasetError, match="nowhere") as raised:
        merge(workspace, dataset / "combined.csv", report_path)

    assert not isinstance(raised.value, LeakageError)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert (report["status"], report["missing_file_count"]) == ("failed", 1)
    assert report["train_kpi_leakage_overlap_count"] == 0


def test_a_missing_combined_csv_still_writes_a_failed_report(workspace: Path) -> None:
    report_path = workspace / RUN / "iter1" / "dataset" / "merge_validation.json"

    with pytest.raises(DatasetError, match="does not exist"):
        merge(workspace, workspace / "absent.csv", report_path)

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["status"] == "failed" and report["problem_count"] == 1


def test_deeppcb_base_set_assembles_and_validates_clean(tmp_path: Path) -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-data check needs it beside the checkout")
    base = read_dataset_csv(DEEPPCB / "train" / "base" / "training_set.csv")
    result = assemble(iteration=1, previous=base, previous_in_workspace_coordinates=False, sdg_rows=[], mined_rows=[])
    combined = tmp_path / "combined.csv"
    write_assembly(result, combined_csv=combined, provenance_csv=tmp_path / "provenance.csv")
    images = DEEPPCB / "images"

    report = validate_merge(
        combined,
        workspace_root=DEEPPCB,
        validation=CsvInRoot(read_dataset_csv(DEEPPCB / "train" / "base" / "validation_set.csv"), images),
        kpi=CsvInRoot(read_dataset_csv(DEEPPCB / "kpi" / "testing_set.csv"), images),
        lights=LIGHT,
        image_ext=EXT,
        report_json=tmp_path / "merge_validation.json",
    )

    assert report["status"] == "ok"
    assert report["rows_checked"] == len(base.rows)
    assert (report["missing_file_count"], report["train_kpi_leakage_overlap_count"]) == (0, 0)
