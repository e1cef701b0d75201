"""The pre-flight task: run every read-only check and publish the plan to Prefect and the terminal."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.pipeline.preflight import PreflightReport, run_preflight


@task(name="pre-flight", cache_policy=NONE)
def preflight(config: PipelineConfig, run_name: str) -> PreflightReport:
    """The nine-section plan, as a markdown artifact and in the run log; writes nothing to disk."""
    report = run_preflight(config, run_name=run_name)
    create_markdown_artifact(
        report.markdown(),
        key="aoi-preflight",
        description=f"Pre-flight of {run_name} (plan {report.plan_hash})",
    )
    get_run_logger().info("\n%s", report.text())
    return report
