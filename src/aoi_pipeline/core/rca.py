"""Root-cause analysis of a KPI inference: which defect types and which false alarms keep a model off its target.

Input is the KPI inference CSV of the winning checkpoint (the KPI rows plus `siamese_score`). The threshold
is the one the metric contract scores at (`core.far.threshold_at_recall` at the contract's recall; a row is
flagged iff `score >= threshold`). Every row gets a signed weakness against it: a defect row
`threshold - score` (> 0: missed), a PASS row `score - threshold` (>= 0: a false alarm), so the largest
weaknesses are the rows the model gets most wrong. Per defect type the analysis counts the misses and the FAR
the type alone forces (the share of PASS rows at or above its weakest caught defect; the run's FAR is the
largest of these), ranks the types into the targets the next iteration works on (most misses first, then the
highest forced FAR), and counts false alarms per board and component. `write_rca` records the gaps table,
metrics, threshold, a contact sheet of the worst pairs and `RCA_Report.md`, all deterministic.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from aoi_pipeline.core.contact_sheet import ImagePair, contact_sheet
from aoi_pipeline.core.dataset import (
    IMAGE_ROOT_PREFIXES,
    PASS_LABEL,
    normalize_image_ext,
    normalize_label,
    normalize_lights,
    write_dataset_csv,
)
from aoi_pipeline.core.far import MAX_LISTED_ROW_PROBLEMS, ScoredRows, far_at_recall
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text
from aoi_pipeline.errors import ConfigError, MetricContractError, Problem

REQUIRED_COLUMNS = ("input_path", "object_name", "label", "siamese_score")
SCORE_COLUMN = "siamese_score"
ADDED_COLUMNS = ("weakness", "outcome")
OUTCOMES = ("missed", "false_alarm", "weak_defect", "near_pass")
LOWEST_SCORES_KEPT = 5
REPORT_TOP_ROWS = 10

GAPS_CSV = "kpi_gaps.csv"
METRICS_JSON = "metrics.json"
THRESHOLD_TXT = "threshold.txt"
REPORT_MD = "RCA_Report.md"
CONTACT_SHEET_PNG = "rca_contact_sheet.png"


@dataclass(frozen=True)
class LabelGap:
    """One defect type at the threshold: its rows, misses, lowest scores and the FAR it forces on its own."""

    label: str
    total: int
    missed: int
    lowest_scores: tuple[float, ...]
    # Share of PASS rows scoring >= this type's weakest kept (flagged) defect score: the FAR this type alone
    # forces. 0 when the type has no kept row. The run's FAR is the largest value over all types.
    forced_far_pct: float


@dataclass(frozen=True)
class RcaResult:
    """The analysis of one KPI inference; `gaps` rows carry every input column plus weakness and outcome."""

    threshold: float
    recall_pct: float
    far_pct: float
    gaps: tuple[dict[str, str], ...]
    per_label: tuple[LabelGap, ...]
    false_alarms_by_board: dict[str, int]
    false_alarms_by_component: dict[str, int]
    target_defects: tuple[str, ...]
    requested_recall_pct: float
    confusion: dict[str, int]
    columns: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class RcaArtifacts:
    """The files `write_rca` wrote (contact sheet None when no pairs were asked for)."""

    gaps_csv: Path
    metrics_json: Path
    threshold_txt: Path
    report_md: Path
    contact_sheet_png: Path | None


@dataclass(frozen=True)
class _Row:
    index: int
    values: Mapping[str, str]
    label: str
    score: float
    weakness: float

    @property
    def is_pass(self) -> bool:
        return self.label == PASS_LABEL

    @property
    def outcome(self) -> str:
        if self.is_pass:
            return "false_alarm" if self.weakness >= 0 else "near_pass"
        return "missed" if self.weakness > 0 else "weak_defect"


def read_inference_rows(path: Path) -> tuple[dict[str, str], ...]:
    """The rows of an inference CSV as dicts (UTF-8, BOM tolerated); MetricContractError when unreadable."""
    where = str(path)
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            return tuple(dict(row) for row in csv.DictReader(handle))
    except FileNotFoundError:
        raise MetricContractError.at(
            where, "the inference CSV does not exist", "run inference of the winning checkpoint on the KPI set"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MetricContractError.at(where, f"cannot read the CSV ({exc})", "save it as UTF-8 CSV") from None


def analyse_inference_csv(path: Path, *, recall_pct: float, top_k_per_label: int = 50) -> RcaResult:
    """`analyse_gaps` on the rows of an inference CSV, naming the file in every error."""
    return analyse_gaps(
        read_inference_rows(path), recall_pct=recall_pct, top_k_per_label=top_k_per_label, source=str(path)
    )


def analyse_gaps(
    rows: Sequence[Mapping[str, str]],
    *,
    recall_pct: float,
    top_k_per_label: int = 50,
    source: str = "inference CSV",
) -> RcaResult:
    """Analyse scored KPI rows at the threshold that reaches `recall_pct` % of the defects.

    MetricContractError (naming `source`) for a missing column, an empty label, a bad score, or an
    unreachable KPI (no defect rows or no PASS rows); ConfigError for a `top_k_per_label` below 1.
    """
    if isinstance(top_k_per_label, bool) or not isinstance(top_k_per_label, int) or top_k_per_label < 1:
        raise ConfigError.at(
            "rca.top_k_per_label",
            f"{top_k_per_label!r} is not a positive whole number",
            "keep at least one weak row per label, e.g. 50",
        )
    columns = _columns(rows, source)
    labels, scores = _labels_and_scores(rows, source)
    _require_reachable(labels, source)
    far = far_at_recall(ScoredRows(tuple(labels), scores), recall_pct)
    threshold = far.threshold
    scored = [
        _Row(index, row, label, float(score), _weakness(label, float(score), threshold))
        for index, (row, label, score) in enumerate(zip(rows, labels, scores, strict=True))
    ]
    pass_scores = scores[np.array([row.is_pass for row in scored])]
    per_label = _per_label(scored, pass_scores, threshold)
    false_alarms = [row for row in scored if row.outcome == "false_alarm"]
    has_boardname = "boardname" in columns
    return RcaResult(
        threshold=threshold,
        recall_pct=far.recall_pct,
        far_pct=far.far_pct,
        gaps=tuple(_gap_row(row, columns) for row in _weakest_per_label(scored, top_k_per_label)),
        per_label=per_label,
        false_alarms_by_board=_ranked_counts(_board(row.values, has_boardname) for row in false_alarms),
        false_alarms_by_component=_ranked_counts(row.values.get("object_name") or "" for row in false_alarms),
        target_defects=tuple(gap.label for gap in per_label if gap.missed > 0 or gap.forced_far_pct > 0),
        requested_recall_pct=float(recall_pct),
        confusion={"tp": far.tp, "fp": far.fp, "tn": far.tn, "fn": far.fn},
        columns=(*columns, *ADDED_COLUMNS),
        source=source,
    )


def _columns(rows: Sequence[Mapping[str, str]], source: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(key for key in row if key is not None))
    columns = tuple(seen)
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if rows and missing:
        raise MetricContractError.at(
            source,
            f"missing column(s) {', '.join(missing)}; the header has {', '.join(columns)}",
            "analyse the inference CSV of the KPI set: its rows plus the siamese_score column",
        )
    clashing = [column for column in ADDED_COLUMNS if column in seen]
    if clashing:
        raise MetricContractError.at(
            source,
            f"already has the column(s) {', '.join(clashing)} that the analysis adds",
            "analyse the inference CSV itself, not an earlier gaps table",
        )
    return columns


def _labels_and_scores(rows: Sequence[Mapping[str, str]], source: str) -> tuple[list[str], np.ndarray]:
    labels: list[str] = []
    scores: list[float] = []
    problems: list[Problem] = []
    for number, row in enumerate(rows, start=1):
        raw_label = row.get("label") or ""
        if not raw_label.strip():
            problems.append(
                Problem(f"{source}: row {number}, column label", "the label is empty", "give every row its label")
            )
        labels.append(normalize_label(raw_label))
        scores.append(_score(row.get(SCORE_COLUMN), f"{source}: row {number}, column {SCORE_COLUMN}", problems))
    if problems:
        listed = problems[:MAX_LISTED_ROW_PROBLEMS]
        raise MetricContractError(listed, summary=f"{source}: {len(problems)} bad row(s), {len(listed)} listed")
    return labels, np.asarray(scores, dtype=np.float64)


def _score(raw: str | None, where: str, problems: list[Problem]) -> float:
    fix = "re-run inference for this CSV; every row needs a finite siamese_score"
    try:
        value = float(raw or "")
    except ValueError:
        problems.append(Problem(where, f"the score {raw!r} is not a number", fix))
        return math.nan
    if not math.isfinite(value):
        problems.append(Problem(where, f"the score {raw!r} is not finite", fix))
    return value


def _require_reachable(labels: Sequence[str], source: str) -> None:
    n_pass = sum(1 for label in labels if label == PASS_LABEL)
    n_defect = len(labels) - n_pass
    if n_pass and n_defect:
        return
    missing = "defect" if n_pass else "PASS"
    raise MetricContractError.at(
        source,
        f"unreachable KPI: {n_pass} PASS and {n_defect} defect rows, no {missing} rows to set a threshold against",
        "score a KPI set that holds PASS components and defects; do not route or mine on this analysis",
    )


def _weakness(label: str, score: float, threshold: float) -> float:
    return score - threshold if label == PASS_LABEL else threshold - score


def _per_label(scored: Sequence[_Row], pass_scores: np.ndarray, threshold: float) -> tuple[LabelGap, ...]:
    by_label: dict[str, list[float]] = {}
    for row in scored:
        if not row.is_pass:
            by_label.setdefault(row.label, []).append(row.score)
    gaps = []
    for label, values in by_label.items():
        ordered = sorted(values)
        kept = [value for value in ordered if value >= threshold]
        forced = 100.0 * np.count_nonzero(pass_scores >= kept[0]) / pass_scores.size if kept else 0.0
        gaps.append(
            LabelGap(
                label=label,
                total=len(ordered),
                missed=len(ordered) - len(kept),
                lowest_scores=tuple(ordered[:LOWEST_SCORES_KEPT]),
                forced_far_pct=float(forced),
            )
        )
    return tuple(sorted(gaps, key=lambda gap: (-gap.missed, -gap.forced_far_pct, gap.label)))


def _weakest_per_label(scored: Sequence[_Row], top_k: int) -> list[_Row]:
    by_label: dict[str, list[_Row]] = {}
    for row in scored:
        by_label.setdefault(row.label, []).append(row)
    kept = [row for rows in by_label.values() for row in sorted(rows, key=_worst_first)[:top_k]]
    return sorted(kept, key=_worst_first)


def _worst_first(row: _Row) -> tuple[float, int]:
    return -row.weakness, row.index


def _gap_row(row: _Row, columns: Sequence[str]) -> dict[str, str]:
    values = {column: row.values.get(column) or "" for column in columns}
    return {**values, "weakness": repr(row.weakness), "outcome": row.outcome}


def _board(values: Mapping[str, str], has_boardname: bool) -> str:
    """`boardname` when the CSV has it, else the first directory of input_path under the image root."""
    if has_boardname and (values.get("boardname") or "").strip():
        return values["boardname"].strip()
    path = (values.get("input_path") or "").replace("\\", "/")
    while path.startswith(("./", "/")):
        path = path[2:] if path.startswith("./") else path[1:]
    for prefix in IMAGE_ROOT_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    parts = PurePosixPath(path).parts
    return parts[0] if parts else ""


def _ranked_counts(keys: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(keys).items(), key=lambda item: (-item[1], item[0])))


def write_rca(
    result: RcaResult,
    out_dir: Path,
    *,
    images_dir: Path,
    lights: Sequence[str],
    image_ext: str,
    contact_sheet_pairs: int = 10,
) -> RcaArtifacts:
    """Write the gaps table, metrics, threshold, contact sheet and report into `out_dir` (created).

    The contact sheet shows the first light of up to `contact_sheet_pairs` of the weakest distinct pairs,
    defects and PASS rows alternating; 0 writes none. Arguments are checked before anything is written.
    """
    first_light = normalize_lights(lights)[0]
    ext = normalize_image_ext(image_ext)
    if contact_sheet_pairs < 0:
        raise ConfigError.at("rca.contact_sheet_pairs", f"{contact_sheet_pairs} is negative", "ask for 0 or more pairs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet = None
    chosen = _sheet_rows(result.gaps, contact_sheet_pairs)
    if chosen:
        pairs = [_pair(row, Path(images_dir), first_light, ext) for row in chosen]
        sheet = contact_sheet(pairs, out_dir / CONTACT_SHEET_PNG)
    artifacts = RcaArtifacts(
        gaps_csv=out_dir / GAPS_CSV,
        metrics_json=out_dir / METRICS_JSON,
        threshold_txt=out_dir / THRESHOLD_TXT,
        report_md=out_dir / REPORT_MD,
        contact_sheet_png=sheet,
    )
    write_dataset_csv(artifacts.gaps_csv, result.columns, result.gaps)
    atomic_write_json(artifacts.metrics_json, rca_metrics(result))
    atomic_write_text(artifacts.threshold_txt, f"{result.threshold!r}\n")
    atomic_write_text(artifacts.report_md, rca_report(result, contact_sheet_name=sheet.name if sheet else None))
    return artifacts


def _sheet_rows(gaps: Sequence[Mapping[str, str]], limit: int) -> list[Mapping[str, str]]:
    """Weakest distinct defect and PASS pairs, alternating; one side fills in when the other runs out."""
    seen: set[tuple[str, str, str]] = set()
    defects: list[Mapping[str, str]] = []
    passes: list[Mapping[str, str]] = []
    for row in gaps:
        key = (row.get("input_path", ""), row.get("golden_path", ""), row.get("object_name", ""))
        if key not in seen:
            seen.add(key)
            (passes if normalize_label(row.get("label", "")) == PASS_LABEL else defects).append(row)
    chosen: list[Mapping[str, str]] = []
    for defect, passed in zip(defects, passes, strict=False):
        chosen += [defect, passed]
    shorter = min(len(defects), len(passes))
    chosen += defects[shorter:] + passes[shorter:]
    return chosen[:limit]


def _pair(row: Mapping[str, str], images_dir: Path, light: str, ext: str) -> ImagePair:
    name = f"{row.get('object_name', '')}_{light}{ext}"
    test, golden = row.get("input_path", ""), row.get("golden_path", "")
    caption = f"{normalize_label(row.get('label', ''))} {float(row[SCORE_COLUMN]):.4f}"
    return (images_dir / test / name if test else None, images_dir / golden / name if golden else None, caption)


def rca_metrics(result: RcaResult) -> dict[str, object]:
    """The metrics.json document: operating point, confusion counts, per-type gaps, false alarms, targets."""
    return {
        "source": result.source,
        "threshold": result.threshold,
        "prediction_rule": "defect iff siamese_score >= threshold",
        "requested_recall_pct": result.requested_recall_pct,
        "recall_pct": result.recall_pct,
        "far_pct": result.far_pct,
        "confusion_matrix": result.confusion,
        "per_label": {
            gap.label: {
                "total": gap.total,
                "missed": gap.missed,
                "lowest_scores": list(gap.lowest_scores),
                "forced_far_pct": gap.forced_far_pct,
            }
            for gap in result.per_label
        },
        "false_alarms_by_board": result.false_alarms_by_board,
        "false_alarms_by_component": result.false_alarms_by_component,
        "target_defects": list(result.target_defects),
        "gap_rows": len(result.gaps),
        "gap_outcomes": {outcome: sum(1 for row in result.gaps if row["outcome"] == outcome) for outcome in OUTCOMES},
    }


def rca_report(result: RcaResult, *, contact_sheet_name: str | None = None) -> str:
    """RCA_Report.md: verdict, threshold, confusion counts, per-type table, false alarms, targets, actions."""
    sections = [
        ["# Root-cause analysis of the KPI inference", "", f"Source: `{result.source}`"],
        _verdict(result),
        _threshold_section(result),
        _per_type_section(result),
        _false_alarm_section(result),
        _weakest_section(result, contact_sheet_name),
        _target_section(result),
        _actions_section(result),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _pct(value: float) -> str:
    return f"{value:.2f} %"


def _verdict(result: RcaResult) -> list[str]:
    c = result.confusion
    n_pass, n_defect = c["fp"] + c["tn"], c["tp"] + c["fn"]
    lines = [
        "## Verdict",
        "",
        f"At the requested recall of {result.requested_recall_pct:g} % the threshold is {result.threshold:.6g}: "
        f"{c['tp']} of {n_defect} defect rows are caught (recall {_pct(result.recall_pct)}) and {c['fp']} of "
        f"{n_pass} PASS rows are false alarms (FAR {_pct(result.far_pct)}).",
    ]
    if result.target_defects:
        lines.append(f"Target defect types, most urgent first: {', '.join(result.target_defects)}.")
    else:
        lines.append("No defect type is missed or forces a false alarm at this threshold.")
    return lines


def _threshold_section(result: RcaResult) -> list[str]:
    c = result.confusion
    return [
        "## Threshold and confusion counts",
        "",
        f"Threshold {result.threshold!r}; a row is flagged as a defect iff siamese_score >= threshold.",
        "",
        "| ground truth | flagged | not flagged |",
        "|---|---:|---:|",
        f"| defect | {c['tp']} (caught) | {c['fn']} (missed) |",
        f"| PASS | {c['fp']} (false alarm) | {c['tn']} (correct) |",
    ]


def _per_type_section(result: RcaResult) -> list[str]:
    lines = [
        "## Defect types",
        "",
        "Forced FAR: the share of PASS rows scoring at or above the type's weakest caught defect, i.e. the FAR "
        "this type alone forces; the run's FAR is the largest of them.",
        "",
        "| type | rows | missed | lowest scores | forced FAR |",
        "|---|---:|---:|---|---:|",
    ]
    for gap in result.per_label:
        lowest = ", ".join(f"{score:.4f}" for score in gap.lowest_scores)
        lines.append(f"| {gap.label} | {gap.total} | {gap.missed} | {lowest} | {_pct(gap.forced_far_pct)} |")
    return lines


def _false_alarm_section(result: RcaResult) -> list[str]:
    lines = ["## False alarms", ""]
    if not result.false_alarms_by_board:
        return [*lines, "No PASS row scores at or above the threshold."]
    for title, counts in (
        ("board", result.false_alarms_by_board),
        ("component", result.false_alarms_by_component),
    ):
        lines += [f"Top {title}s by false alarms ({len(counts)} {title}s have any):", ""]
        lines += [f"| {title} | false alarms |", "|---|---:|"]
        lines += [f"| {key or '(none)'} | {count} |" for key, count in list(counts.items())[:REPORT_TOP_ROWS]]
        lines.append("")
    return lines[:-1]


def _weakest_section(result: RcaResult, contact_sheet_name: str | None) -> list[str]:
    lines = [
        "## Weakest rows",
        "",
        f"The gaps table `{GAPS_CSV}` holds {len(result.gaps)} rows: per label the weakest rows, weakness = "
        "threshold - score for defects (> 0: missed) and score - threshold for PASS (>= 0: false alarm).",
    ]
    for title, wanted in (("Weakest defect rows", False), ("Worst PASS rows", True)):
        chosen = [row for row in result.gaps if (normalize_label(row["label"]) == PASS_LABEL) == wanted]
        lines += ["", f"{title}:", "", "| label | input_path | object_name | score | weakness | outcome |"]
        lines.append("|---|---|---|---:|---:|---|")
        lines += [
            f"| {row['label']} | {row['input_path']} | {row['object_name']} | {float(row[SCORE_COLUMN]):.4f} | "
            f"{float(row['weakness']):+.4f} | {row['outcome']} |"
            for row in chosen[:REPORT_TOP_ROWS]
        ]
    if contact_sheet_name:
        lines += ["", f"![weakest pairs, test | golden]({contact_sheet_name})"]
    return lines


def _target_section(result: RcaResult) -> list[str]:
    lines = ["## Target defect types", ""]
    if not result.target_defects:
        return [*lines, "None."]
    gaps = {gap.label: gap for gap in result.per_label}
    for number, label in enumerate(result.target_defects, start=1):
        gap = gaps[label]
        lines.append(f"{number}. {label}: {gap.missed} of {gap.total} missed, forces FAR {_pct(gap.forced_far_pct)}")
    return lines


def _actions_section(result: RcaResult) -> list[str]:
    lines = ["## Recommended actions", ""]
    if result.target_defects:
        targets = ", ".join(result.target_defects)
        lines.append(f"- Synthesize defects (SDG) of the target types {targets}, most samples for the first.")
        lines.append(
            f"- Mine real pool images similar to the weak rows of {targets}, so the model sees more real examples."
        )
    if result.false_alarms_by_board:
        boards = ", ".join(list(result.false_alarms_by_board)[:3])
        lines.append(
            "- Mine real PASS images similar to the false alarms (most on boards "
            f"{boards}), so the model learns what normal variation looks like."
        )
        worst_board, worst_count = next(iter(result.false_alarms_by_board.items()))
        if worst_count * 2 > result.confusion["fp"] and result.confusion["fp"] > 2:
            lines.append(
                f"- Board {worst_board} holds {worst_count} of {result.confusion['fp']} false alarms: check its "
                "golden images and registration before adding data."
            )
    if result.confusion["fn"]:
        lines.append(
            f"- {result.confusion['fn']} defect rows fall below the threshold (the misses the requested recall "
            "allows); check the lowest-scoring ones in the gaps table for label errors before adding data."
        )
    if len(lines) == 2:
        lines.append("- None: the model separates every defect type from the PASS rows at this recall.")
    return lines
