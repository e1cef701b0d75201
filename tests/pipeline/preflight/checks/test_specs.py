"""Spec checks: the KPI target, the base spec and the trial specs, named by the config key behind them."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.core.search_space import SearchParam
from aoi_pipeline.pipeline.preflight.checks.specs import batch_sizes, corner


def test_an_unknown_search_key_names_the_config_key_and_the_closest_spec_key(ws: Path, preflight, read) -> None:
    space = {"train.optim.lrr": {"low": 1e-5, "high": 1e-3, "log": True}}

    report = preflight(ws, phase1={"search_space": space})

    found = read.blockers_at(report, 'phase1.search_space["train.optim.lrr"]')
    assert len(found) == 1
    assert "train.optim.lr " in found[0].fix
    read.assert_actionable(found)


def test_a_search_range_outside_the_spec_bounds_is_a_blocker(ws: Path, preflight, read) -> None:
    # The class weight of defects must stay within 1..100; the upper corner of this range leaves it.
    space = {"train.classify.cls_weight[1]": {"low": 2.0, "high": 500.0}}

    report = preflight(ws, phase3={"search_space": space})

    found = read.blockers_at(report, 'phase3.search_space["train.classify.cls_weight[1]"]')
    assert found and "500" in found[0].what


def test_a_bad_spec_override_names_the_config_key(ws: Path, preflight, read) -> None:
    report = preflight(ws, spec_overrides=["train.optim.nope=1"])

    found = read.blockers_at(report, "spec_overrides")
    assert found and "train.optim.nope" in found[0].where


def test_sweeping_an_overridden_key_warns(ws: Path, preflight) -> None:
    space = {"train.optim.lr": {"low": 1e-5, "high": 1e-3, "log": True}}

    report = preflight(ws, spec_overrides=["train.optim.lr=0.001"], phase1={"search_space": space})

    assert report.ok
    assert any("spec_overrides also sets" in w and "phase1.search_space" in w for w in report.warnings)


def test_an_invalid_kpi_target_is_a_blocker(ws: Path, preflight, read) -> None:
    report = preflight(ws, kpi_target="FAR below five")

    assert read.blockers_at(report, "kpi_target")
    assert report.plan["kpi_target"] is None


def test_the_corners_of_a_range_are_its_ends_and_a_list_its_first_and_last_choice() -> None:
    number = SearchParam(key="k", kind="int", low=2.0, high=8.0)
    choice = SearchParam(key="c", kind="categorical", choices=("a", "b", "c"))

    assert (corner(number, high=False), corner(number, high=True)) == (2, 8)
    assert (corner(choice, high=False), corner(choice, high=True)) == ("a", "c")


def test_without_phase1_the_baseline_trains_with_the_base_spec_batch(ws: Path, make_config) -> None:
    config = make_config(ws, phase1={"enabled": False}, phase3={"batch_size": 6})
    base = {"dataset": {"classify": {"batch_size": 12}}}

    assert batch_sizes(config, base) == {
        "phase3.batch_size": 6,
        "base spec dataset.classify.batch_size (baseline training)": 12,
    }
    assert batch_sizes(config, None)["base spec dataset.classify.batch_size (baseline training)"] == 2
