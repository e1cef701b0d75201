"""Tests of the root-cause analysis: hand-computed operating points, weaknesses, per-type misses and forced FAR,
target order, false alarms per board and component, the written artefacts and the report text."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aoi_pipeline.core.contact_sheet import PAD, PLACEHOLDER_FILL
from aoi_pipeline.core.rca import (
    analyse_gaps,
    analyse_inference_csv,
    read_inference_rows,
    write_rca,
)
from aoi_pipeline.errors import ConfigError, DatasetError, MetricContractError

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"

# Ten PASS rows, five `open` and five `short` defects. By hand:
#   recall 100 %: threshold = lowest defect score 0.35; PASS >= 0.35: 0.4 .. 0.95 -> 7 of 10 -> FAR 70 %.
#     open's weakest kept 0.35 forces 70 %; short's weakest kept 0.45 forces 60 % (0.5 .. 0.95).
#   recall 90 %: 9 of 10 defects -> 9th highest defect score 0.45; FAR 6 / 10 = 60 %; open misses 0.35;
#     open's weakest kept is then 0.55 -> PASS 0.6 .. 0.95 -> 50 %; short still forces 60 %.
PASS_ROWS = [  # (board, object_name, score)
    ("b1", "T00", 0.1),
    ("b1", "T01", 0.2),
    ("b2", "T00", 0.3),
    ("b2", "T01", 0.4),
    ("b1", "T02", 0.5),
    ("b1", "T03", 0.6),
    ("b1", "T10", 0.7),
    ("b2", "T02", 0.8),
    ("b2", "T03", 0.9),
    ("b3", "T03", 0.95),
]
OPEN_SCORES = [0.85, 0.75, 0.65, 0.55, 0.35]
SHORT_SCORES = [0.98, 0.97, 0.96, 0.92, 0.45]


def table(*, with_boardname: bool = False) -> list[dict[str, str]]:
    rows = []
    for board, tile, score in PASS_ROWS:
        rows.append(row(board, tile, "PASS", score))
    for number, score in enumerate(OPEN_SCORES):
        rows.append(row("b4", f"T2{number}", ["open", "Open", " open "][number % 3], score))
    for number, score in enumerate(SHORT_SCORES):
        rows.append(row("b5", f"T3{number}", "short", score))
    if with_boardname:
        for item in rows:
            item["boardname"] = "board-" + item["input_path"].split("/")[0]
    return rows


def row(board: str, tile: str, label: str, score: float) -> dict[str, str]:
    return {
        "input_path": f"{board}/test",
        "golden_path": f"{board}/golden",
        "label": label,
        "object_name": tile,
        "siamese_score": repr(score),
    }


def gap(result, label: str) -> object:
    return next(item for item in result.per_label if item.label == label)


def test_operating_point_at_recall_100() -> None:
    result = analyse_gaps(table(), recall_pct=100.0)
    assert result.threshold == 0.35
    assert result.far_pct == pytest.approx(70.0)
    assert result.recall_pct == pytest.approx(100.0)
    assert result.confusion == {"tp": 10, "fp": 7, "tn": 3, "fn": 0}
    assert gap(result, "open").missed == 0 and gap(result, "short").missed == 0
    assert gap(result, "open").forced_far_pct == pytest.approx(70.0)
    assert gap(result, "short").forced_far_pct == pytest.approx(60.0)
    assert result.target_defects == ("open", "short")


def test_operating_point_at_recall_90() -> None:
    result = analyse_gaps(table(), recall_pct=90.0)
    assert result.threshold == 0.45
    assert result.far_pct == pytest.approx(60.0)
    assert result.recall_pct == pytest.approx(90.0)
    assert result.confusion == {"tp": 9, "fp": 6, "tn": 4, "fn": 1}
    open_gap, short_gap = gap(result, "open"), gap(result, "short")
    assert (open_gap.total, open_gap.missed) == (5, 1)
    assert (short_gap.total, short_gap.missed) == (5, 0)
    assert open_gap.forced_far_pct == pytest.approx(50.0)
    assert short_gap.forced_far_pct == pytest.approx(60.0)
    # open misses a row, so it comes first although short forces the higher FAR.
    assert result.target_defects == ("open", "short")
    assert open_gap.lowest_scores == (0.35, 0.55, 0.65, 0.75, 0.85)


def test_label_variants_are_one_type_and_lowest_scores_are_capped() -> None:
    rows = table() + [row("b6", f"T4{n}", "OPEN", 0.99) for n in range(3)]
    result = analyse_gaps(rows, recall_pct=100.0)
    assert [item.label for item in result.per_label] == ["open", "short"]
    assert gap(result, "open").total == 8
    assert gap(result, "open").lowest_scores == (0.35, 0.55, 0.65, 0.75, 0.85)


def test_weakness_and_outcome_of_each_kind_of_row() -> None:
    result = analyse_gaps(table(), recall_pct=90.0, top_k_per_label=50)
    by_key = {(item["object_name"], item["input_path"]): item for item in result.gaps}
    missed = by_key[("T24", "b4/test")]  # open 0.35 below 0.45
    assert float(missed["weakness"]) == pytest.approx(0.10) and missed["outcome"] == "missed"
    on_threshold = by_key[("T34", "b5/test")]  # short 0.45 == threshold: caught
    assert float(on_threshold["weakness"]) == 0.0 and on_threshold["outcome"] == "weak_defect"
    false_alarm = by_key[("T03", "b3/test")]  # PASS 0.95
    assert float(false_alarm["weakness"]) == pytest.approx(0.50) and false_alarm["outcome"] == "false_alarm"
    near = by_key[("T01", "b2/test")]  # PASS 0.4
    assert float(near["weakness"]) == pytest.approx(-0.05) and near["outcome"] == "near_pass"
    assert len(result.gaps) == 20  # every row, all labels under the cap


def test_gaps_keep_the_weakest_rows_per_label_worst_first() -> None:
    result = analyse_gaps(table(), recall_pct=90.0, top_k_per_label=2)
    kept = [(item["label"].strip().lower(), float(item["siamese_score"])) for item in result.gaps]
    # Per label the two highest weaknesses: PASS 0.95 and 0.9; open 0.35 and 0.55; short 0.45 and 0.92.
    assert sorted(kept) == sorted(
        [("pass", 0.95), ("pass", 0.9), ("open", 0.35), ("open", 0.55), ("short", 0.45), ("short", 0.92)]
    )
    weaknesses = [float(item["weakness"]) for item in result.gaps]
    assert weaknesses == sorted(weaknesses, reverse=True)


def test_gap_rows_carry_every_input_column_plus_weakness_and_outcome() -> None:
    rows = table(with_boardname=True)
    rows[0]["extra"] = "kept"
    result = analyse_gaps(rows, recall_pct=100.0)
    assert result.columns == (
        "input_path",
        "golden_path",
        "label",
        "object_name",
        "siamese_score",
        "boardname",
        "extra",
        "weakness",
        "outcome",
    )
    original = {(item["input_path"], item["object_name"]): item for item in rows}
    for item in result.gaps:
        source = original[(item["input_path"], item["object_name"])]
        assert item["label"] == source["label"]  # original spelling, not the normalised one
        assert item["siamese_score"] == source["siamese_score"]


def test_false_alarms_counted_by_board_from_input_path_and_by_component() -> None:
    result = analyse_gaps(table(), recall_pct=90.0)
    # Flagged PASS rows (>= 0.45): b1 0.5 0.6 0.7, b2 0.8 0.9, b3 0.95.
    assert result.false_alarms_by_board == {"b1": 3, "b2": 2, "b3": 1}
    assert list(result.false_alarms_by_board) == ["b1", "b2", "b3"]
    # Components: T02 (b1, b2), T03 (b1, b2, b3), T10 (b1).
    assert result.false_alarms_by_component == {"T03": 3, "T02": 2, "T10": 1}


def test_boardname_column_wins_over_the_path() -> None:
    result = analyse_gaps(table(with_boardname=True), recall_pct=90.0)
    assert result.false_alarms_by_board == {"board-b1": 3, "board-b2": 2, "board-b3": 1}


def test_board_from_a_workspace_relative_path_skips_the_image_root() -> None:
    rows = table()
    for item in rows:
        item["input_path"] = "images/" + item["input_path"]
    assert analyse_gaps(rows, recall_pct=90.0).false_alarms_by_board == {"b1": 3, "b2": 2, "b3": 1}


def test_targets_tie_on_misses_and_forced_far_break_by_label() -> None:
    rows = [row("b1", "T00", "PASS", 0.9), row("b1", "T01", "PASS", 0.1)]
    rows += [row("b2", "T00", "zeta", 0.5), row("b2", "T01", "alpha", 0.5), row("b2", "T02", "mid", 0.95)]
    result = analyse_gaps(rows, recall_pct=100.0)
    # zeta and alpha both force 50 % (one of two PASS >= 0.5); mid forces 0 % and is no target.
    assert result.target_defects == ("alpha", "zeta")
    assert [item.label for item in result.per_label] == ["alpha", "zeta", "mid"]


def test_a_type_with_every_row_missed_forces_no_far() -> None:
    rows = [row("b1", "T00", "PASS", 0.2), row("b1", "T01", "PASS", 0.6)]
    rows += [row("b2", f"T0{n}", "open", 0.9) for n in range(9)] + [row("b3", "T00", "spur", 0.1)]
    result = analyse_gaps(rows, recall_pct=90.0)
    assert result.threshold == 0.9
    assert (gap(result, "spur").missed, gap(result, "spur").forced_far_pct) == (1, 0.0)
    assert result.target_defects == ("spur",)  # open forces 0 % (no PASS >= 0.9) and misses nothing


scores = st.integers(0, 20).map(lambda n: n / 20)
labels = st.sampled_from(["PASS", "open", "short", "spur"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(labels, scores), min_size=2, max_size=40).filter(
        lambda rows: {label == "PASS" for label, _ in rows} == {True, False}
    ),
    st.sampled_from([100.0, 99.0, 90.0, 75.0, 50.0]),
)
def test_forced_far_and_misses_agree_with_the_run(rows: list[tuple[str, float]], recall: float) -> None:
    table_rows = [row("b", f"T{n}", label, score) for n, (label, score) in enumerate(rows)]
    result = analyse_gaps(table_rows, recall_pct=recall)
    # The run's FAR is forced by the type whose weakest caught defect sits lowest.
    assert max(item.forced_far_pct for item in result.per_label) == pytest.approx(result.far_pct)
    for item in result.per_label:
        below = sum(1 for label, score in rows if label == item.label and score < result.threshold)
        assert item.missed == below
    assert sum(item.missed for item in result.per_label) == result.confusion["fn"]
    if recall == 100.0:
        assert result.confusion["fn"] == 0


@pytest.mark.parametrize("kept_label", ["PASS", "open"])
def test_unreachable_kpi_names_the_file(tmp_path: Path, kept_label: str) -> None:
    path = tmp_path / "inference.csv"
    write_csv(path, [item for item in table() if item["label"].strip().lower() == kept_label.lower()])
    with pytest.raises(MetricContractError) as error:
        analyse_inference_csv(path, recall_pct=100.0)
    assert str(path) in str(error.value) and "unreachable KPI" in str(error.value)


def test_bad_scores_and_labels_are_listed_with_their_rows(tmp_path: Path) -> None:
    rows = table()
    rows[2]["siamese_score"] = "high"
    rows[5]["siamese_score"] = "nan"
    rows[7]["label"] = " "
    path = tmp_path / "inference.csv"
    write_csv(path, rows)
    with pytest.raises(MetricContractError) as error:
        analyse_inference_csv(path, recall_pct=100.0)
    message = str(error.value)
    assert f"{path}: row 3, column siamese_score" in message and "'high'" in message
    assert f"{path}: row 6, column siamese_score" in message
    assert f"{path}: row 8, column label" in message


def test_missing_score_column_and_missing_file_are_refused(tmp_path: Path) -> None:
    rows = [{key: value for key, value in item.items() if key != "siamese_score"} for item in table()]
    with pytest.raises(MetricContractError, match="siamese_score"):
        analyse_gaps(rows, recall_pct=100.0, source="x.csv")
    with pytest.raises(MetricContractError, match="does not exist"):
        read_inference_rows(tmp_path / "absent.csv")


@pytest.mark.parametrize("top_k", [0, -1, 2.5, True])
def test_top_k_must_be_a_positive_int(top_k: object) -> None:
    with pytest.raises(ConfigError, match="top_k_per_label"):
        analyse_gaps(table(), recall_pct=100.0, top_k_per_label=top_k)  # type: ignore[arg-type]


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    columns = list(dict.fromkeys(key for item in rows for key in item))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_images(images: Path, rows: list[dict[str, str]]) -> None:
    for item in rows:
        for column, colour in (("input_path", (255, 0, 0)), ("golden_path", (0, 0, 255))):
            path = images / item[column] / f"{item['object_name']}_SolderLight.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), colour).save(path)


def test_write_rca_records_every_artefact(tmp_path: Path) -> None:
    rows = table()
    write_images(tmp_path / "images", rows)
    result = analyse_gaps(rows, recall_pct=90.0)
    out = tmp_path / "rca"
    artifacts = write_rca(result, out, images_dir=tmp_path / "images", lights=["SolderLight"], image_ext="png")
    assert artifacts.gaps_csv == out / "kpi_gaps.csv" and artifacts.report_md == out / "RCA_Report.md"
    with artifacts.gaps_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == result.columns
        written = list(reader)
    assert written == list(result.gaps)
    assert float(artifacts.threshold_txt.read_text()) == 0.45
    metrics = json.loads(artifacts.metrics_json.read_text())
    assert metrics["far_pct"] == pytest.approx(60.0)
    assert metrics["confusion_matrix"] == {"tp": 9, "fp": 6, "tn": 4, "fn": 1}
    assert metrics["per_label"]["open"]["missed"] == 1
    assert metrics["target_defects"] == ["open", "short"]
    assert metrics["gap_outcomes"] == {"missed": 1, "false_alarm": 6, "weak_defect": 9, "near_pass": 4}
    assert artifacts.contact_sheet_png is not None
    with Image.open(artifacts.contact_sheet_png) as sheet:
        assert sheet.format == "PNG"
        # Ten pairs, two per row, 96 px thumbnails: every test side red, every golden side blue.
        assert sheet.size[0] == 2 * (2 * 96 + 3 * PAD)
        assert sheet.convert("RGB").getpixel((PAD + 48, PAD + 48)) == (255, 0, 0)
        assert sheet.convert("RGB").getpixel((2 * PAD + 96 + 48, PAD + 48)) == (0, 0, 255)


def test_report_names_verdict_targets_false_alarm_boards_and_actions(tmp_path: Path) -> None:
    result = analyse_gaps(table(), recall_pct=90.0)
    artifacts = write_rca(result, tmp_path, images_dir=tmp_path, lights=["SolderLight"], image_ext=".png")
    report = artifacts.report_md.read_text()
    for heading in ("## Verdict", "## Threshold and confusion", "## Defect types", "## False alarms"):
        assert heading in report
    assert "Target defect types, most urgent first: open, short." in report
    assert "1. open: 1 of 5 missed, forces FAR 50.00 %" in report
    assert "2. short: 0 of 5 missed, forces FAR 60.00 %" in report
    assert "| open | 5 | 1 | 0.3500, 0.5500, 0.6500, 0.7500, 0.8500 | 50.00 % |" in report
    assert "| b1 | 3 |" in report
    assert "SDG" in report and "Mine real pool images" in report
    assert "FAR 60.00 %" in report


def test_written_files_are_deterministic(tmp_path: Path) -> None:
    result = analyse_gaps(table(), recall_pct=90.0)

    def digest(out: Path) -> dict[str, str]:
        write_rca(result, out, images_dir=tmp_path / "none", lights=["SolderLight"], image_ext=".png")
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(out.iterdir())}

    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert first == second and len(first) == 5


def test_missing_images_become_placeholders_and_zero_pairs_skip_the_sheet(tmp_path: Path) -> None:
    result = analyse_gaps(table(), recall_pct=90.0)
    artifacts = write_rca(result, tmp_path / "a", images_dir=tmp_path, lights=["SolderLight"], image_ext=".png")
    assert artifacts.contact_sheet_png is not None
    with Image.open(artifacts.contact_sheet_png) as sheet:
        assert sheet.convert("RGB").getpixel((PAD + 1, PAD + 1)) == PLACEHOLDER_FILL
    none = write_rca(
        result, tmp_path / "b", images_dir=tmp_path, lights=["SolderLight"], image_ext=".png", contact_sheet_pairs=0
    )
    assert none.contact_sheet_png is None
    assert "rca_contact_sheet.png" not in none.report_md.read_text()


def test_bad_lights_write_nothing(tmp_path: Path) -> None:
    result = analyse_gaps(table(), recall_pct=90.0)
    with pytest.raises(DatasetError):
        write_rca(result, tmp_path / "out", images_dir=tmp_path, lights=[], image_ext=".png")
    assert not (tmp_path / "out").exists()


def test_deeppcb_kpi_set_with_real_images(tmp_path: Path) -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-data check needs it")
    rows = read_inference_rows(DEEPPCB / "kpi" / "testing_set.csv")
    # A stand-in score from the pair's defect count plus a hashed jitter, so classes overlap a little.
    for item in rows:
        jitter = int(hashlib.sha256(f"{item['input_path']}{item['object_name']}".encode()).hexdigest(), 16) % 1000
        item["siamese_score"] = repr(min(1.0, 0.3 * int(item["defect_count"])) * 0.5 + jitter / 2000)
    result = analyse_gaps(rows, recall_pct=99.0)
    n_defect = sum(1 for item in rows if item["label"] != "PASS")
    assert result.confusion["tp"] + result.confusion["fn"] == n_defect
    assert set(result.false_alarms_by_board) <= {item["boardname"] for item in rows}
    assert {item.label for item in result.per_label} == {"open", "short", "mousebite", "spur", "copper", "pin_hole"}
    artifacts = write_rca(
        result, tmp_path, images_dir=DEEPPCB / "images", lights=["SolderLight"], image_ext=".png", contact_sheet_pairs=4
    )
    assert artifacts.contact_sheet_png is not None
    with Image.open(artifacts.contact_sheet_png) as sheet:
        # Real binarised tiles, no placeholder: the thumbnail corner is black or white, never the grey fill.
        assert sheet.convert("RGB").getpixel((PAD + 1, PAD + 1)) != PLACEHOLDER_FILL
