"""Host checks: where the run writes, whether the platform answers, whether the runtime can start."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.pipeline.preflight import StaticProbe
from aoi_pipeline.pipeline.preflight.checks.host import check_platform, check_runtime


def test_a_missing_reference_runtime_is_a_blocker_telling_how_to_install_it(ws: Path, preflight, read) -> None:
    probe = StaticProbe(commands=())

    report = preflight(ws, probe=probe)

    found = read.blockers_at(report, "runtime")
    assert len(found) == 1
    assert found[0].fix == "install the reference extra: pip install 'aoi-pipeline[reference]'"
    assert probe.questions("command") == ["aoi-changenet"]
    assert "`aoi-changenet` MISSING" in read.section(report, 1)


def test_the_tao_runtime_needs_visual_changenet(ws: Path, preflight, read) -> None:
    probe = StaticProbe(commands=("aoi-changenet",))

    report = preflight(ws, probe=probe, runtime="tao")

    assert probe.questions("command") == ["visual_changenet"]
    assert read.blockers_at(report, "runtime")


def test_an_unreachable_platform_is_a_blocker(ws: Path, preflight, read) -> None:
    report = preflight(ws, platform="docker", probe=StaticProbe(reachability=(False, "docker is not on PATH")))

    found = read.blockers_at(report, "platform docker")
    assert found and "docker is not on PATH" in found[0].what
    assert "docker: UNREACHABLE (docker is not on PATH)" in read.section(report, 1)


def test_a_remote_runtime_and_a_local_platform_are_not_checked() -> None:
    assert check_runtime("tao", None) == []
    assert check_platform("local", None) == []
    assert check_platform("slurm", (True, "sinfo answers")) == []


def test_deft_iterations_need_the_results_root_inside_the_workspace(ws: Path, preflight) -> None:
    outside = str(ws.parent / "elsewhere")
    report = preflight(ws, results_root=outside, deft={"max_iterations": 1})
    blocker = next(problem for problem in report.blockers if problem.where == "results_root")
    assert outside in blocker.what and "workspace-relative" in blocker.what
    assert "inside the workspace" in blocker.fix
    # Without DEFT iterations nothing is written relative to the workspace, so any results root will do.
    assert preflight(ws, results_root=outside, deft={"max_iterations": 0}).ok


def test_without_a_publish_section_no_bucket_is_probed(ws: Path, preflight, read) -> None:
    probe = StaticProbe()

    report = preflight(ws, probe=probe)

    assert probe.questions("bucket") == []
    assert "- Publishing: none" in read.section(report, 1)


def test_a_reachable_publish_bucket_is_shown_with_the_version_folder(ws: Path, preflight, read) -> None:
    probe = StaticProbe(bucket=(True, "s3://aoi-models via block 'aoi-models' reachable (read-only HEAD)"))

    report = preflight(ws, probe=probe, publish={"bucket_block": "aoi-models", "prefix": "line7"})

    assert probe.questions("bucket") == ["aoi-models"]
    assert report.ok, report.blockers
    assert "- Publishing: `line7/run_20250101_000000/` in s3://aoi-models via block" in read.section(report, 1)


def test_an_unreachable_publish_bucket_blocks_the_run_before_approval(ws: Path, preflight, read) -> None:
    probe = StaticProbe(bucket=(False, "the S3 endpoint cannot be reached (EndpointConnectionError)"))

    report = preflight(ws, probe=probe, publish={"bucket_block": "aoi-models"})

    found = read.blockers_at(report, "publish.bucket_block")
    assert len(found) == 1 and "EndpointConnectionError" in found[0].what
    read.assert_actionable(found)
    assert "UNREACHABLE bucket" in read.section(report, 1)


def test_a_workspace_locked_by_a_live_run_is_a_blocker_naming_the_holder(ws: Path, preflight, read) -> None:
    from aoi_pipeline.core.lock import WorkspaceLock

    with WorkspaceLock(ws, owner="aoi-pipeline run_night"):
        report = preflight(ws)

    found = read.blockers_at(report, ".aoi-pipeline.lock")
    assert len(found) == 1 and "run_night" in found[0].what
    read.assert_actionable(found)
    assert not preflight(ws).blockers, "the lock is released, the blocker goes with it"


def test_a_lock_left_by_a_dead_run_is_no_blocker(ws: Path, preflight) -> None:
    import json
    import socket

    lock = {"pid": 2**22 + 7, "hostname": socket.gethostname(), "started_at": "2020-01-01T00:00:00+00:00", "owner": ""}
    (ws / ".aoi-pipeline.lock").write_text(json.dumps(lock), encoding="utf-8")

    assert not preflight(ws).blockers
