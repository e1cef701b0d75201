"""Approve, reject and watch pipeline runs on a Prefect server: the CLI's and notebooks' control API.

Every function is synchronous and works the same in a script, a terminal and a Jupyter kernel (where
Prefect's dual sync/async functions would otherwise hand back coroutines): each call runs Prefect's async
client on a private event loop in a worker thread. `waiting_plan` reads the plan a paused run waits on (hash
and one-line summary, recorded by the gate before it paused), so a reviewer sees what a decision is about and
never types a hash; the gate binds the decision to that plan. A run is found by name or id on the server,
whatever its age.
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

from aoi_pipeline.approval import PLAN_INPUT_KEY
from aoi_pipeline.errors import AoiPipelineError

FLOW_NAME = "aoi-pipeline"
T = TypeVar("T")


@dataclass(frozen=True)
class WaitingPlan:
    """The plan a paused run waits on."""

    plan_hash: str
    summary: str


class LimitTooLarge(AoiPipelineError):
    """A listing asked the server for more runs than it returns at once."""


@dataclass(frozen=True)
class RunInfo:
    """One pipeline flow run as the server sees it."""

    id: UUID
    name: str
    state: str
    state_type: str
    started: datetime | None
    ui_url: str | None
    message: str = ""

    @property
    def paused(self) -> bool:
        return self.state_type == "PAUSED"


def _in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, also from inside a running event loop (Jupyter)."""
    # The caller's context (Prefect settings, e.g. a test harness's API URL) travels into the thread.
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, lambda: asyncio.run(factory())).result()


async def _runs(limit: int, paused_only: bool, run: str | None) -> list[RunInfo]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_UI_URL

    run_filter = FlowRunFilter()
    if paused_only:
        run_filter.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    if run is not None:
        # By id or by name, on the server: a run of any age is found, not only among the newest.
        try:
            run_filter.id = FlowRunFilterId(any_=[UUID(run)])
        except ValueError:
            run_filter.name = FlowRunFilterName(any_=[run])
    async with get_client() as client:
        try:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                flow_run_filter=run_filter,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            )
        except PrefectHTTPStatusError as error:
            if error.response.status_code != 422 or "limit" not in error.response.text:
                raise
            raise LimitTooLarge.at(
                f"--limit {limit}", f"the server refused it: {error.response.json().get('detail')}", "ask for fewer"
            ) from None
    ui = PREFECT_UI_URL.value()
    return [
        RunInfo(
            id=found.id,
            name=found.name,
            # A State's validator names it after its type, so a stored state always has a name.
            state=cast(str, found.state.name) if found.state else "unknown",
            state_type=found.state.type.value if found.state else "UNKNOWN",
            started=found.start_time,
            ui_url=f"{ui}/runs/flow-run/{found.id}" if ui else None,
            message=(found.state.message or "") if found.state else "",
        )
        for found in runs
    ]


def list_runs(limit: int = 10, *, paused_only: bool = False, run: str | None = None) -> list[RunInfo]:
    """The newest pipeline runs (or only those waiting for approval, or those named `run`), newest first."""
    if limit < 1:
        raise LimitTooLarge.at(f"--limit {limit}", "is below 1", "ask for at least one run")
    return _in_thread(lambda: _runs(limit, paused_only, run))


def find_run(run: str | None) -> RunInfo:
    """A paused run by id or name, or the newest paused run when `run` is None."""
    matches = list_runs(limit=1, paused_only=True, run=run)
    if not matches:
        what = "no pipeline run is waiting for approval" if run is None else f"no paused run {run!r}"
        raise AoiPipelineError.at(
            "aoi-pipeline approve",
            what,
            "list runs with `aoi-pipeline status`; start one with `aoi-pipeline run`",
        )
    return matches[0]


async def _waiting_plan(run_id: UUID) -> WaitingPlan:
    from prefect.input.actions import read_flow_run_input

    bound = await read_flow_run_input(PLAN_INPUT_KEY, flow_run_id=run_id)
    try:
        return WaitingPlan(plan_hash=str(bound["plan_hash"]), summary=str(bound.get("summary", "")))
    except (TypeError, KeyError):
        raise AoiPipelineError.at(
            f"flow run {run_id}",
            "is paused, but not on the plan approval form",
            "resume it from the Prefect UI",
        ) from None


def waiting_plan(run: RunInfo) -> WaitingPlan:
    """The plan (hash and one-line summary) a paused run waits on."""
    return _in_thread(lambda: _waiting_plan(run.id))


async def _resume(run_id: UUID, run_input: dict[str, Any]) -> None:
    from prefect.flow_runs import resume_flow_run

    # Called from a coroutine, resume_flow_run returns its coroutine.
    await cast("Coroutine[Any, Any, None]", resume_flow_run(run_id, run_input=run_input))


def decide(
    run: str | RunInfo | None,
    *,
    reviewer: str,
    comment: str = "",
    reject: bool = False,
    plan_hash: str | None = None,
) -> RunInfo:
    """Approve (or reject) the plan a paused run waits on; returns the run that was decided.

    With `plan_hash`, the decision is taken only if the run still waits on exactly that plan.
    """
    if not reviewer.strip():
        raise AoiPipelineError.at("--reviewer", "is empty", "give the reviewer's name; it is recorded")
    info = run if isinstance(run, RunInfo) else find_run(run)
    waiting = waiting_plan(info)
    if plan_hash is not None and plan_hash != waiting.plan_hash:
        raise AoiPipelineError.at(
            f"flow run {info.name}",
            f"waits on plan {waiting.plan_hash}, not on {plan_hash}",
            "check the plan the run shows and decide on that one",
        )
    answer = {"decision": "reject" if reject else "approve", "reviewer": reviewer, "comment": comment}
    try:
        _in_thread(lambda: _resume(info.id, answer))
    except RuntimeError as error:
        raise AoiPipelineError.at(
            f"flow run {info.name} ({info.id})", f"the server refused the decision: {error}", "check the form"
        ) from None
    return info
