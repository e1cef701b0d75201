"""Dataset checks: rows, labels and leakage of every set, and a mining pool that blocks only when mined."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.pipeline.preflight.checks.data import check_data

POOL = Path("augmentation") / "mining_pool" / "mining_pool.csv"


def test_the_dataset_section_shows_rows_labels_and_zero_leakage_for_every_pair(ws: Path, preflight, read) -> None:
    datasets = read.section(preflight(ws), 4)

    # write_workspace puts 4 tiles (one board) in each set.
    for name, file in (
        ("training", "training_set.csv"),
        ("kpi", "testing_set.csv"),
        ("mining_pool", "mining_pool.csv"),
    ):
        assert any(
            line.startswith(f"| {name} |") and file in line and "| 4 |" in line for line in datasets.splitlines()
        )
    pairs = [line for line in datasets.splitlines() if " / " in line and line.startswith("|")]
    assert len(pairs) == 6  # every pair of the four sets
    assert all(line.endswith("| 0 |") for line in pairs)
    assert "KPI label distribution: PASS 3 (75.0%)" in datasets


def test_a_missing_csv_is_a_blocker_and_the_other_sets_are_still_shown(ws: Path, preflight, read) -> None:
    (ws / "train" / "base" / "validation_set.csv").unlink()

    report = preflight(ws)

    assert not report.ok
    found = read.blockers_at(report, "validation_set.csv")
    assert found
    read.assert_actionable(found)
    datasets = read.section(report, 4)
    assert any(line.startswith("| training |") and "| 4 |" in line for line in datasets.splitlines())
    assert any(line.startswith("| validation |") and "missing" in line for line in datasets.splitlines())
    assert "Not ready for approval" in read.section(report, 9)
    assert "Not ready for approval" in report.text()


def test_leakage_between_training_and_validation_is_a_blocker_and_counted(ws: Path, preflight, read) -> None:
    training = ws / "train" / "base" / "training_set.csv"
    validation = ws / "train" / "base" / "validation_set.csv"
    first_training_row = training.read_text(encoding="utf-8").splitlines()[1]
    validation.write_text(validation.read_text(encoding="utf-8") + first_training_row + "\n", encoding="utf-8")

    report = preflight(ws)

    leaks = [p for p in report.blockers if "same sample" in p.what and "validation" in p.what]
    assert len(leaks) == 1
    assert str(training) in leaks[0].where
    read.assert_actionable(leaks)
    assert "| training / validation | 1 |" in read.section(report, 4)


def test_a_missing_mining_pool_blocks_only_when_the_loop_mines(ws: Path, preflight, read) -> None:
    pool = ws / POOL
    pool.unlink()

    without_loop = preflight(ws, deft={"max_iterations": 0})
    with_loop = preflight(ws, deft={"max_iterations": 2})

    assert without_loop.ok
    assert "| mining_pool |" in read.section(without_loop, 4) and "absent" in read.section(without_loop, 4)
    assert read.blockers_at(with_loop, str(pool))


def test_a_pool_without_rows_is_a_warning_without_the_loop_and_a_blocker_with_it(ws: Path, preflight, read) -> None:
    pool = ws / POOL
    pool.write_text(pool.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")

    without_loop = preflight(ws, deft={"max_iterations": 0})
    with_loop = preflight(ws, deft={"max_iterations": 1})

    assert without_loop.ok
    assert any("no rows" in warning for warning in without_loop.warnings)
    assert read.blockers_at(with_loop, str(pool))


def test_a_failed_check_still_counts_leakage_between_the_readable_sets(ws: Path) -> None:
    (ws / "kpi" / "testing_set.csv").unlink()
    config = config_from_mapping({"workspace": str(ws)})

    data, found = check_data(config, Workspace.at(ws), batch_size=2)

    assert [row.status for row in data.sets] == ["", "", "missing", "not resolved"]
    assert data.leakage == {("training", "validation"): 0}
    assert found.blockers and not found.warnings
