"""Image checks: present or missing on docker, blocking only on an air-gapped machine."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.pipeline.preflight import StaticProbe
from aoi_pipeline.pipeline.preflight.checks.images import check_images


def test_docker_images_are_listed_present_or_missing_and_missing_is_no_blocker(
    ws: Path, preflight, make_config, read
) -> None:
    config = make_config(ws, platform="docker")
    probe = StaticProbe(present_images=[config.images.train])

    report = preflight(
        ws, platform="docker", probe=probe, images={"inference": "example.org/infer:1"}, deft={"max_iterations": 0}
    )

    images = read.section(report, 3)
    assert f"| train | {config.images.train} | PRESENT |" in images
    assert "| inference | example.org/infer:1 | MISSING |" in images
    assert report.ok
    # Without DEFT iterations no embed or SDG job runs, so their images are not asked about.
    assert sorted(probe.questions("image")) == sorted([config.images.train, "example.org/infer:1"])


def test_a_missing_image_blocks_when_air_gapped_and_warns_without_an_ngc_key() -> None:
    statuses = {"nvcr.io/nvidia/tao:1": False, "here:1": True, "unknown:1": None}

    air_gapped = check_images(statuses, {"AIR_GAPPED": "1"})
    online = check_images(statuses, {})
    with_key = check_images(statuses, {"NGC_KEY": "k"})

    assert [p.where for p in air_gapped.blockers] == ["image nvcr.io/nvidia/tao:1"]
    assert not online.blockers and "NGC_KEY is UNSET" in online.warnings[0]
    assert not with_key.blockers and not with_key.warnings
