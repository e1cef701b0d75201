"""Tests of FAR at a requested recall: brute-force agreement, invariances, the reference rule, CSV errors."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.far import (
    ScoredRows,
    far_at_recall,
    read_scored_csv,
    threshold_at_recall,
)
from aoi_pipeline.errors import MetricContractError

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"

# Recalls written as decimals, so the number of defects they require can be computed exactly with Fraction.
RECALLS = ["100", "99.5", "95", "90", "80", "75", "66.7", "50", "33.3", "10", "1", "0.1"]


def required_defects(recall: str, n_defect: int) -> int:
    """The smallest k with k / n_defect >= recall %, computed exactly."""
    return math.ceil(Fraction(recall) * n_defect / 100)


def brute_force_far(labels: list[str], scores: list[float], recall: str) -> float:
    """O(n^2): try every score as the cut, keep the highest that flags enough defects, count PASS flags."""
    is_pass = [label.strip().upper() == "PASS" for label in labels]
    n_defect = is_pass.count(False)
    k = required_defects(recall, n_defect)
    best_cut = None
    for cut in scores:
        flagged_defects = sum(1 for s, p in zip(scores, is_pass, strict=True) if not p and s >= cut)
        if flagged_defects >= k and (best_cut is None or cut > best_cut):
            best_cut = cut
    assert best_cut is not None
    flagged_pass = sum(1 for s, p in zip(scores, is_pass, strict=True) if p and s >= best_cut)
    return 100.0 * flagged_pass / is_pass.count(True)


# Scores from a small grid so ties between PASS and defect scores (the interesting case) are frequent.
score = st.integers(0, 12).map(lambda n: n / 4) | st.floats(-5, 5, allow_nan=False, width=32)
pass_label = st.sampled_from(["PASS", "pass", " Pass ", "PASS "])
defect_label = st.sampled_from(["open", "short", "NO_PASS", "pass_hole", "Missing"])


@st.composite
def scored_rows(draw: st.DrawFn) -> tuple[list[str], list[float]]:
    passes = draw(st.lists(st.tuples(pass_label, score), min_size=1, max_size=25))
    defects = draw(st.lists(st.tuples(defect_label, score), min_size=1, max_size=25))
    rows = draw(st.permutations(passes + defects))
    return [label for label, _ in rows], [float(s) for _, s in rows]


def rows_of(labels: list[str], scores: list[float]) -> ScoredRows:
    return ScoredRows(tuple(labels), np.asarray(scores, dtype=np.float64))


@settings(max_examples=150, deadline=None)
@given(data=scored_rows(), recall=st.sampled_from(RECALLS))
def test_far_equals_a_brute_force_computation(data: tuple[list[str], list[float]], recall: str) -> None:
    labels, scores = data
    result = far_at_recall(rows_of(labels, scores), float(recall))
    assert result.far_pct == pytest.approx(brute_force_far(labels, scores, recall), abs=1e-12)
    assert result.tp + result.fn == result.n_defect and result.fp + result.tn == result.n_pass
    assert result.n_pass + result.n_defect == len(labels)


@settings(max_examples=100, deadline=None)
@given(data=scored_rows(), recall=st.sampled_from(RECALLS), seed=st.integers(0, 2**32 - 1))
def test_far_is_invariant_to_row_order(data: tuple[list[str], list[float]], recall: str, seed: int) -> None:
    labels, scores = data
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = far_at_recall(rows_of([labels[i] for i in order], [scores[i] for i in order]), float(recall))
    assert shuffled == far_at_recall(rows_of(labels, scores), float(recall))


@settings(max_examples=100, deadline=None)
@given(data=scored_rows(), recalls=st.lists(st.sampled_from(RECALLS), min_size=2, max_size=5))
def test_far_does_not_decrease_when_more_recall_is_required(
    data: tuple[list[str], list[float]], recalls: list[str]
) -> None:
    rows = rows_of(*data)
    ordered = sorted(recalls, key=Fraction)
    fars = [far_at_recall(rows, float(recall)).far_pct for recall in ordered]
    thresholds = [far_at_recall(rows, float(recall)).threshold for recall in ordered]
    assert fars == sorted(fars)
    assert thresholds == sorted(thresholds, reverse=True)


@settings(max_examples=150, deadline=None)
@given(
    defect_scores=st.lists(score, min_size=1, max_size=40),
    recall=st.sampled_from(RECALLS),
)
def test_threshold_keeps_at_least_the_requested_share_of_defects(defect_scores: list[float], recall: str) -> None:
    scores = np.asarray(defect_scores, dtype=np.float64)
    threshold = threshold_at_recall(scores, float(recall))
    kept = int(np.count_nonzero(scores >= threshold))
    assert kept >= required_defects(recall, len(scores))
    assert Fraction(kept, len(scores)) * 100 >= Fraction(recall)
    assert threshold in scores  # a defect's own score, never an invented value
    # The highest such cut: any higher score would drop below the required count.
    higher = scores[scores > threshold]
    assert all(np.count_nonzero(scores >= h) < required_defects(recall, len(scores)) for h in higher)


def reference_recall_100_flags(labels: list[str], scores: list[float]) -> list[bool]:
    """The reference evaluator's rule written out: candidates, recall == 1, max (F1, precision, threshold)."""
    is_defect = [label.strip().upper() != "PASS" for label in labels]
    candidates = [float(np.nextafter(min(scores), -np.inf)), *sorted(set(scores))]
    best_key, best_t = None, None
    for t in candidates:
        tp = sum(1 for s, d in zip(scores, is_defect, strict=True) if d and s > t)
        fp = sum(1 for s, d in zip(scores, is_defect, strict=True) if not d and s > t)
        if tp != sum(is_defect):
            continue
        precision = tp / (tp + fp)
        f1 = 2 * precision / (precision + 1.0)
        key = (f1, precision, t)
        if best_key is None or key > best_key:
            best_key, best_t = key, t
    assert best_t is not None
    return [s > best_t for s in scores]


@settings(max_examples=150, deadline=None)
@given(data=scored_rows())
def test_our_rule_flags_the_same_rows_as_the_reference_at_full_recall(
    data: tuple[list[str], list[float]],
) -> None:
    labels, scores = data
    result = far_at_recall(rows_of(labels, scores), 100.0)
    ours = [s >= result.threshold for s in scores]
    assert ours == reference_recall_100_flags(labels, scores)
    assert [s > result.strict_threshold for s in scores] == ours


def test_hand_worked_example() -> None:
    # PASS scores 0.2, 0.6, 0.95; defects 0.5, 0.9.
    rows = rows_of(["PASS", "open", "pass", "short", "PASS"], [0.2, 0.5, 0.6, 0.9, 0.95])
    full = far_at_recall(rows, 100.0)
    assert (full.threshold, full.fp, full.tn, full.tp, full.fn) == (0.5, 2, 1, 2, 0)
    assert full.far_pct == pytest.approx(200 / 3)
    half = far_at_recall(rows, 50.0)
    assert (half.threshold, half.fp, half.tp, half.recall_pct) == (0.9, 1, 1, 50.0)
    assert half.far_pct == pytest.approx(100 / 3)
    assert threshold_at_recall(np.array([0.9, 0.5, 0.7, 0.1]), 75.0) == 0.5


def test_95_percent_of_20_defects_needs_19_of_them() -> None:
    scores = np.arange(20, dtype=np.float64)  # 0.95 * 20 is 19.000000000000004 in binary floating point
    assert threshold_at_recall(scores, 95.0) == 1.0


@pytest.mark.parametrize("recall", [0.0, -5.0, 100.5, float("nan")])
def test_a_recall_outside_0_to_100_is_refused(recall: float) -> None:
    with pytest.raises(MetricContractError, match="outside"):
        threshold_at_recall(np.array([1.0, 2.0]), recall)


# ------------------------------------------------------------------------------------------------ CSV


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_scored_csv_reads_labels_and_scores(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "inference.csv",
        "input_path,label,siamese_score\na,PASS,0.25\nb,pass ,1e-3\nc,open,0.75\n",
    )
    rows = read_scored_csv(path)
    assert rows.labels == ("PASS", "pass ", "open")
    assert rows.scores.tolist() == [0.25, 0.001, 0.75]
    assert rows.is_pass.tolist() == [True, True, False]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("label,score\nPASS,1\n", ["missing column(s) siamese_score", "the header has label, score"]),
        ("label;siamese_score\nPASS;1\n", ["missing column(s) label, siamese_score", "looks ';'-delimited"]),
        ("label,siamese_score\nPASS,0.1\nopen,\n", ["row 2, column siamese_score: the score is empty"]),
        (
            "label,siamese_score\nPASS,abc\nopen,1\n",
            ["row 1, column siamese_score: the score 'abc' is not a number"],
        ),
        (
            "label,siamese_score\nPASS,nan\nopen,1\n",
            ["row 1, column siamese_score: the score 'nan' is not finite"],
        ),
        (
            "label,siamese_score\nPASS,1\nopen,-inf\n",
            ["row 2, column siamese_score: the score '-inf' is not finite"],
        ),
        ("label,siamese_score\n,0.5\nopen,1\n", ["row 1, column label: the label is empty"]),
        ("label,siamese_score\n", ["the CSV has a header but no data rows"]),
        ("", ["the CSV is empty (no header row)"]),
        ("label,siamese_score\nPASS,0.1\nPass,0.2\n", ["no defect rows in column label (2 PASS rows)"]),
        ("label,siamese_score\nopen,0.1\nshort,0.2\n", ["no PASS rows in column label (2 defect rows)"]),
    ],
)
def test_bad_inference_csvs_are_refused_with_file_and_row(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write_csv(tmp_path / "inference.csv", text)
    with pytest.raises(MetricContractError) as excinfo:
        read_scored_csv(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "Fix: " in message
    for fragment in fragments:
        assert fragment in message


def test_every_bad_row_is_reported_and_the_list_is_capped(tmp_path: Path) -> None:
    lines = ["label,siamese_score", *[f"PASS,x{i}" for i in range(30)], "open,1"]
    path = write_csv(tmp_path / "inference.csv", "\n".join(lines) + "\n")
    with pytest.raises(MetricContractError) as excinfo:
        read_scored_csv(path)
    assert excinfo.value.summary == f"{path}: 30 bad row(s)"
    assert len(excinfo.value.problems) == 21
    assert "10 more bad row(s) not listed" in str(excinfo.value.problems[-1])


def test_a_missing_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(MetricContractError, match="does not exist"):
        read_scored_csv(tmp_path / "inference.csv")


def test_kpi_set_scored_by_defect_count_has_no_false_alarms() -> None:
    """DeepPCB KPI tiles: PASS tiles touch no defect box, NG tiles hold at least one, so 0 % FAR at 100 %."""
    kpi = DEEPPCB / "kpi" / "testing_set.csv"
    if not kpi.is_file():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-data check needs it")
    result = far_at_recall(read_scored_csv(kpi, score_column="defect_count"), 100.0)
    assert (result.n_pass, result.n_defect) == (2308, 3702 - 2308)  # the data set README's counts
    assert (result.far_pct, result.recall_pct, result.threshold) == (0.0, 100.0, 1.0)
