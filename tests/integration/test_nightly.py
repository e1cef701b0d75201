"""Nightly DEFT on a real Prefect server, jobs on the fake runtime: a policy approved once, then four nights.

Night 0 pauses (no policy yet) and a person approves the policy on the gate; night 1 finds new pool rows and
trains, promoting or keeping the deployed model with the reason; night 2 finds nothing new and launches no job;
night 3 names another image and pauses (a night started meanwhile is "skipped: busy"), and is rejected; night 4
runs after the policy was revoked and waits until it expires. Nothing is written while a night waits, and each
night's history row is checked.
"""

from __future__ import annotations

import contextvars
import csv
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.core.nightly_policy import NightlyBudget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BUDGET = NightlyBudget(gpu_hours=1.0, iterations=1, pool_share=1.0, phase3=False)


def _calls(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _history(results: Path) -> list[dict[str, Any]]:
    path = results / "nightly" / "history.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class _NightInThread:
    """A night running in a thread (the gate blocks it); keeps its final state or error."""

    def __init__(self, config: Any, night: str, timeout_minutes: float = 5.0) -> None:
        from flows.nightly import deft_nightly

        self.state: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()

        def target() -> None:
            try:
                self.state = context.run(
                    deft_nightly,
                    config=config,
                    budget=BUDGET,
                    night=night,
                    approval_timeout_minutes=timeout_minutes,
                    return_state=True,
                )
            except BaseException as error:
                self.error = error

        self.thread = threading.Thread(target=target, daemon=True, name=night)
        self.thread.start()

    def join_state(self) -> Any:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the night did not finish"
        if self.error is not None:
            raise self.error
        return self.state


@pytest.fixture
def on_server(prefect_server_url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server_url}):
        yield


def _config(workspace: Path, **changes: Any) -> Any:
    from aoi_pipeline.config import config_from_mapping

    small = {"recommendations": 1, "parallel": 1, "num_epochs": 1, "batch_size": 4, "seed": 0}
    data = {
        "workspace": str(workspace),
        "kpi_target": "FAR < 0.01% at Recall=100%",
        "gpus": 0,
        # No Phase 1 and a large learning rate: the fake runtime's scores then overlap (FAR above the target),
        # so the night's DEFT loop runs its iteration instead of stopping at a baseline that already passes.
        "spec_overrides": [
            "dataset.classify.image_width=32",
            "dataset.classify.image_height=32",
            "train.optim.lr=0.01",
        ],
        "phase1": {**small, "enabled": False},
        "deft": {
            "max_iterations": 0,
            "num_epochs": 1,
            "confirm_seeds": 2,
            "num_sdg": 4,
            "min_similarity": 0.0,
            "top_k_per_target": 3,
            "kpi_split": "whole_set",
        },
        "phase3": {**small, "enabled": False},
    }
    data.update(changes)
    return config_from_mapping(data)


def _add_pool_rows(workspace: Path, donor: Path) -> int:
    """Append a donor workspace's pool rows (other images) under new directories of the workspace."""
    shutil.copytree(donor / "images", workspace / "images" / "night1")
    pool = workspace / "augmentation" / "mining_pool" / "mining_pool.csv"
    with (donor / "augmentation" / "mining_pool" / "mining_pool.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with pool.open("a", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        for row in rows:
            writer.writerow(
                {**row, "input_path": f"night1/{row['input_path']}", "golden_path": f"night1/{row['golden_path']}"}
            )
    return len(rows)


def _state_names(flow_run_id: Any) -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {state.type.value.lower() for state in client.read_flow_run_states(flow_run_id)}


def _paused(night: str, wait_for: Callable[..., Any]) -> Any:
    from aoi_pipeline.control import list_runs

    return wait_for(
        f"{night} paused", lambda: next((run for run in list_runs(run=night) if run.paused), None), timeout_s=60
    )


def test_four_nights_on_a_standing_policy(
    on_server: None, fake_runtime: Path, tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    from aoi_pipeline.control import decide
    from aoi_pipeline.pipeline.preflight import run_preflight
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace
    from flows.aoi_pipeline import aoi_pipeline
    from flows.nightly import deft_nightly

    workspace, results = tmp_path / "workspace", tmp_path / "workspace" / "results"
    write_workspace(workspace, SynthSpec(boards=8, size=32, seed=3))
    config = _config(workspace)
    plan = run_preflight(config, run_name="run_first").plan_hash
    aoi_pipeline(config=config, run_name="run_first", preapproved_plan_hash=plan)  # the deployed model

    # Night 0: no policy yet; the night waits on the gate, writing nothing, until a person approves the policy.
    before, launched = _files(workspace), _calls(fake_runtime)
    night0 = _NightInThread(config, "nightly_0")
    waiting = _paused("nightly_0", wait_for)
    assert "no nightly policy is approved yet" in waiting.message
    assert _files(workspace) == before and _calls(fake_runtime) == launched
    decide("nightly_0", reviewer="alice", comment="nightly policy")
    assert night0.join_state().result()["decision"] == "skipped: nothing new"
    policy = json.loads((results / "nightly" / "policy.json").read_text())
    assert (policy["reviewer"], policy["revoked"]) == ("alice", None)

    # Night 1: new pool rows inside the policy: no person, trains from the deployed model.
    write_workspace(tmp_path / "donor", SynthSpec(boards=8, size=32, seed=11))
    added = _add_pool_rows(workspace, tmp_path / "donor")
    launched = _calls(fake_runtime)
    night1 = deft_nightly(config=config, budget=BUDGET, night="nightly_1")
    assert night1["decision"] == "trained"
    assert night1["rows_added"]["pool"] == added
    assert night1["jobs"] == _calls(fake_runtime) - launched > 0
    assert night1["promotion_reason"] and "DEFT stopped: max_iterations" in night1["reason"]
    run_dir = results / "nightly_1"
    handoff = json.loads((run_dir / "best_model.json").read_text())
    assert handoff["nightly"]["promoted"] is night1["promoted"]
    assert handoff["nightly"]["reason"] == night1["promotion_reason"]
    report = (run_dir / "run_report.html").read_text()
    assert '<section id="nightly">' in report and "nightly_0" in report and "nightly_1" in report
    state = json.loads((run_dir / "deft_state.json").read_text())
    assert state["iterations"]["baseline"]["source"] == "automl_phase1"  # pre-seeded, not retrained
    assert "the deployed model v0" in state["events"][0]["summary"]
    assert state["iterations"]["iter1"]["status"] == "complete"
    if night1["promoted"]:
        deployed = json.loads((results / "nightly" / "deployed.json").read_text())
        assert deployed["version"] == night1["handoff_version"] == 1
    else:
        assert not (results / "nightly" / "deployed.json").exists()

    # Night 2: nothing new: skipped, no job.
    launched = _calls(fake_runtime)
    night2 = deft_nightly(config=config, budget=BUDGET, night="nightly_2")
    assert (night2["decision"], night2["jobs"]) == ("skipped: nothing new", 0)
    assert _calls(fake_runtime) == launched and not (results / "nightly_2").exists()

    # Night 3: another image leaves the policy: it pauses, naming the limit; a night started meanwhile is busy.
    other = _config(workspace, images={"train": "nvcr.io/nvidia/tao/tao-toolkit:9.9.9-pyt"})
    before = _files(workspace)
    night3 = _NightInThread(other, "nightly_3")
    assert "another image for train" in _paused("nightly_3", wait_for).message
    busy = deft_nightly(config=config, budget=BUDGET, night="nightly_3b")
    assert busy["decision"] == "skipped: busy" and "nightly_3" in busy["reason"]
    assert _files(workspace) == {
        **before,
        "results/nightly/history.jsonl": _files(workspace)["results/nightly/history.jsonl"],
    }
    decide("nightly_3", reviewer="bob", comment="not this image", reject=True)
    assert night3.join_state().is_cancelled()
    assert _calls(fake_runtime) == launched

    # Night 4: the policy is revoked: the night waits, then expires having written nothing.
    from aoi_pipeline.core.nightly_policy import revoke_policy

    revoke_policy(results / "nightly", by="carol", reason="line retooled")
    before = _files(workspace)
    # Its pause lasts 6 s, too short to watch reliably on a loaded machine: its states and history tell it after.
    night4 = _NightInThread(config, "nightly_4", timeout_minutes=0.1).join_state()
    assert night4.is_cancelled()
    assert "paused" in _state_names(night4.state_details.flow_run_id)
    assert "revoked by carol" in _history(results)[-1]["reason"]
    after = _files(workspace)
    assert {name for name in after if after[name] != before.get(name)} == {"results/nightly/history.jsonl"}
    assert _calls(fake_runtime) == launched

    decisions = [(row["night"], row["decision"]) for row in _history(results)]
    assert decisions == [
        ("nightly_0", "skipped: nothing new"),
        ("nightly_1", "trained"),
        ("nightly_2", "skipped: nothing new"),
        ("nightly_3b", "skipped: busy"),
        ("nightly_3", "rejected"),
        ("nightly_4", "expired"),
    ]
    rows = _history(results)
    assert rows[1]["kpi_before"] is not None and rows[1]["kpi_after"] is not None
    assert rows[4]["reason"] == "Rejected by bob: not this image"
    assert [row["night"] for row in _history_artifact()] == [night for night, _ in decisions]


def _history_artifact() -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (latest,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["aoi-nightly-history"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    data = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    return list(data)
