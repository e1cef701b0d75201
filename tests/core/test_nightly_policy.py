"""The nightly policy: its hash, what stays inside it, and the standing approval's file (approve, revoke)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from aoi_pipeline.core.nightly_policy import (
    NightlyBudget,
    NightlyPolicy,
    approve_policy,
    policy_breaches,
    read_policy_approval,
    revoke_policy,
    standing,
)
from aoi_pipeline.errors import ConfigError, StateError

BUDGET = NightlyBudget(gpu_hours=4.0, iterations=2, pool_share=0.25, phase3=False)
POLICY = NightlyPolicy("local", {"train": "tao:1", "sdg": "gen:1"}, "FAR < 5% at Recall=100%", BUDGET)


def _with(**changes: object) -> NightlyPolicy:
    return dataclasses.replace(POLICY, **changes)  # type: ignore[arg-type]


def test_the_hash_ignores_image_order_and_changes_with_any_value() -> None:
    reordered = _with(images={"sdg": "gen:1", "train": "tao:1"})
    assert reordered.hash == POLICY.hash
    assert _with(kpi_target="FAR < 4% at Recall=100%").hash != POLICY.hash
    assert _with(budget=dataclasses.replace(BUDGET, iterations=3)).hash != POLICY.hash


def test_a_smaller_budget_stays_inside_and_every_larger_axis_is_named() -> None:
    smaller = _with(budget=NightlyBudget(gpu_hours=1.0, iterations=1, pool_share=0.1, phase3=False))
    assert policy_breaches(POLICY, smaller) == []
    larger = _with(budget=NightlyBudget(gpu_hours=5.0, iterations=3, pool_share=0.5, phase3=True))
    breaches = policy_breaches(POLICY, larger)
    assert len(breaches) == 4 and all(line.startswith("a larger budget") for line in breaches)
    assert "Phase 3 on (approved off)" in breaches[-1]


def test_another_image_platform_or_target_leaves_the_policy() -> None:
    other = _with(platform="slurm", images={"train": "tao:2", "sdg": "gen:1"}, kpi_target="FAR < 1% at Recall=100%")
    breaches = policy_breaches(POLICY, other)
    assert breaches == [
        "another platform: 'slurm' (approved 'local')",
        "another image for train: 'tao:2' (approved 'tao:1')",
        "another KPI target: 'FAR < 1% at Recall=100%' (approved 'FAR < 5% at Recall=100%')",
    ]


def test_budget_values_out_of_range_are_refused() -> None:
    with pytest.raises(ConfigError, match="pool_share"):
        NightlyBudget(gpu_hours=1.0, iterations=1, pool_share=0.0, phase3=False)
    with pytest.raises(ConfigError, match="gpu_hours"):
        NightlyBudget(gpu_hours=0.0, iterations=1, pool_share=0.5, phase3=False)


def test_standing_needs_an_unrevoked_approval_and_no_data_breach(tmp_path: Path) -> None:
    assert standing(None, POLICY, []).reasons == ("no nightly policy is approved yet",)
    approval = approve_policy(tmp_path, POLICY, reviewer="alice", comment="ok")
    assert standing(approval, POLICY, []).inside
    assert standing(approval, POLICY, ["rows changed or removed in the kpi set"]).reasons == (
        "rows changed or removed in the kpi set",
    )
    revoked = revoke_policy(tmp_path, by="carol", reason="retooled")
    verdict = standing(revoked, POLICY, [])
    assert not verdict.inside and "revoked by carol" in verdict.reasons[0]
    assert read_policy_approval(tmp_path) == revoked


def test_a_hand_edited_policy_file_is_refused(tmp_path: Path) -> None:
    approve_policy(tmp_path, POLICY, reviewer="alice", comment="")
    path = tmp_path / "policy.json"
    raw = json.loads(path.read_text())
    raw["policy"]["budget"]["iterations"] = 9
    path.write_text(json.dumps(raw))
    with pytest.raises(StateError, match="edited by hand"):
        read_policy_approval(tmp_path)


def test_revoking_without_an_approval_says_so(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="nothing to revoke"):
        revoke_policy(tmp_path, by="carol", reason="")
