"""Checks of section 3: the container images the plan's jobs use, and what a missing one means."""

from __future__ import annotations

from collections.abc import Mapping

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import Problem
from aoi_pipeline.pipeline.preflight.checks.findings import Findings


def used_images(config: PipelineConfig) -> dict[str, str]:
    """The image of every job role the plan runs: embed and SDG only when DEFT iterations mine."""
    images = config.images
    used = {"train": images.train, "inference": images.inference}
    if config.deft.max_iterations > 0:
        used |= {"embed": images.embed, "sdg": images.sdg}
    return used


def missing_images(statuses: Mapping[str, bool | None]) -> list[str]:
    return [uri for uri, present in statuses.items() if present is False]


def check_images(statuses: Mapping[str, bool | None], environ: Mapping[str, str]) -> Findings:
    """A missing image is pulled after approval; air-gapped it blocks, and nvcr.io without NGC_KEY warns."""
    missing = missing_images(statuses)
    if not missing:
        return Findings()
    if environ.get("AIR_GAPPED") == "1":
        return Findings.of(
            Problem(f"image {uri}", "is missing and the machine is air-gapped", "load it with docker load")
            for uri in missing
        )
    if any(uri.startswith("nvcr.io/") for uri in missing) and not environ.get("NGC_KEY"):
        return Findings.of(warnings=["NGC_KEY is UNSET: pulling private nvcr.io images after approval may fail"])
    return Findings()
