"""Tasks of the nightly run: is another night running or paused, seed the deployed model, show the history.

Another night is found on the Prefect server: a flow run of the pipeline flow named `nightly_*`, other than
this one, that is running or paused (Prefect's `concurrency_limit` frees its slot while a run is paused, so the
slot alone does not tell). The history table artifact (`aoi-nightly-history`) is the history file rendered.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled

from aoi_pipeline.core.nightly_history import history_table, read_history
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.pipeline import handoff, run_steps
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.nightly import DeployedModel, deployed_as_trial

HISTORY_KEY = "aoi-nightly-history"
NIGHT_PREFIX = "nightly_"


@task(name="other-nights", cache_policy=NONE)
def other_nights(own_id: str | None) -> list[str]:
    """The other nights running or paused on the server (name and state)."""
    own = UUID(own_id) if own_id else None
    run_filter = FlowRunFilter(
        name=FlowRunFilterName(like_=NIGHT_PREFIX),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PAUSED])),
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=run_filter, limit=20)
    return [
        f"{run.name} ({run.state.name if run.state else '?'})"
        for run in runs
        if run.id != own and run.name.startswith(NIGHT_PREFIX)
    ]


@task(name="seed-deployed-model", cache_policy=NONE)
def seed_deployed(ctx: RunContext, base_spec: Spec, deployed: DeployedModel) -> Path:
    """Pre-seed the night's baseline with the deployed checkpoint (no retraining)."""
    get_run_logger().info("starting from the deployed model %s", deployed.describe())
    return handoff.handoff_phase1_to_phase2(
        layout=ctx.layout,
        base_spec=base_spec,
        winner=deployed_as_trial(deployed),
        contract=ctx.contract,
        max_iterations=ctx.deft.max_iterations,
        state_config=run_steps.state_config(ctx),
        summary=f"baseline train skipped: the deployed model {deployed.describe()}",
    )


@task(name="nightly-history", cache_policy=NONE)
def publish_history(nightly_dir: Path) -> None:
    """The history as the `aoi-nightly-history` table artifact."""
    nights = read_history(nightly_dir)
    create_table_artifact(
        history_table(nights), key=HISTORY_KEY, description=f"Nightly DEFT history ({len(nights)} nights)"
    )


def end_expired(flow_run_id: str, message: str) -> None:
    """End a night whose pause timed out as Cancelled with `message`. The server refuses every transition out of
    an expired pause (it would record a failure), so the state is forced: nobody decided, nothing went wrong."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), Cancelled(message=message), force=True)
