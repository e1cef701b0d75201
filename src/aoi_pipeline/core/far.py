"""False-alarm rate at a defect recall: the builtin KPI evaluator `far_at_recall`.

The unit is one inference-CSV row (one component image pair, all lightings stacked). A row is PASS when its
label, stripped and upper-cased, is `PASS` (the KPI set is scored case-insensitively); every other row is a
defect. For a requested recall r, k = ceil(r * n_defect) defect rows must be flagged; the threshold is the
k-th highest defect score, the highest cut that still flags k defects, so it gives the lowest FAR that meets
the recall. A row is flagged iff `score >= threshold`, and FAR is the share of PASS rows flagged. Unlike the
reference evaluator, the requested recall is honoured instead of always using 100 %.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aoi_pipeline.errors import MetricContractError, Problem

PASS_LABEL = "PASS"
MAX_LISTED_ROW_PROBLEMS = 20
# Guards ceil() against binary noise: 0.95 * 20 is 19.000000000000004, which must count as 19 rows.
_RECALL_EPSILON = 1e-9


@dataclass(frozen=True, eq=False)
class ScoredRows:
    """Labels and scores of an inference CSV, in file order."""

    labels: tuple[str, ...]
    scores: np.ndarray

    @property
    def is_pass(self) -> np.ndarray:
        return np.array([label.strip().upper() == PASS_LABEL for label in self.labels], dtype=bool)


@dataclass(frozen=True)
class FarResult:
    """The operating point at the requested recall and its confusion counts (positive = defect)."""

    far_pct: float
    recall_pct: float
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    n_pass: int
    n_defect: int
    requested_recall_pct: float

    @property
    def strict_threshold(self) -> float:
        """The same flags under the rule `score > strict_threshold`."""
        return float(np.nextafter(self.threshold, -np.inf))

    @property
    def precision_pct(self) -> float:
        return 100.0 * self.tp / (self.tp + self.fp)

    @property
    def f1(self) -> float:
        precision, recall = self.tp / (self.tp + self.fp), self.tp / self.n_defect
        return 2 * precision * recall / (precision + recall)


def read_scored_csv(path: Path, *, label_column: str = "label", score_column: str = "siamese_score") -> ScoredRows:
    """Read labels and scores; MetricContractError naming the file and row of every bad value.

    Rejected: a missing file or column, an empty, non-numeric, NaN or infinite score, an empty label, zero
    data rows, and a file without PASS rows or without defect rows (FAR or the threshold would be undefined).
    """
    path = Path(path)
    where = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            _require_columns(where, header, (label_column, score_column))
            labels: list[str] = []
            scores: list[float] = []
            problems: list[Problem] = []
            for row_number, row in enumerate(reader, start=1):
                label, score, row_problems = _read_row(where, row_number, row, label_column, score_column)
                labels.append(label)
                scores.append(score)
                problems += row_problems
    except FileNotFoundError:
        raise MetricContractError.at(where, "the inference CSV does not exist", _INFERENCE_FIX) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MetricContractError.at(where, f"cannot read the CSV ({exc})", "save it as UTF-8 CSV") from None
    if problems:
        raise MetricContractError(_capped(problems), summary=f"{where}: {len(problems)} bad row(s)")
    rows = ScoredRows(tuple(labels), np.asarray(scores, dtype=np.float64))
    _require_both_classes(where, rows, label_column)
    return rows


_INFERENCE_FIX = "run inference first; it writes inference.csv into inference.results_dir"


def _require_columns(where: str, header: Sequence[str], needed: tuple[str, ...]) -> None:
    missing = [column for column in needed if column not in header]
    if not header:
        raise MetricContractError.at(where, "the CSV is empty (no header row)", _INFERENCE_FIX)
    if missing:
        delimiter = next((d for d in (";", "\t", "|") if len(header) == 1 and d in header[0]), None)
        hint = f"; the header looks {delimiter!r}-delimited" if delimiter else ""
        raise MetricContractError.at(
            where,
            f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}{hint}",
            "score a comma-separated inference CSV that has the label and score columns "
            "(or name the right ones with label_column/score_column)",
        )


def _read_row(
    where: str, row_number: int, row: dict[str, Any], label_column: str, score_column: str
) -> tuple[str, float, list[Problem]]:
    problems = []
    label = row.get(label_column)
    if label is None or not label.strip():
        problems.append(Problem(f"{where}: row {row_number}, column {label_column}", "the label is empty", _LABEL_FIX))
    raw = row.get(score_column)
    score = math.nan
    location = f"{where}: row {row_number}, column {score_column}"
    if raw is None or not raw.strip():
        problems.append(Problem(location, "the score is empty", _SCORE_FIX))
    else:
        try:
            score = float(raw)
        except ValueError:
            problems.append(Problem(location, f"the score {raw!r} is not a number", _SCORE_FIX))
        else:
            if not math.isfinite(score):
                problems.append(Problem(location, f"the score {raw!r} is not finite", _SCORE_FIX))
    return label or "", score, problems


_LABEL_FIX = "every row needs its ground-truth label (PASS or a defect name)"
_SCORE_FIX = "re-run inference for this CSV; every row needs a finite siamese_score"


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_LISTED_ROW_PROBLEMS:
        return problems
    hidden = len(problems) - MAX_LISTED_ROW_PROBLEMS
    first = problems[0]
    more = Problem(first.where.split(": row")[0], f"{hidden} more bad row(s) not listed", first.fix)
    return [*problems[:MAX_LISTED_ROW_PROBLEMS], more]


def _require_both_classes(where: str, rows: ScoredRows, label_column: str) -> None:
    if len(rows.labels) == 0:
        raise MetricContractError.at(where, "the CSV has a header but no data rows", _INFERENCE_FIX)
    n_pass = int(rows.is_pass.sum())
    if n_pass == 0:
        raise MetricContractError.at(
            where,
            f"no PASS rows in column {label_column} ({len(rows.labels)} defect rows): FAR is undefined",
            "score a KPI set that holds PASS components as well as defects",
        )
    if n_pass == len(rows.labels):
        raise MetricContractError.at(
            where,
            f"no defect rows in column {label_column} ({n_pass} PASS rows): no recall threshold exists",
            "score a KPI set that holds defects as well as PASS components",
        )


def _check_recall(recall_pct: float) -> None:
    if not (isinstance(recall_pct, int | float) and 0.0 < recall_pct <= 100.0):
        raise MetricContractError.at(
            "recall_target_pct",
            f"the requested recall {recall_pct!r} % is outside (0, 100]",
            "ask for a recall above 0 and at most 100, e.g. Recall=100%",
        )


def defects_to_keep(n_defect: int, recall_pct: float) -> int:
    """k = ceil(recall * n_defect): how many defect rows a threshold must flag to reach the recall."""
    _check_recall(recall_pct)
    return max(1, math.ceil(recall_pct / 100.0 * n_defect - _RECALL_EPSILON))


def threshold_at_recall(defect_scores: np.ndarray, recall_pct: float) -> float:
    """The k-th highest defect score: the highest cut that keeps k defect rows at `score >= threshold`."""
    scores = np.asarray(defect_scores, dtype=np.float64)
    if scores.size == 0:
        raise MetricContractError.at(
            "defect scores", "there are no defect scores", "score a set that holds defect rows"
        )
    if not np.all(np.isfinite(scores)):
        raise MetricContractError.at("defect scores", "a defect score is NaN or infinite", _SCORE_FIX)
    k = defects_to_keep(scores.size, recall_pct)
    return float(np.sort(scores)[::-1][k - 1])


def far_at_recall(rows: ScoredRows, recall_pct: float = 100.0) -> FarResult:
    """FAR (percent of PASS rows flagged) at the threshold that reaches `recall_pct` of the defects.

    Equivalence with the reference: it predicts "NO_PASS iff score > t" with t the largest candidate (every
    score, plus one value just below the minimum) strictly below the weakest defect's score. No score lies
    between that t and the weakest defect score, so at 100 % recall its rule and ours ("flag iff score >=
    threshold", threshold = the weakest defect's score) flag exactly the same rows and give the same FAR.
    For consumers that apply a strict `score > t` rule, `strict_threshold` = `nextafter(threshold, -inf)`
    flags the same rows again.
    """
    _check_recall(recall_pct)
    is_pass = rows.is_pass
    pass_scores, defect_scores = rows.scores[is_pass], rows.scores[~is_pass]
    if pass_scores.size == 0 or defect_scores.size == 0:
        raise MetricContractError.at(
            "scored rows",
            f"{pass_scores.size} PASS and {defect_scores.size} defect rows: FAR needs both",
            "score a set that holds PASS and defect rows",
        )
    threshold = threshold_at_recall(defect_scores, recall_pct)
    tp = int(np.count_nonzero(defect_scores >= threshold))
    fp = int(np.count_nonzero(pass_scores >= threshold))
    n_pass, n_defect = int(pass_scores.size), int(defect_scores.size)
    return FarResult(
        far_pct=100.0 * fp / n_pass,
        recall_pct=100.0 * tp / n_defect,
        threshold=threshold,
        tp=tp,
        fp=fp,
        tn=n_pass - fp,
        fn=n_defect - tp,
        n_pass=n_pass,
        n_defect=n_defect,
        requested_recall_pct=float(recall_pct),
    )
