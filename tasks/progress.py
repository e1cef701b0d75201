"""Following a run: one progress line in the log and in a Prefect progress artifact, and the report's link.

`report_progress` logs where the run is (phase k/3, trial or iteration k/N, elapsed, measured time left) and
publishes the same line as the `aoi-run-progress` artifact, whose bar is the phase's share done. The clock
starts when the pipeline flow starts (`start_clock`); subflows run in the same process and share it.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_progress_artifact

from aoi_pipeline.core.progress import Progress

PROGRESS_KEY = "aoi-run-progress"
REPORT_KEY = "aoi-run-report"
_STARTED: list[float] = []


def start_clock() -> None:
    """The run's elapsed time counts from now (the start of the pipeline flow in this process)."""
    _STARTED[:] = [time.monotonic()]


def elapsed_s() -> float:
    return time.monotonic() - _STARTED[0] if _STARTED else 0.0


def report_progress(progress: Progress) -> None:
    line = progress.line()
    get_run_logger().info("progress: %s", line)
    create_progress_artifact(progress.share_pct, key=PROGRESS_KEY, description=line)


def link_report(path: Path) -> None:
    """A link artifact of the run to its report (a file URL: the report lives in the run directory)."""
    create_link_artifact(
        path.absolute().as_uri(),
        link_text=f"Run report ({path.parent.name})",
        key=REPORT_KEY,
        description="The whole run on one page: plan and approval, Phase 1, the DEFT loop, Phase 3, handoff",
    )
