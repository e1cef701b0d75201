"""`aoi-pipeline nightly history|policy|revoke` on a results root's nightly directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aoi_pipeline.cli import EXIT_INVALID_INPUT, EXIT_OK, main
from aoi_pipeline.core.nightly_history import NightRecord, append_night
from aoi_pipeline.core.nightly_policy import NightlyBudget, NightlyPolicy, approve_policy, read_policy_approval


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "workspace").mkdir()
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"workspace": "workspace"}), encoding="utf-8")
    return path


def _nightly(config: Path) -> Path:
    return config.parent / "workspace" / "results" / "nightly"


def test_history_prints_one_line_per_night_and_json_on_request(config: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["nightly", "history", "--config", str(config)]) == EXIT_OK
    assert "No night has run yet." in capsys.readouterr().out
    append_night(_nightly(config), NightRecord("nightly_1", "t1", "trained", rows_added={"pool": 4}, kpi_before=3.0))
    append_night(_nightly(config), NightRecord("nightly_2", "t2", "skipped: nothing new"))
    assert main(["nightly", "history", "--config", str(config)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("night") and "pool 4" in lines[1] and "skipped: nothing new" in lines[2]
    assert main(["nightly", "history", "--config", str(config), "--json", "--limit", "1"]) == EXIT_OK
    assert [row["night"] for row in json.loads(capsys.readouterr().out)] == ["nightly_2"]


def test_revoke_marks_the_policy_and_policy_shows_it(config: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["nightly", "revoke", "--config", str(config), "--reviewer", "carol"]) == EXIT_INVALID_INPUT
    assert "nothing to revoke" in capsys.readouterr().err
    budget = NightlyBudget(gpu_hours=2.0, iterations=1, pool_share=0.5, phase3=False)
    approve_policy(
        _nightly(config), NightlyPolicy("local", {"train": "t"}, "FAR < 5%", budget), reviewer="a", comment=""
    )
    assert main(["nightly", "policy", "--config", str(config)]) == EXIT_OK
    assert "approved by a" in capsys.readouterr().out
    assert main(["nightly", "revoke", "--config", str(config), "--reviewer", "carol", "--reason", "retooled"]) == 0
    assert "the next night waits" in capsys.readouterr().out
    revoked = read_policy_approval(_nightly(config))
    assert revoked is not None and revoked.revoked is not None
    assert (revoked.revoked["by"], revoked.revoked["reason"]) == ("carol", "retooled")
    assert main(["nightly", "policy", "--config", str(config)]) == EXIT_OK
    assert "REVOKED" in capsys.readouterr().out
