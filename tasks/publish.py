"""The publish task: the end of a run uploads its deliverable when the config names an S3Bucket block."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.events import emit_event

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import PublishError
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.publish import publish_and_record

PUBLISH_FAILED_EVENT = "aoi-pipeline.publish.failed"


@task(name="publish-deliverable", cache_policy=NONE)
def publish_deliverable(config: PipelineConfig, layout: RunLayout) -> dict[str, Any] | None:
    """Publish (idempotently); None without a publish section. A failure is logged, emitted as a Prefect
    event (for automations) and re-raised, so the run fails with the deliverable intact in the workspace."""
    if config.publish is None:
        return None
    logger = get_run_logger()
    try:
        publication = publish_and_record(layout, config.publish)
    except PublishError as error:
        logger.error("%s", error)
        emit_event(
            PUBLISH_FAILED_EVENT,
            resource={"prefect.resource.id": f"aoi-pipeline.run.{layout.root.name}"},
            payload={"run_dir": str(layout.root), "message": error.render()},
        )
        raise
    logger.info("%s", publication.summary())
    return {"destination": publication.destination, "uploaded": list(publication.uploaded)}
