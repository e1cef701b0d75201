"""The `deft-nightly` deployment in prefect.yaml runs the nightly flow with parameters it accepts."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _deployment() -> dict:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    (nightly,) = [entry for entry in deployments if entry["name"] == "deft-nightly"]
    return nightly


def test_the_nightly_deployment_runs_the_nightly_flow_one_at_a_time_on_a_paused_schedule() -> None:
    import flows.nightly

    nightly = _deployment()
    module, function = nightly["entrypoint"].split(":")
    assert module == "flows.nightly" and getattr(flows.nightly, function) is flows.nightly.deft_nightly
    assert nightly["concurrency_limit"] == 1
    (schedule,) = nightly["schedules"]
    assert schedule["active"] is False  # activated once a policy is approved (README, "Nightly runs")
    assert "preapproved_plan_hash" not in nightly["parameters"]


def test_its_parameters_validate_against_the_flow(tmp_path: Path) -> None:
    from flows.nightly import deft_nightly

    params = {**_deployment()["parameters"], "config": {"workspace": str(tmp_path)}}
    validated = deft_nightly.validate_parameters(params)
    assert validated["budget"].iterations == 2
    assert validated["approval_timeout_minutes"] == 720
