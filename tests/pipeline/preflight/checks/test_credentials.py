"""Credential checks: required variables by name, one of a group, SET/UNSET only."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.pipeline.preflight.checks.credentials import credential_status


def test_over_ssh_unset_slurm_credentials_are_blockers(ws: Path, preflight, read) -> None:
    report = preflight(ws, platform="slurm", environ={"SLURM_HOSTNAME": "login1"})

    names = {problem.where for problem in report.blockers if "environment variable" in problem.where}
    assert names == {"environment variable SLURM_USER", "environment variables SSH_KEY_PATH / SSH_AUTH_SOCK"}
    read.assert_actionable(report.blockers)
    assert "| SLURM_HOSTNAME | required by platform slurm | SET |" in read.section(report, 2)
    assert "| SLURM_USER | required by platform slurm | UNSET |" in read.section(report, 2)


def test_one_ssh_identity_satisfies_the_slurm_group(ws: Path, preflight) -> None:
    environ = {
        "SLURM_USER": "me",
        "SLURM_HOSTNAME": "login1",
        "SLURM_PARTITION": "gpu",
        "SSH_AUTH_SOCK": "/s",
    }

    report = preflight(ws, platform="slurm", environ=environ)

    assert not [p for p in report.blockers if "environment variable" in p.where]


def test_on_a_login_node_slurm_needs_no_variable_and_lists_the_ssh_one_as_optional(ws: Path, preflight, read) -> None:
    report = preflight(ws, platform="slurm", environ={})

    assert not [p for p in report.blockers if "environment variable" in p.where]
    assert "| SLURM_HOSTNAME | optional (platform slurm) | UNSET |" in read.section(report, 2)
    assert "SLURM_USER" not in read.section(report, 2)


def test_an_unset_credential_of_the_config_is_a_blocker_and_a_set_one_is_not(ws: Path, preflight) -> None:
    report = preflight(ws, credentials=["MODEL_TOKEN", "OTHER_TOKEN"], environ={"MODEL_TOKEN": "x"})

    assert [p.where for p in report.blockers] == ["environment variable OTHER_TOKEN"]


def test_an_empty_variable_counts_as_unset() -> None:
    assert credential_status({"TOKEN": ""}, "TOKEN") == "UNSET"
    assert credential_status({"TOKEN": "x"}, "TOKEN") == "SET"
    assert credential_status({}, "TOKEN") == "UNSET"
