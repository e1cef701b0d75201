"""The run report: written from what the run directory records, naming the same deliverable as best_model.json.

Runs are built with the handoff tests' builders (the state's own commits); the page is read back as a reader
sees it (tags stripped, entities decoded).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import test_handoff as built

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.core.run_report import LEGACY_REPORT_FILE, RUN_REPORT_FILE
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.handoff import write_deployment_handoff
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout
from aoi_pipeline.pipeline.run_report import write_run_report
from aoi_pipeline.pipeline.trials import TRIAL_FILE, TrialOutcome

OBJECTIVE = "FAR@100% recall on validation"


class _Text(HTMLParser):
    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.feed(fragment)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.parts.append(data.strip())


def visible(fragment: str) -> str:
    return " ".join(_Text(fragment).parts)


def section(page: str, section_id: str) -> str:
    """A top-level section of the page (sections nested in it included)."""
    start = page.index(f'<section id="{section_id}">')
    following = [
        page.find(f'<section id="{name}">', start + 1) for name in ("approval", "phase1", "phase2", "phase3", "handoff")
    ]
    ends = [index for index in following if index > start]
    return page[start : min(ends) if ends else len(page)]


def write_trials(layout: RunLayout, phase: str, values: list[float | None]) -> None:
    for number, value in enumerate(values):
        directory = layout.trial_dir(phase, number)
        directory.mkdir(parents=True, exist_ok=True)
        outcome = TrialOutcome(
            number=number,
            params={"train.optim.lr": 0.001 * (number + 1)},
            state="complete" if value is not None else "failed",
            far_pct=value,
            recall_pct=100.0,
            threshold=0.5,
            val_loss=0.2,
            checkpoint=None,
            train_spec_path=None,
            inference_csv=None,
            duration_s=65.0,
            reason="" if value is not None else "job exited 1",
        )
        (directory / TRIAL_FILE).write_text(json.dumps(outcome.to_record()), encoding="utf-8")


def finished_run(tmp_path: Path, final_far: float) -> RunLayout:
    """Phase 2 ended at the baseline (5 % KPI FAR); Phase 3's winner scored `final_far`; handoff written."""
    layout, _ = built.finished_phase2(tmp_path, baseline_far=5.0)
    phase3_spec = baseline_spec()
    built.register_final_automl(layout, built.metric_result(final_far, 0.25), phase3_spec)
    write_deployment_handoff(layout)
    PipelineRecord(layout).mark("handoff", "complete")
    return layout


@pytest.mark.parametrize(("final_far", "winner"), [(1.0, FINAL_AUTOML), (7.0, BASELINE)])
def test_the_report_names_the_model_best_model_json_names(tmp_path: Path, final_far: float, winner: str) -> None:
    layout = finished_run(tmp_path, final_far)
    page = write_run_report(layout, objective=OBJECTIVE).read_text(encoding="utf-8")

    record = json.loads(layout.best_model.read_text(encoding="utf-8"))
    assert record["iteration"] == winner
    handoff = visible(section(page, "handoff"))
    value = f"{record['metric_result']['value']:g}%"
    assert f"Deliverable {winner} (" in handoff and f": {value} on the KPI set" in handoff
    assert record["checkpoint"] in handoff
    assert "names this model" in handoff and "out of date" not in handoff
    assert f"Deliverable {winner} (" in visible(section(page, "summary"))
    verdict = visible(section(page, "phase3"))
    if winner == FINAL_AUTOML:
        assert "it is the deliverable" in verdict and "-4 pp" in verdict
    else:
        assert "did not beat Phase 2's best, which stands" in verdict and "+2 pp" in verdict


def test_a_best_model_json_written_before_phase3_won_is_shown_as_out_of_date(tmp_path: Path) -> None:
    layout, _ = built.finished_phase2(tmp_path, baseline_far=5.0)  # best_model.json names the baseline
    built.register_final_automl(layout, built.metric_result(1.0, 0.25), baseline_spec())

    page = write_run_report(layout, objective=OBJECTIVE).read_text(encoding="utf-8")

    handoff = visible(section(page, "handoff"))
    assert f"Deliverable {FINAL_AUTOML} (" in handoff
    assert "names baseline" in handoff and "out of date" in handoff


def test_the_trials_table_and_history_show_every_trial_in_percentage_points(tmp_path: Path) -> None:
    layout, _ = built.finished_phase2(tmp_path, baseline_far=5.0)
    write_trials(layout, "phase1", [12.5, None, 11.0])
    PipelineRecord(layout).mark("phase1", "complete", trial=2, far_pct=11.0)

    page = write_run_report(layout, objective=OBJECTIVE).read_text(encoding="utf-8")

    # pipeline_state.json records Phase 1 done; the first phase it has not closed is the 1->2 handoff
    assert "Status in progress (handoff_1_2)" in visible(section(page, "summary"))
    phase1 = section(page, "phase1")
    assert OBJECTIVE in visible(phase1)
    assert "Winner: trial 2 at 11% (its checkpoint is Phase 2's baseline)." in visible(phase1)
    assert "3 trial(s) finished (2 complete, 1 failed)" in visible(phase1)
    rows = re.findall(r"<tr([^>]*)>(.*?)</tr>", phase1, re.S)[1:]
    cells = [[visible(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)] for _, row in rows]
    assert [row[:4] for row in cells] == [
        ["0", "complete", "12.5%", "+1.5 pp"],
        ["1", "failed: job exited 1", "—", "—"],
        ["2 ★ winner", "complete", "11%", "+0 pp"],
    ]
    assert cells[0][5] == "1m 05s" and cells[0][6] == "train.optim.lr=0.001"
    assert [attrs for attrs, _ in rows] == ["", "", ' class="best"']  # the winner is highlighted
    assert phase1.count('class="trial-point"') == 2 and phase1.count('class="trial-failed"') == 1
    assert 'class="best-so-far"' in phase1


def test_before_phase2_the_report_shows_the_plan_and_approval_and_says_what_is_not_recorded(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run_20260101_000000")
    layout.root.mkdir()
    approval = ApprovalRecord(
        decision="approve",
        reviewer="ana",
        comment="ok <b>go</b>",
        plan_hash="abc123",
        decided_at="2026-01-01T00:00:00+00:00",
        source="prefect-ui-or-cli",
    )
    layout.approval.write_text(approval.model_dump_json(), encoding="utf-8")
    layout.preflight.write_text("## 1. Host\n- <script>x</script>\n", encoding="utf-8")

    path = write_run_report(layout, objective=OBJECTIVE)

    page = path.read_text(encoding="utf-8")
    assert path.name == RUN_REPORT_FILE
    assert "<script>" not in page and "<b>go</b>" not in page
    shown = visible(section(page, "approval"))
    assert "ana" in shown and "abc123" in shown and "ok <b>go</b>" in shown and "## 1. Host" in shown
    assert "not recorded yet" in visible(section(page, "phase2"))
    assert "approved, not started" in visible(section(page, "summary"))
    legacy = (layout.root / LEGACY_REPORT_FILE).read_text(encoding="utf-8")
    assert f'href="{RUN_REPORT_FILE}"' in legacy and f"url={RUN_REPORT_FILE}" in legacy


def test_the_report_is_deterministic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    layout = finished_run(tmp_path, 1.0)
    first = write_run_report(layout, objective=OBJECTIVE).read_bytes()
    assert write_run_report(layout, objective=OBJECTIVE).read_bytes() == first
    assert [p.name for p in layout.root.iterdir() if p.name.startswith(".")] == []
    assert "http" not in first.decode("utf-8")  # self-contained: nothing is fetched


def test_an_unusable_state_raises_and_keeps_the_previous_report(tmp_path: Path) -> None:
    layout = finished_run(tmp_path, 1.0)
    before = write_run_report(layout, objective=OBJECTIVE).read_bytes()
    (layout.root / "deft_state.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(StateError):
        write_run_report(layout, objective=OBJECTIVE)
    assert (layout.root / RUN_REPORT_FILE).read_bytes() == before
