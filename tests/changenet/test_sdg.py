"""The `sdg` action: AnomalyGen layout, counts equal to the allocation, 1:1 pairing, determinism, errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from aoi_pipeline.changenet.sdg import generate, load_sdg_spec, parse_sdg_spec, run_sdg
from aoi_pipeline.errors import DatasetError, SpecError
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"
RESULT_COLUMNS = [
    "image",
    "original_image",
    "mask",
    "defect_type",
    "source_input_path",
    "source_golden_path",
    "source_object_name",
    "changed_pixels",
    "seed",
    "guardrail_pass",
]
ALLOCATION = {"open": 2, "spur": 3, "copper": 1}


@pytest.fixture(scope="module")
def source_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_workspace(
        tmp_path_factory.mktemp("sources") / "ws", SynthSpec(boards=4, size=48, seed=1, tiles_per_board=6)
    ).root


def sdg_spec(workspace: Path, results_dir: Path, **overrides: Any) -> dict[str, Any]:
    block = {
        "pairs_csv": str(workspace / "augmentation" / "mining_pool" / "mining_pool.csv"),
        "images_dir": str(workspace / "images"),
        "allocation": dict(ALLOCATION),
        "seed": 42,
        "results_dir": str(results_dir),
        **overrides,
    }
    return {"sdg": block}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def grey(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("L"))


def digests(root: Path, names: list[str]) -> dict[str, str]:
    files = [path for name in names for path in sorted((root / name).rglob("*")) if path.is_file()]
    files += [root / name for name in names if (root / name).is_file()]
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def test_outputs_follow_the_anomalygen_layout(source_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdg"
    run_sdg(sdg_spec(source_workspace, out), spec_path=tmp_path / "spec.yaml")
    expected = {f"PCB+{kind}_{index:05d}.png" for kind, count in ALLOCATION.items() for index in range(count)}
    for folder in ("reconstructed_image", "original_image", "original_mask"):
        assert {path.name for path in (out / folder).iterdir()} == expected
    columns, rows = read_csv(out / "SDG_result.csv")
    assert columns == RESULT_COLUMNS
    assert len(rows) == sum(ALLOCATION.values())
    assert {row["image"] for row in rows} == {f"reconstructed_image/{name}" for name in expected}
    assert json.loads((out / "allocation.json").read_text(encoding="utf-8")) == ALLOCATION
    assert json.loads((out / "timing_summary.json").read_text(encoding="utf-8"))["samples"] == len(rows)


def test_label_in_the_file_name_matches_the_painted_type(source_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdg"
    run_sdg(sdg_spec(source_workspace, out), spec_path=tmp_path / "spec.yaml")
    _, rows = read_csv(out / "SDG_result.csv")
    counts: dict[str, int] = {}
    for row in rows:
        texture, rest = Path(row["image"]).stem.split("+", 1)
        anomaly, index = rest.rsplit("_", 1)
        assert texture == "PCB" and anomaly == row["defect_type"] and index.isdigit()
        counts[anomaly] = counts.get(anomaly, 0) + 1
    assert counts == ALLOCATION


def test_each_sample_is_a_pass_test_image_with_its_mask_painted(source_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdg"
    run_sdg(sdg_spec(source_workspace, out), spec_path=tmp_path / "spec.yaml")
    _, sources = read_csv(source_workspace / "augmentation" / "mining_pool" / "mining_pool.csv")
    labels = {(row["input_path"], row["object_name"]): row["label"] for row in sources}
    _, rows = read_csv(out / "SDG_result.csv")
    used = set()
    for row in rows:
        key = (row["source_input_path"], row["source_object_name"])
        assert labels[key] == "PASS"
        used.add(key)
        name = f"{row['source_object_name']}_SolderLight.png"
        source_test = grey(source_workspace / "images" / row["source_input_path"] / name)
        source_golden = grey(source_workspace / "images" / row["source_golden_path"] / name)
        painted = grey(out / row["image"])
        mask = grey(out / row["mask"]) > 0
        assert np.array_equal(painted != source_test, mask)
        assert mask.sum() >= 12 and int(row["changed_pixels"]) == int(mask.sum())
        assert np.array_equal(grey(out / row["original_image"]), source_golden)
    assert len(used) > 1, "every sample was painted on the same source pair"


def test_same_seed_same_bytes_other_seed_differs(source_workspace: Path, tmp_path: Path) -> None:
    names = ["reconstructed_image", "original_image", "original_mask", "SDG_result.csv", "allocation.json"]
    for run in ("a", "b"):
        run_sdg(sdg_spec(source_workspace, tmp_path / run), spec_path=tmp_path / "spec.yaml")
    run_sdg(sdg_spec(source_workspace, tmp_path / "c", seed=7), spec_path=tmp_path / "spec.yaml")
    first = digests(tmp_path / "a", names)
    assert len(first) == 3 * sum(ALLOCATION.values()) + 2
    assert first == digests(tmp_path / "b", names)
    assert first != digests(tmp_path / "c", names)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"allocation": {"bridge": 2}}, "sdg.allocation.bridge"),
        ({"allocation": {"open": 0}}, "sdg.allocation.open"),
        ({"allocation": {"spur": -3}}, "sdg.allocation.spur"),
        ({"allocation": {"spur": True}}, "sdg.allocation.spur"),
        ({"allocation": {}}, "sdg.allocation"),
        ({"seed": -1}, "sdg.seed"),
        ({"texture": "PCB+x"}, "sdg.texture"),
        ({"image_ext": ".gif"}, "sdg.image_ext"),
        ({"colour": "red"}, "sdg.colour"),
    ],
)
def test_bad_spec_is_a_spec_error_naming_the_key(
    source_workspace: Path, tmp_path: Path, change: dict[str, Any], where: str
) -> None:
    out = tmp_path / "sdg"
    with pytest.raises(SpecError) as caught:
        run_sdg(sdg_spec(source_workspace, out, **change), spec_path=tmp_path / "spec.yaml")
    assert any(problem.where.endswith(where) for problem in caught.value.problems)
    assert all(problem.fix for problem in caught.value.problems)
    assert not out.exists()


def test_missing_keys_are_all_listed_at_once(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        parse_sdg_spec({"sdg": {}, "extra": 1}, spec_path=tmp_path / "spec.yaml")
    wheres = {problem.where.split(": ", 1)[1] for problem in caught.value.problems}
    assert wheres == {"sdg.pairs_csv", "sdg.images_dir", "sdg.allocation", "sdg.results_dir", "extra"}
    with pytest.raises(SpecError, match="sdg"):
        parse_sdg_spec({"train": {}}, spec_path=tmp_path / "spec.yaml")


def test_missing_pairs_csv_and_csv_without_pass_rows_are_dataset_errors(source_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdg"
    with pytest.raises(DatasetError, match=r"sdg\.pairs_csv"):
        run_sdg(
            sdg_spec(source_workspace, out, pairs_csv=str(tmp_path / "nope.csv")),
            spec_path=tmp_path / "s.yaml",
        )
    _, rows = read_csv(source_workspace / "kpi" / "testing_set.csv")
    defects_only = tmp_path / "defects.csv"
    with defects_only.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(row for row in rows if row["label"] != "PASS")
    with pytest.raises(DatasetError, match="PASS") as caught:
        run_sdg(sdg_spec(source_workspace, out, pairs_csv=str(defects_only)), spec_path=tmp_path / "s.yaml")
    assert "sdg.pairs_csv" in str(caught.value)
    assert not out.exists()


def test_missing_source_image_names_the_row(source_workspace: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("input_path,golden_path,label,object_name\nb0000/test,b0000/golden,PASS,T99\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="row 1") as caught:
        run_sdg(sdg_spec(source_workspace, tmp_path / "sdg", pairs_csv=str(pairs)), spec_path=tmp_path / "s.yaml")
    assert "T99_SolderLight.png" in str(caught.value)


def test_existing_outputs_are_never_overwritten(source_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdg"
    out.mkdir()
    (out / "SDG_result.csv").write_text("old", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"sdg\.results_dir"):
        run_sdg(sdg_spec(source_workspace, out), spec_path=tmp_path / "s.yaml")
    assert sorted(path.name for path in out.iterdir()) == ["SDG_result.csv"]
    assert (out / "SDG_result.csv").read_text(encoding="utf-8") == "old"


def test_a_defect_no_source_can_take_fails_instead_of_dropping_samples(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for side in ("test", "golden"):
        (images / "b1" / side).mkdir(parents=True)
        Image.fromarray(np.full((48, 48), 255, dtype=np.uint8)).save(images / "b1" / side / "T00_SolderLight.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("input_path,golden_path,label,object_name\nb1/test,b1/golden,PASS,T00\n", encoding="utf-8")
    spec = {
        "sdg": {
            "pairs_csv": str(pairs),
            "images_dir": str(images),
            "allocation": {"copper": 1, "pin_hole": 2},
            "results_dir": str(tmp_path / "sdg"),
        }
    }
    with pytest.raises(DatasetError, match="pin_hole"):
        run_sdg(spec, spec_path=tmp_path / "s.yaml")
    assert not (tmp_path / "sdg").exists()


def test_spec_file_paths_resolve_against_its_folder_with_defaults(tmp_path: Path) -> None:
    spec_path = tmp_path / "specs" / "sdg.yaml"
    spec_path.parent.mkdir()
    spec_path.write_text(
        yaml.safe_dump(
            {
                "results_dir": "../results",
                "sdg": {
                    "pairs_csv": "../ws/pairs.csv",
                    "images_dir": "../ws/images",
                    "allocation": {"open": 1},
                },
            }
        ),
        encoding="utf-8",
    )
    sdg = load_sdg_spec(spec_path)
    assert sdg.pairs_csv == (tmp_path / "ws" / "pairs.csv").resolve()
    assert sdg.images_dir == (tmp_path / "ws" / "images").resolve()
    assert sdg.results_dir == (tmp_path / "results" / "sdg").resolve()
    assert (sdg.light, sdg.image_ext, sdg.seed, sdg.texture) == ("SolderLight", ".png", 0, "PCB")
    assert sdg.allocation == {"open": 1}


def test_summary_reports_requested_and_generated_counts(
    source_workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_sdg(sdg_spec(source_workspace, tmp_path / "sdg"), spec_path=tmp_path / "s.yaml")
    printed = capsys.readouterr().out
    assert "requested=6" in printed and "generated=6" in printed and "spur 3" in printed


def test_real_deeppcb_pass_pairs_take_all_six_types(tmp_path: Path) -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-data SDG check needs it")
    allocation = {kind: 1 for kind in ("open", "short", "mousebite", "spur", "copper", "pin_hole")}
    spec = {
        "sdg": {
            "pairs_csv": str(DEEPPCB / "train" / "base" / "training_set.csv"),
            "images_dir": str(DEEPPCB / "images"),
            "allocation": allocation,
            "results_dir": str(tmp_path / "sdg"),
        }
    }
    summary = generate(parse_sdg_spec(spec, spec_path=tmp_path / "s.yaml"))
    assert summary.generated == allocation
    for path in (tmp_path / "sdg" / "reconstructed_image").iterdir():
        assert Image.open(path).size == (160, 160)
