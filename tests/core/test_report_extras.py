"""The report extras model: valid extras come back typed, and every bad value is named with its fix."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest

from aoi_pipeline.core.report_extras import EXTRAS_KEYS, ReportExtras
from aoi_pipeline.errors import ConfigError


def test_valid_extras_are_kept_and_absent_or_none_keys_read_as_none() -> None:
    extras = ReportExtras.checked(
        MappingProxyType(
            {
                "training_rows_by_source": {"iter1": {"base": 480, "sdg": 20}},
                "rca_gaps": {"baseline": ({"label": "short", "missed": 2, "lowest": 0.12, "extra": "kept out"},)},
                "sdg_and_mining": {"iter1": {"sdg_generated": 20, "mining_share": 12.5}},
                "pool_share_used_pct": 100,
                "handoff": None,
            }
        )
    )
    assert extras.training_rows_by_source == {"iter1": {"base": 480, "sdg": 20}}
    assert extras.rca_gaps == {"baseline": [{"label": "short", "missed": 2, "lowest": 0.12}]}
    assert extras.sdg_and_mining == {"iter1": {"sdg_generated": 20.0, "mining_share": 12.5}}
    assert extras.pool_share_used_pct == 100.0
    assert extras.handoff is None
    assert ReportExtras.checked(None) == ReportExtras()


@pytest.mark.parametrize(
    ("extras", "where", "what", "fix"),
    [
        ({"rows": {}}, "extras.rows", "unknown key", "use only " + ", ".join(EXTRAS_KEYS)),
        ({"rca_gaps": {"iter0": []}}, "extras.rca_gaps.iter0", "'iter0' is not an iteration label", "iter<N>"),
        (
            {"training_rows_by_source": {"iter1": {"base": True}}},
            "extras.training_rows_by_source.iter1.base",
            "True",
            "non-negative integer",
        ),
        ({"rca_gaps": {"iter1": [{"label": "  "}]}}, "extras.rca_gaps.iter1[0].label", "'  '", "defect type text"),
        (
            {"rca_gaps": {"iter1": [{"label": "open"}, {}]}},
            "extras.rca_gaps.iter1[1].label",
            "is missing",
            "under 'label'",
        ),
        (
            {"sdg_and_mining": {"iter1": {"mined": math.inf}}},
            "extras.sdg_and_mining.iter1.mined",
            "finite number",
            "finite numbers",
        ),
        ({"pool_share_used_pct": math.nan}, "extras.pool_share_used_pct", "nan", "resolved pool"),
    ],
)
def test_each_bad_value_names_the_place_what_is_wrong_and_the_fix(
    extras: dict, where: str, what: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ReportExtras.checked(extras)
    (problem,) = caught.value.problems
    assert problem.where == where
    assert what in problem.what
    assert fix in problem.fix


def test_extras_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(ConfigError, match="extras: must be a mapping, got list"):
        ReportExtras.checked([("handoff", {})])
