"""One attempt of a pipeline run in its own process, for the fault-injection tests to SIGKILL.

`python pipeline_child.py CONFIG_JSON RUN_NAME [KILL_POINT]` runs the `aoi-pipeline` flow (pre-approved for
the plan the pre-flight shows) against the Prefect server named by PREFECT_API_URL, every job on the fake
runtime (or on the reference runtime with AOI_FAULTS_REAL_RUNTIME=1). A kill point makes the process
SIGKILL itself at a stage boundary, right after the write that ends it:
  commit:<label>/<stage>   after deft_state.json records that stage
  phase:<phase>            after pipeline_state.json records that phase as complete
A kill in the middle of a job is made by the test itself (the fake runtime's FAKE_RUNTIME_HANG).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

FAKE_RUNTIME = Path(__file__).resolve().parents[1] / "fake_runtime.py"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kill_point: str) -> None:
    """Patch the two state writers so the process dies right after the write that ends the kill point."""
    import aoi_pipeline.core.state as state_module
    from aoi_pipeline.pipeline.layout import PipelineRecord

    kind, _, target = kill_point.partition(":")
    if kind == "commit":
        write = state_module.atomic_write_text

        def write_then_die(path: Any, text: str) -> Any:
            result = write(path, text)
            recorded = json.loads(text).get("events") or [{}]
            last = recorded[-1]
            if f"{last.get('iter')}/{last.get('stage')}" == target and last.get("status") == "ok":
                _die()
            return result

        state_module.atomic_write_text = write_then_die  # type: ignore[assignment]
    elif kind == "phase":
        mark = PipelineRecord.mark

        def mark_then_die(self: PipelineRecord, name: str, status: str, **fields: Any) -> dict[str, Any]:
            result = mark(self, name, status, **fields)
            if name == target and status in ("complete", "skipped"):
                _die()
            return result

        PipelineRecord.mark = mark_then_die  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown kill point {kill_point!r}")


def _use_fake_runtime() -> None:
    import tasks.jobs
    from aoi_pipeline.jobs.gpu import GpuSlots
    from aoi_pipeline.jobs.local import LocalLauncher

    tasks.jobs._LAUNCHER = LocalLauncher(
        gpu_slots=GpuSlots([]), command_resolver=lambda job: [sys.executable, str(FAKE_RUNTIME), job.action]
    )


def main(argv: list[str]) -> int:
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.pipeline.preflight import run_preflight
    from flows.aoi_pipeline import aoi_pipeline

    config = config_from_mapping(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    run_name = argv[1]
    if len(argv) > 2 and argv[2]:
        _arm(argv[2])
    if os.environ.get("AOI_FAULTS_REAL_RUNTIME") != "1":
        _use_fake_runtime()
    plan = run_preflight(config, run_name=run_name).plan_hash
    result = aoi_pipeline(config=config, run_name=run_name, preapproved_plan_hash=plan)
    print(json.dumps({"status": result["status"], "iteration": result.get("iteration")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
