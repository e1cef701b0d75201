"""The DEFT loop report: sections, values, charts, hard stops, escaping, offline use and determinism."""

from __future__ import annotations

import copy
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.core.report import NOT_RECORDED, REPORT_FILE, render_report, write_report
from aoi_pipeline.core.state import StageCommit, commit_stage, init_state, read_state
from aoi_pipeline.errors import ConfigError, StateError

FAR_CONTRACT = {
    "name": "far_pct",
    "display_name": "FAR",
    "operator": "<",
    "target": 5.0,
    "unit": "%",
    "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 99.0}},
    "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 99.0, "unit": "%"}],
}
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script> & leakage"
SECTIONS = ("run", "kpi", "iterations", "growth", "durations", "rca", "augmentation", "handoff")


# ---------------------------------------------------------------------------------------------------------
# Building real states through init_state + commit_stage


class Run:
    def __init__(self, tmp_path: Path, *, max_iterations: int = 2, contract: dict | None = None) -> None:
        self.rd = tmp_path / "ws" / "results" / "run_20260301_080000"
        self.clock = T0
        self.durations: list[float] = []
        self.contract = contract or FAR_CONTRACT
        init_state(
            self.rd,
            kpi_target="FAR < 5% at Recall=99%" if contract is None else "Quality score >= 0.9",
            metric_contract=self.contract,
            max_iterations=max_iterations,
            config={"num_epochs": 10},
            now=self.clock,
        )

    def file(self, relative: str, content: str | bytes = "x") -> str:
        path = self.rd / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def commit(self, label: str, stage: str, fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.clock += timedelta(minutes=1)
        # Every commit gets its own duration, so the bar chart's proportions can be checked.
        duration = kwargs.pop("duration_sec", 10.0 + 7.5 * len(self.durations))
        self.durations.append(duration)
        commit = StageCommit(
            label,
            stage,
            kwargs.pop("status", "ok"),
            kwargs.pop("summary", f"{stage} of {label} done"),
            duration,
            fields or {},
            **kwargs,
        )
        commit_stage(self.rd, commit, now=self.clock)

    def train(self, label: str) -> None:
        self.commit(
            label,
            "train",
            {
                "best_ckpt_path": self.file(f"{label}/train/model_epoch_010_step_00100.pth"),
                "training_spec": self.file(f"{label}/spec.yaml", "train: {}\n"),
                "best_ckpt_kind": "best_val",
            },
        )

    def evaluate(self, label: str, far: float, *, kind: str = "best_val", threshold: float = 0.25) -> None:
        result = {"name": self.contract["name"], "value": far, "unit": self.contract["unit"]}
        result["threshold"] = threshold
        result["constraints"] = {"recall_pct": 99.5} if self.contract is FAR_CONTRACT else {}
        self.commit(
            label,
            "evaluate",
            {
                "metric_result": self.file(f"{label}/inference/{kind}/metric_result.json", json.dumps(result)),
                "best_ckpt_path": str(self.rd / label / "train" / "model_epoch_010_step_00100.pth"),
                "inference_csv": self.file(f"{label}/inference/{kind}/inference.csv", "input_path\n"),
            },
        )

    def rca(self, label: str, defects: list[str]) -> None:
        self.commit(
            label,
            "rca",
            {
                "rca_gaps_csv": self.file(f"{label}/rca_results/t/kpi_gaps.csv", "label\n"),
                "rca_threshold": 0.4375,
                "rca_target_defects": defects,
            },
        )

    def until_merge(self, label: str, mined: int) -> None:
        self.commit(
            label,
            "routing",
            {
                "routing_mining_csv": self.file(f"{label}/routing/mining.csv", "x\n"),
                "routing_anomalygen_csv": self.file(f"{label}/routing/sdg.csv", "x\n"),
            },
        )
        self.commit(
            label,
            "anomalygen",
            {
                "anomalygen_sdg_csv": self.file(f"{label}/anomalygen/sdg/SDG_result.csv", "image\n"),
                "anomalygen_allocation_json": self.file(
                    f"{label}/anomalygen/sdg/allocation.json", json.dumps({"PCB+short": 11, "PCB+open": 9})
                ),
            },
        )
        base = f"{label}/mining"
        log = "Execution status: PASS\n"
        self.commit(
            label,
            "data_mining",
            {
                "mining_mined_csv": self.file(f"{base}/mined.csv", "x\n"),
                "mining_candidate_csv": self.file(f"{base}/candidates.csv", "x\n"),
                "mining_summary": self.file(f"{base}/knn_summary.csv", "x\n"),
                "mining_history": self.file("mining_history.json", "{}"),
                "mining_history_summary": self.file(f"{base}/history_summary.json", "{}"),
                "mining_target_embeddings": self.file(f"{base}/target.npy", b"N"),
                "mining_source_embeddings": self.file(f"{base}/source.npy", b"N"),
                "mining_target_log": self.file(f"{base}/target.log", log),
                "mining_source_log": self.file(f"{base}/source.log", log),
                "mining_knn_log": self.file(f"{base}/knn.log", log),
                "mining_mined_count": mined,
            },
        )
        report = {"missing_file_count": 0, "train_val_leakage_overlap_count": 0}
        self.commit(
            label,
            "data_merge",
            {
                "combined_training_csv": self.file(f"{label}/dataset/train.csv", "input_path\n"),
                "provenance_csv": self.file(f"{label}/dataset/provenance.csv", "source\n"),
                "merge_validation_report": self.file(f"{label}/dataset/merge_validation.json", json.dumps(report)),
            },
        )

    def stop(self, reason: str, best_model: dict[str, Any]) -> None:
        self.commit(
            self.last_label,
            "loop_stop",
            {
                "stop_reason": reason,
                "best_model_json": self.file("best_model.json", json.dumps(best_model)),
                "inference_spec": self.file("best_model_inference_spec.yaml", "inference: {}\n"),
            },
        )

    last_label = "iter2"

    @property
    def state(self) -> dict[str, Any]:
        return read_state(self.rd)


BEST_MODEL = {
    "checkpoint": "/ws/results/run_20260301_080000/iter2/train/model_epoch_010_step_00100.pth",
    "threshold": 0.1875,
    "iteration": "iter2",
    "metric_result": {"name": "far_pct", "value": 4.0, "unit": "%", "passed": True},
    "metric_contract": FAR_CONTRACT,
    "training_spec": "/ws/results/run_20260301_080000/iter2/spec.yaml",
    "far_pct": 4.0,
}
EXTRAS = {
    "training_rows_by_source": {
        "baseline": {"base": 480},
        "iter1": {"base": 480, "sdg": 20, "mined": 35},
        "iter2": {"base": 480, "sdg": 40, "mined": 60},
    },
    "rca_gaps": {
        "baseline": [
            {"label": "short", "missed": 7, "forced_far_pct": 31.25, "lowest": 0.0625},
            {"label": "open", "missed": 2, "forced_far_pct": None, "lowest": 0.5},
        ],
        "iter1": [{"label": "open", "missed": 1, "forced_far_pct": 14.5, "lowest": 0.125}],
    },
    "sdg_and_mining": {"iter1": {"mining_candidates": 90, "mining_below_min_similarity": 55}},
    "pool_share_used_pct": 6.0,
}


@pytest.fixture
def complete_run(tmp_path: Path) -> Run:
    """Baseline and two iterations: FAR 20% -> 12% (latest checkpoint wins) -> 4%, the target is met."""
    run = Run(tmp_path / "complete")
    run.train("baseline")
    run.evaluate("baseline", 20.0, threshold=0.5)
    run.rca("baseline", ["short", "open"])
    run.until_merge("iter1", mined=35)
    run.train("iter1")
    run.evaluate("iter1", 12.0, kind="latest", threshold=0.375)
    run.rca("iter1", ["open"])
    run.until_merge("iter2", mined=25)
    run.train("iter2")
    run.evaluate("iter2", 4.0, threshold=0.1875)
    run.stop("metric_met", BEST_MODEL)
    return run


@pytest.fixture
def failed_run(tmp_path: Path) -> Run:
    """Baseline evaluated, then iter1's SDG stage fails with a summary that holds markup."""
    run = Run(tmp_path / "failed")
    run.train("baseline")
    run.evaluate("baseline", 20.0)
    run.rca("baseline", ["short"])
    run.commit(
        "iter1",
        "routing",
        {
            "routing_mining_csv": run.file("iter1/routing/mining.csv", "x\n"),
            "routing_anomalygen_csv": run.file("iter1/routing/sdg.csv", "x\n"),
        },
    )
    run.commit("iter1", "anomalygen", {"job_rc": 3}, status="error", summary=HOSTILE)
    return run


# ---------------------------------------------------------------------------------------------------------
# Reading the HTML back


class _Page(HTMLParser):
    """Collects tags and attributes, checks that every element opened is closed in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def all(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.elements
            if name == tag and all(attrs.get(key.replace("_", "-")) == value for key, value in wanted.items())
        ]

    def section_ids(self) -> list[str]:
        return [str(attrs["id"]) for name, attrs in self.elements if name in ("section", "header") and "id" in attrs]


def _section(text: str, section_id: str) -> str:
    match = re.search(rf'<(section|header) id="{section_id}"[^>]*>(.*?)</\1>', text, re.S)
    assert match, f"section {section_id} missing"
    return match.group(2)


def _visible(fragment: str) -> str:
    """The text a reader sees in a fragment, entities decoded."""
    return " ".join(part.strip() for part in _Page(fragment).texts if part.strip())


def _table_rows(fragment: str) -> list[list[str]]:
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", fragment, re.S):
        rows.append([_visible(cell) for cell in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)])
    return rows


# ---------------------------------------------------------------------------------------------------------
# A complete run with extras


def test_every_section_is_present_and_the_page_parses_cleanly(complete_run: Run) -> None:
    text = render_report(complete_run.state, extras={**EXTRAS, "handoff": BEST_MODEL})
    page = _Page(text)
    assert page.errors == []
    assert page.stack == []
    assert text.startswith("<!DOCTYPE html>")
    assert page.section_ids() == list(SECTIONS)  # no hard stop on a complete run
    assert NOT_RECORDED not in text


def test_the_header_names_the_run_its_status_target_and_stop_reason(complete_run: Run) -> None:
    header = _visible(_section(render_report(complete_run.state, extras=EXTRAS), "run"))
    assert str(complete_run.rd) in header
    assert "complete" in header
    assert "FAR < 5% at Recall=99%" in header
    assert "the KPI target was met at iter2" in header
    assert "2 of 2" in header


def test_the_kpi_chart_has_one_point_per_evaluated_phase_placed_by_value(complete_run: Run) -> None:
    page = _Page(_section(render_report(complete_run.state), "kpi"))
    points = page.all("circle", **{"class": "kpi-point"})
    assert [p["data-label"] for p in points] == ["baseline", "iter1", "iter2"]
    values = [20.0, 12.0, 4.0]
    assert [float(str(p["data-value"])) for p in points] == values
    # SVG y grows downwards: a lower FAR sits lower on the chart, i.e. at a larger y.
    ys = [float(str(p["cy"])) for p in points]
    assert ys[0] < ys[1] < ys[2]
    # equal value steps (8 pp) are equal distances
    assert ys[1] - ys[0] == pytest.approx(ys[2] - ys[1], abs=0.11)
    target = page.all("line", **{"class": "target"})
    assert len(target) == 1
    assert target[0]["stroke-dasharray"]
    target_y = float(str(target[0]["y1"]))
    # 5% lies between 12% and 4%, at 1/8 of the distance from 4% to 12%
    assert ys[1] < target_y < ys[2]
    assert (ys[2] - target_y) / (ys[2] - ys[1]) == pytest.approx(1 / 8, abs=0.01)
    # the best (lowest) point is the highlighted one
    fills = {p["data-label"]: p["fill"] for p in points}
    assert fills["iter2"] != fills["baseline"]
    assert fills["iter1"] == fills["baseline"]
    # the y axis is labelled in the metric's unit, on round, evenly spaced ticks that sit on the points' scale
    fragment = _section(render_report(complete_run.state), "kpi")
    ticks = re.findall(r'<text class="tick" x="[^"]+" y="([^"]+)"[^>]*>([^<]*)</text>', fragment)
    assert len(ticks) >= 3
    assert all(label.endswith("%") for _, label in ticks)
    tick_values = [float(label[:-1]) for _, label in ticks]
    steps = {round(b - a, 9) for a, b in itertools.pairwise(tick_values)}
    assert len(steps) == 1
    assert min(tick_values) <= 4.0 and max(tick_values) >= 20.0
    pixels_per_pp = (ys[2] - ys[0]) / (4.0 - 20.0)
    for y_text, value in zip((float(y) for y, _ in ticks), tick_values, strict=True):
        assert y_text - 4 == pytest.approx(ys[0] + (value - 20.0) * pixels_per_pp, abs=0.2)
    assert "FAR (%)" in _visible(fragment)


def test_the_iterations_table_shows_metric_delta_threshold_verdict_and_checkpoint(complete_run: Run) -> None:
    rows = _table_rows(_section(render_report(complete_run.state), "iterations"))
    assert rows[0] == [
        "Phase",
        "FAR (%)",
        "Δ vs baseline",
        "Threshold",
        "Constraints",
        "Passed",
        "Checkpoint",
        "Status",
    ]
    by_phase = {row[0]: row for row in rows[1:]}
    assert by_phase["baseline"][1:7] == ["20%", "—", "0.5", "recall_pct 99.5", "no", "best_val"]
    # iter1's winner was the latest checkpoint although train recorded best_val
    assert by_phase["iter1"][1:7] == ["12%", "-8 pp", "0.375", "recall_pct 99.5", "no", "latest"]
    assert by_phase["iter2 ★ best"][1:7] == ["4%", "-16 pp", "0.1875", "recall_pct 99.5", "yes", "best_val"]


def test_training_growth_stacks_each_source_in_proportion(complete_run: Run) -> None:
    fragment = _section(render_report(complete_run.state, extras=EXTRAS), "growth")
    segments = _Page(fragment).all("rect", **{"class": "bar-segment"})
    heights = {(s["data-label"], s["data-source"]): float(str(s["height"])) for s in segments}
    assert set(heights) == {
        ("baseline", "base"),
        ("iter1", "base"),
        ("iter1", "sdg"),
        ("iter1", "mined"),
        ("iter2", "base"),
        ("iter2", "sdg"),
        ("iter2", "mined"),
    }
    unit = heights[("baseline", "base")] / 480
    for (label, source), height in heights.items():
        assert height == pytest.approx(EXTRAS["training_rows_by_source"][label][source] * unit, rel=1e-3)
    # segments of one bar stack on each other: each starts where the one below ends
    iter1 = [s for s in segments if s["data-label"] == "iter1"]
    for below, above in itertools.pairwise(iter1):
        assert float(str(above["y"])) + float(str(above["height"])) == pytest.approx(float(str(below["y"])), abs=0.11)
    rows = _table_rows(fragment)
    assert rows[0] == ["Phase", "base", "sdg", "mined", "Total", "Δ"]
    assert rows[1:] == [
        ["baseline", "480", "—", "—", "480", "—"],
        ["iter1", "480", "20", "35", "535", "+55"],
        ["iter2", "480", "40", "60", "580", "+45"],
    ]


def test_stage_durations_list_every_event_with_bars_in_proportion(complete_run: Run) -> None:
    state = complete_run.state
    fragment = _section(render_report(state), "durations")
    bars = _Page(fragment).all("rect", **{"class": "duration-bar"})
    assert [int(str(b["data-seq"])) for b in bars] == [e["seq"] for e in state["events"]]
    widths = [float(str(b["width"])) for b in bars]
    longest = max(complete_run.durations)
    for width, seconds in zip(widths, complete_run.durations, strict=True):
        assert width / max(widths) == pytest.approx(seconds / longest, rel=1e-3)
    rows = _table_rows(fragment)
    assert len(rows) == 1 + len(state["events"]) + 1  # head, one per event, the total
    assert rows[1][:5] == ["1", "baseline", "train", "ok", "10.0 s"]
    total = sum(complete_run.durations)
    minutes, seconds = divmod(round(total), 60)
    assert rows[-1][2:5] == ["all stages", "", f"{minutes}m {seconds:02d}s"]


def test_rca_shows_the_gap_table_and_the_target_defects_from_the_state(complete_run: Run) -> None:
    fragment = _section(render_report(complete_run.state, extras=EXTRAS), "rca")
    rows = _table_rows(fragment)
    head = ["Defect type", "Missed", "Forced FAR (%)", "Lowest score"]
    assert rows == [
        head,
        ["short", "7", "31.25", "0.0625"],
        ["open", "2", "—", "0.5"],
        head,
        ["open", "1", "14.5", "0.125"],
    ]
    text = _visible(fragment)
    assert "Target defect types: short, open" in text
    assert "Target defect types: open" in text  # iter1's RCA, recorded in the state only
    assert "0.4375" in text


def test_sdg_and_mining_counts_combine_state_and_extras(complete_run: Run) -> None:
    fragment = _section(render_report(complete_run.state, extras=EXTRAS), "augmentation")
    rows = _table_rows(fragment)
    assert rows[0] == ["Phase", "SDG allocated", "Mined rows", "mining_below_min_similarity", "mining_candidates"]
    assert rows[1:] == [["iter1", "20", "35", "55", "90"], ["iter2", "20", "25", "—", "—"]]
    assert "Share of the mining pool used: 6.0% (60 rows mined in total)" in _visible(fragment)


def test_the_handoff_shows_best_model_json(complete_run: Run) -> None:
    text = _visible(_section(render_report(complete_run.state, extras={"handoff": BEST_MODEL}), "handoff"))
    assert BEST_MODEL["checkpoint"] in text
    assert "iteration iter2" in text
    assert "threshold 0.1875" in text
    assert "FAR 4%" in text
    assert str(complete_run.rd / "best_model.json") in text


# ---------------------------------------------------------------------------------------------------------
# The state alone


def test_without_extras_every_section_renders_and_says_what_is_not_recorded(complete_run: Run) -> None:
    text = render_report(complete_run.state)
    assert _Page(text).errors == []
    assert _Page(text).section_ids() == list(SECTIONS)
    assert NOT_RECORDED in _visible(_section(text, "growth"))
    assert "Gaps table: not recorded" in _visible(_section(text, "rca"))
    augmentation = _visible(_section(text, "augmentation"))
    assert "Detailed SDG and mining counts: not recorded" in augmentation
    assert "Share of the mining pool used: not recorded (60 rows mined in total)" in augmentation
    assert "best_model.json content not recorded" in _visible(_section(text, "handoff"))
    # the state still gives the KPI chart and the table
    assert len(_Page(text).all("circle", **{"class": "kpi-point"})) == 3


def test_a_new_run_renders_with_nothing_committed(tmp_path: Path) -> None:
    state = Run(tmp_path).state
    text = render_report(state)
    page = _Page(text)
    assert page.errors == []
    assert page.all("circle", **{"class": "kpi-point"}) == []
    assert "No evaluated iteration yet" in _visible(_section(text, "kpi"))
    assert "running; next stage baseline/train" in _visible(_section(text, "run"))


def test_a_run_in_progress_plots_only_what_was_evaluated(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.train("baseline")
    run.evaluate("baseline", 20.0)
    run.rca("baseline", ["short"])
    run.until_merge("iter1", mined=3)
    text = render_report(run.state)
    assert len(_Page(text).all("circle", **{"class": "kpi-point"})) == 1
    assert "running; next stage iter1/train" in _visible(_section(text, "run"))
    rows = _table_rows(_section(text, "iterations"))
    assert rows[2] == ["iter1", "—", "—", "—", "—", "—", "—", "in_progress (data_merge)"]


def test_a_higher_is_better_metric_without_unit_is_drawn_and_ranked_the_other_way(tmp_path: Path) -> None:
    contract = {
        "name": "quality_score",
        "display_name": "Quality score",
        "operator": ">=",
        "target": 0.9,
        "unit": "",
        "evaluator": {"type": "command", "path": "/opt/metrics/evaluate_quality.py", "args": []},
        "constraints": [],
    }
    run = Run(tmp_path, contract=contract)
    run.train("baseline")
    run.evaluate("baseline", 0.8)
    run.rca("baseline", ["short"])
    run.until_merge("iter1", mined=4)
    run.train("iter1")
    run.evaluate("iter1", 0.85)
    text = render_report(run.state)
    page = _Page(_section(text, "kpi"))
    points = page.all("circle", **{"class": "kpi-point"})
    baseline, iter1 = (float(str(p["cy"])) for p in points)
    assert iter1 < baseline  # the higher score is drawn higher
    assert points[1]["fill"] != points[0]["fill"]  # and is the best
    target_y = float(str(page.all("line", **{"class": "target"})[0]["y1"]))
    assert target_y < iter1
    assert "Higher is better" in _visible(_section(text, "kpi"))
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', _section(text, "kpi"))
    assert ticks and all(re.fullmatch(r"-?[0-9.]+", tick) for tick in ticks)
    rows = _table_rows(_section(text, "iterations"))
    assert rows[0][1] == "Quality score"
    assert rows[2][:3] == ["iter1 ★ best", "0.85", "+0.05"]


def test_a_single_evaluated_phase_is_one_point_inside_the_chart(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.train("baseline")
    run.evaluate("baseline", 5.0)  # equal to the target: a flat range still gets a visible band
    page = _Page(_section(render_report(run.state), "kpi"))
    (point,) = page.all("circle", **{"class": "kpi-point"})
    svg = page.all("svg")[0]
    assert 0 < float(str(point["cy"])) < float(str(svg["height"]))
    assert 0 < float(str(point["cx"])) < float(str(svg["width"]))


# ---------------------------------------------------------------------------------------------------------
# Hard stop, escaping, offline, determinism


def test_a_failed_run_shows_the_hard_stop_first_and_escaped(failed_run: Run) -> None:
    text = render_report(failed_run.state)
    page = _Page(text)
    assert page.errors == []
    assert page.section_ids()[:2] == ["run", "hard-stop"]
    stop = _section(text, "hard-stop")
    visible = _visible(stop)
    assert HOSTILE in visible  # shown to the reader as text
    assert "iter1/anomalygen" in visible
    assert "job_rc" in visible
    assert "hard stop at iter1/anomalygen" in _visible(_section(text, "run"))
    assert "failed" in _visible(_section(text, "run"))
    assert len(page.all("circle", **{"class": "kpi-point"})) == 1
    error_bars = [b for b in page.all("rect", **{"class": "duration-bar"}) if b["data-seq"] == "5"]
    assert error_bars and error_bars[0]["fill"] != page.all("rect", **{"class": "duration-bar"})[0]["fill"]


def test_markup_from_the_state_never_becomes_markup(failed_run: Run) -> None:
    text = render_report(failed_run.state)
    assert "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; leakage" in text or (
        "&lt;script&gt;alert('x')&lt;/script&gt; &amp; leakage" in text
    )
    assert [tag for tag, _ in _Page(text).elements if tag == "script"] == []


def test_hostile_labels_in_extras_are_escaped_in_attributes_and_text(complete_run: Run) -> None:
    extras = {
        "training_rows_by_source": {"iter1": {'"><b>x</b>': 3}},
        "rca_gaps": {"iter1": [{"label": "<i>open</i>"}]},
    }
    text = render_report(complete_run.state, extras=extras)
    page = _Page(text)
    assert page.errors == []
    assert [tag for tag, _ in page.elements if tag in ("b", "i")] == []
    assert page.all("rect", **{"class": "bar-segment"})[0]["data-source"] == '"><b>x</b>'


def test_the_page_references_nothing_outside_itself(complete_run: Run, failed_run: Run) -> None:
    for state in (complete_run.state, failed_run.state):
        text = render_report(state, extras=EXTRAS)
        lowered = text.lower()
        for forbidden in ("http", "src=", "href=", "url(", "@import", "<link", "<script", "<img"):
            assert forbidden not in lowered, forbidden


def test_rendering_is_deterministic_and_independent_of_dict_order(complete_run: Run) -> None:
    state = complete_run.state
    first = render_report(state, extras=EXTRAS)
    shuffled = copy.deepcopy(state)
    shuffled["iterations"] = dict(reversed(list(state["iterations"].items())))
    extras = copy.deepcopy(EXTRAS)
    extras["training_rows_by_source"] = dict(reversed(list(EXTRAS["training_rows_by_source"].items())))
    assert render_report(shuffled, extras=extras) == first
    assert render_report(state, extras=EXTRAS) == first


# ---------------------------------------------------------------------------------------------------------
# write_report and bad input


def test_write_report_writes_the_file_atomically_and_reads_the_recorded_handoff(complete_run: Run) -> None:
    path = write_report(complete_run.rd, extras={"training_rows_by_source": EXTRAS["training_rows_by_source"]})
    assert path == complete_run.rd / REPORT_FILE
    first = path.read_bytes()
    assert (
        write_report(
            complete_run.rd, extras={"training_rows_by_source": EXTRAS["training_rows_by_source"]}
        ).read_bytes()
        == first
    )
    text = first.decode("utf-8")
    assert BEST_MODEL["checkpoint"] in _visible(_section(text, "handoff"))
    assert [p.name for p in complete_run.rd.iterdir() if p.name.startswith(".")] == []


def test_write_report_of_a_failed_run(failed_run: Run) -> None:
    text = write_report(failed_run.rd).read_text(encoding="utf-8")
    assert "hard-stop" in _Page(text).section_ids()


@pytest.mark.parametrize(
    ("extras", "named"),
    [
        ({"training_rows": {}}, "extras.training_rows"),
        ({"training_rows_by_source": {"iter_1": {"base": 3}}}, "extras.training_rows_by_source.iter_1"),
        ({"training_rows_by_source": {"iter1": {"base": -3}}}, "extras.training_rows_by_source.iter1.base"),
        ({"rca_gaps": {"baseline": [{"missed": 2}]}}, "extras.rca_gaps.baseline[0]"),
        ({"rca_gaps": {"baseline": [{"label": "open", "lowest": float("nan")}]}}, "extras.rca_gaps.baseline[0].lowest"),
        ({"sdg_and_mining": {"iter1": {"mined": "many"}}}, "extras.sdg_and_mining.iter1.mined"),
        ({"pool_share_used_pct": 140.0}, "extras.pool_share_used_pct"),
        ({"handoff": ["x"]}, "extras.handoff"),
    ],
)
def test_bad_extras_are_refused_naming_the_key_and_nothing_is_written(
    complete_run: Run, extras: dict[str, Any], named: str
) -> None:
    write_report(complete_run.rd)
    before = (complete_run.rd / REPORT_FILE).read_bytes()
    with pytest.raises(ConfigError) as caught:
        write_report(complete_run.rd, extras=extras)
    assert named in str(caught.value)
    assert "Fix:" in str(caught.value)
    assert (complete_run.rd / REPORT_FILE).read_bytes() == before


def test_every_bad_extra_is_reported_at_once(complete_run: Run) -> None:
    with pytest.raises(ConfigError) as caught:
        render_report(
            complete_run.state,
            extras={"x": 1, "pool_share_used_pct": -1, "training_rows_by_source": {"iter1": {"sdg": 1.5}}},
        )
    assert len(caught.value.problems) == 3


def test_a_missing_state_is_a_state_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        write_report(tmp_path)
    assert not (tmp_path / REPORT_FILE).exists()


def test_a_document_that_is_not_a_state_is_refused(complete_run: Run) -> None:
    state = complete_run.state
    del state["events"]
    with pytest.raises(StateError, match=r"state\.events"):
        render_report(state)
