"""Reading TAO status.json lines: both KPI layouts, truncated files, repeated KPI dicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

from aoi_pipeline.jobs import StatusLine, final_status, read_status, validation_history


def write_lines(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + tail, encoding="utf-8")
    return path


def test_nested_and_flat_kpis_are_both_read_and_normalised(tmp_path):
    path = write_lines(
        tmp_path / "status.json",
        [
            {"date": "1/2/2026", "time": "10:0:1", "status": "STARTED", "message": "Starting Training Loop."},
            {
                "status": "RUNNING",
                "epoch": 0,
                "max_epoch": 1,
                "step": 12,
                "time_per_epoch": "0:00:03",
                "kpi": {"val_loss": 0.5, "val_far": "12.5", "bad": "n/a"},
            },
            {
                "status": "running",
                "epoch": 1.0,
                "max_epoch": "1",
                "val_loss": 0.25,
                "validation_accuracy": 0.9,
            },
        ],
    )

    lines = read_status(path)

    assert lines == [
        StatusLine("STARTED", "Starting Training Loop.", None, None, {}),
        StatusLine("RUNNING", "", 0, 1, {"val_loss": 0.5, "val_far": 12.5}),
        StatusLine("RUNNING", "", 1, 1, {"val_loss": 0.25, "val_acc": 0.9}),
    ]


def test_a_truncated_last_line_is_ignored(tmp_path):
    path = write_lines(
        tmp_path / "status.json",
        [{"status": "RUNNING", "epoch": 0, "kpi": {"val_loss": 1.0}}],
        tail='{"status": "RUNNING", "epoch": 1, "kpi": {"val_lo',
    )

    lines = read_status(path)

    assert [(line.epoch, dict(line.kpi)) for line in lines] == [(0, {"val_loss": 1.0})]


def test_a_missing_file_reads_as_no_lines(tmp_path):
    assert read_status(tmp_path / "absent.json") == []


def test_final_status_prefers_the_last_terminal_line_over_later_progress_lines():
    def line(status: str) -> StatusLine:
        return StatusLine(status, "", None, None, {})

    assert final_status([]) is None
    assert final_status([line("STARTED"), line("RUNNING")]) == "RUNNING"
    assert final_status([line("STARTED"), line("SUCCESS"), line("RUNNING")]) == "SUCCESS"
    assert final_status([line("FAILURE"), line("STARTED"), line("SUCCESS")]) == "SUCCESS"
    assert final_status([line("RUNNING"), line("FAILURE")]) == "FAILURE"


def test_validation_history_keeps_one_entry_per_validation(tmp_path):
    # The layout TAO writes, validating every second epoch: the model writes "Eval metrics generated." with
    # the KPIs but no epoch; the status callback then writes the epoch-end line (0-based current_epoch).
    # The logger keeps its last KPI dict and repeats it on every later line, so epochs 2 and 4 carry the
    # KPIs of epochs 1 and 3, and so do the end-of-training lines.
    first = {"val_loss": 0.7, "val_acc": 0.6, "val_fpr": 0.4}
    second = {"val_loss": 0.4, "val_acc": 0.8, "val_fpr": 0.2}

    def epoch_end(epoch: int, kpi: dict | None) -> dict:
        line = {"status": "RUNNING", "message": "Training loop in progress", "epoch": epoch, "max_epoch": 4}
        return line | ({"kpi": kpi} if kpi else {})

    records = [
        {"status": "STARTED", "message": "Starting Training Loop."},
        epoch_end(0, None),
        {"status": "RUNNING", "message": "Eval metrics generated.", "kpi": first},
        epoch_end(1, first),
        epoch_end(2, first),
        {"status": "RUNNING", "message": "Eval metrics generated.", "kpi": second},
        epoch_end(3, second),
        epoch_end(4, second),
        {"status": "RUNNING", "message": "Training loop complete.", "kpi": second},
        {"status": "SUCCESS", "message": "Train finished successfully.", "kpi": second},
    ]
    lines = read_status(write_lines(tmp_path / "status.json", records))

    assert validation_history(lines) == [(1, first), (3, second)]


def test_a_rewritten_epoch_keeps_its_last_values_and_history_is_in_epoch_order():
    lines = [
        StatusLine("RUNNING", "", 1, 3, {"val_loss": 0.9}),
        StatusLine("RUNNING", "", 0, 3, {"val_loss": 1.2}),
        StatusLine("RUNNING", "", 1, 3, {"val_loss": 0.8}),
    ]

    assert validation_history(lines) == [(0, {"val_loss": 1.2}), (1, {"val_loss": 0.8})]


def test_a_repeated_nan_loss_counts_once():
    lines = [
        StatusLine("RUNNING", "", 0, 2, {"val_loss": math.nan}),
        StatusLine("RUNNING", "", 1, 2, {"val_loss": math.nan}),
    ]

    history = validation_history(lines)

    assert [epoch for epoch, _ in history] == [0]
    assert math.isnan(history[0][1]["val_loss"])
