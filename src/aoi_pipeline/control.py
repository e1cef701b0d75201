"""Approve, reject and watch pipeline runs on a Prefect server: the CLI's and notebooks' control API.

Every function is synchronous and works the same in a script, a terminal and a Jupyter kernel (where
Prefect's dual sync/async functions would otherwise hand back coroutines): each call runs Prefect's async
client on a private event loop in a worker thread. `approve` reads the plan hash the paused run is waiting
on from the form's own schema, so a reviewer never types it and can only decide on the plan that is shown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from uuid import UUID

from aoi_pipeline.errors import AoiPipelineError

FLOW_NAME = "aoi-pipeline"
GATE_KEY = "plan-approval"
T = TypeVar("T")


@dataclass(frozen=True)
class RunInfo:
    """One pipeline flow run as the server sees it."""

    id: UUID
    name: str
    state: str
    state_type: str
    started: datetime | None
    ui_url: str | None

    @property
    def paused(self) -> bool:
        return self.state_type == "PAUSED"


def _in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, also from inside a running event loop (Jupyter)."""
    # The caller's context (Prefect settings, e.g. a test harness's API URL) travels into the thread.
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, lambda: asyncio.run(factory())).result()


async def _runs(limit: int, paused_only: bool) -> list[RunInfo]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_UI_URL

    run_filter = None
    if paused_only:
        run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=run_filter,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )
    ui = PREFECT_UI_URL.value()
    return [
        RunInfo(
            id=run.id,
            name=run.name,
            # A State's validator names it after its type, so a stored state always has a name.
            state=cast(str, run.state.name) if run.state else "unknown",
            state_type=run.state.type.value if run.state else "UNKNOWN",
            started=run.start_time,
            ui_url=f"{ui}/runs/flow-run/{run.id}" if ui else None,
        )
        for run in runs
    ]


def list_runs(limit: int = 10, *, paused_only: bool = False) -> list[RunInfo]:
    """The newest pipeline runs (or only those waiting for approval), newest first."""
    return _in_thread(lambda: _runs(limit, paused_only))


def find_run(run: str | None) -> RunInfo:
    """A paused run by id or name, or the newest paused run when `run` is None."""
    paused = list_runs(limit=50, paused_only=True)
    matches = [info for info in paused if run is None or run in (str(info.id), info.name)]
    if not matches:
        what = "no pipeline run is waiting for approval" if run is None else f"no paused run {run!r}"
        raise AoiPipelineError.at(
            "aoi-pipeline approve",
            what,
            "list runs with `aoi-pipeline status`; start one with `aoi-pipeline run`",
        )
    return matches[0]


async def _waiting_plan_hash(run_id: UUID) -> str:
    from prefect.input.actions import read_flow_run_input

    schema = await read_flow_run_input(f"paused-{GATE_KEY}-schema", flow_run_id=run_id)
    try:
        return str(schema["properties"]["plan_hash"]["default"])
    except (TypeError, KeyError):
        raise AoiPipelineError.at(
            f"flow run {run_id}",
            "is paused, but not on the plan approval form",
            "resume it from the Prefect UI",
        ) from None


async def _resume(run_id: UUID, run_input: dict[str, Any]) -> None:
    from prefect.flow_runs import resume_flow_run

    # Called from a coroutine, resume_flow_run returns its coroutine.
    await cast("Coroutine[Any, Any, None]", resume_flow_run(run_id, run_input=run_input))


def decide(run: str | None, *, reviewer: str, comment: str = "", reject: bool = False) -> RunInfo:
    """Approve (or reject) the plan a paused run waits on; returns the run that was decided."""
    if not reviewer.strip():
        raise AoiPipelineError.at("--reviewer", "is empty", "give the reviewer's name; it is recorded")
    info = find_run(run)
    plan_hash = _in_thread(lambda: _waiting_plan_hash(info.id))
    answer = {
        "decision": "reject" if reject else "approve",
        "reviewer": reviewer,
        "comment": comment,
        "plan_hash": plan_hash,
    }
    try:
        _in_thread(lambda: _resume(info.id, answer))
    except RuntimeError as error:
        raise AoiPipelineError.at(
            f"flow run {info.name} ({info.id})", f"the server refused the decision: {error}", "check the form"
        ) from None
    return info
