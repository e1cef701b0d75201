"""The pipeline end to end on the Slurm pool: every job a child run of tao-job/slurm, executed by sbatch.

A real Prefect server, `aoi-pipeline pools setup --platform slurm` (the gpu-slurm pool, the deployments and our
`slurm` worker) and the one-node cluster of `.ci/services.sh start slurm`. The jobs run the fake runtime in this
repository's Python environment on the node (runner none), each asking for one of the node's fake GPUs. A
parent killed with kill -9 and rerun re-attaches to the batch job it had launched; a cancelled parent leaves
no job in squeue.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

from .conftest import scontrol_job, squeue_state

# Each job is an sbatch plus a Prefect engine start on the node: minutes on a shared two-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
AOI = str(Path(sys.executable).parent / "aoi-pipeline")


def slurm_config(tmp_path: Path, fakebin: Path, *, setup: Sequence[str] = (), **changes: Any) -> Path:
    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=8, size=32, seed=11))
    small = {"recommendations": 1, "num_epochs": 1, "batch_size": 8}
    config = {
        "workspace": str(workspace),
        "platform": "slurm",
        "runtime": "tao",  # visual_changenet: the fake runtime, first on the node's PATH
        "gpus": 1,
        "kpi_target": "FAR < 50% at Recall=100%",
        "spec_overrides": ["dataset.classify.image_width=32", "dataset.classify.image_height=32"],
        "phase1": small,
        "deft": {"max_iterations": 0, "num_epochs": 1},
        "phase3": {"enabled": False},
        "slurm": {"time_limit": "00:30:00", "setup_commands": [f'export PATH={fakebin}:"$PATH"', *setup]},
        **changes,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def dispatch_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(run_dir.rglob("*.dispatch.json"))]


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.5)
    return found


def running(run_dir: Path) -> list[dict[str, Any]]:
    """Dispatch records whose child runs in a Slurm job."""
    return [record for record in dispatch_records(run_dir) if record["state"] == "running"]


def test_a_pipeline_runs_every_job_once_through_sbatch_and_a_killed_parent_reattaches_on_rerun(
    slurm_pool: dict[str, str], fake_node_bin: Path, tmp_path: Path
) -> None:
    from prefect import get_client

    calls = tmp_path / "workspace" / "calls.jsonl"
    setup = [f"export FAKE_RUNTIME_CALLS={calls}", "export FAKE_RUNTIME_SLEEP=train:8"]
    # Phase 1 off: the baseline's training job is the one caught running (a Phase 1 sweep proposes an
    # interrupted trial again as a new trial rather than resuming it).
    config = slurm_config(tmp_path, fake_node_bin, setup=setup, phase1={"enabled": False})
    run_name = f"run_slurm_{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / "workspace" / "results" / run_name
    command = [AOI, "run", "--config", str(config), "--yes", "--run-name", run_name]

    parent = subprocess.Popen(command, env=slurm_pool, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    [in_flight] = wait_for(lambda: running(run_dir), 240, "Slurm job of the first training")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    rerun = subprocess.run(command, env=slurm_pool, capture_output=True, text=True, timeout=600)

    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "re-attaching to its child run" in rerun.stdout + rerun.stderr
    records = dispatch_records(run_dir)
    launched = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(records) >= 2 and len(launched) == len(records), "a job ran twice or not at all"
    assert {call["action"] for call in launched} == {"train", "inference"}
    same = [record for record in records if record["idempotency_key"] == in_flight["idempotency_key"]]
    assert [record["flow_run_id"] for record in same] == [in_flight["flow_run_id"]]
    with get_client(sync_client=True) as client:
        for record in records:
            assert record["state"] == "success" and record["deployment"] == "tao-job/slurm"
            child = client.read_flow_run(uuid.UUID(record["flow_run_id"]))
            assert child.state is not None and child.state.is_completed()
            # The infrastructure id is the worker's `<login>:<Slurm job id>`, shown on the child run too.
            assert child.infrastructure_pid == record["infrastructure_id"]
            where, _, job_id = record["infrastructure_id"].rpartition(":")
            assert where == "local" and child.labels["slurm.job-id"] == job_id
            wait_for(lambda job_id=job_id: not squeue_state(job_id), 60, f"end of Slurm job {job_id}")
            shown = scontrol_job(job_id)
            assert f"JobName={record['job_name']} " in shown and "JobState=COMPLETED" in shown
            assert "TresPerNode=gres:gpu:1" in shown
            # The batch job's output (the pool's log_dir): the launcher inside got the GPU Slurm allocated.
            output = Path(slurm_pool["AOI_PIPELINE_HOME"], "slurm-logs", f"{record['job_name']}-{job_id}.out")
            assert "starting on GPUs [" in output.read_text()


def test_cancelling_the_parent_run_ends_its_batch_job_and_leaves_none_in_squeue(
    slurm_pool: dict[str, str], fake_node_bin: Path, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    from aoi_pipeline.config import load_config
    from aoi_pipeline.pipeline.preflight import run_preflight

    config_path = slurm_config(
        tmp_path, fake_node_bin, setup=["export FAKE_RUNTIME_SLEEP=train:300"], phase1={"enabled": False}
    )
    run_name = f"run_cancel_{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / "workspace" / "results" / run_name
    config = load_config(config_path)
    plan = run_preflight(config, run_name=run_name).plan_hash
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "local-process"],
        env={**slurm_pool, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        params = {"config": config.model_dump(mode="json"), "run_name": run_name, "preapproved_plan_hash": plan}
        parent = run_deployment("aoi-pipeline/slurm", parameters=params, timeout=0)
        [record] = wait_for(lambda: running(run_dir), 240, "running Slurm job")
        job_id = record["infrastructure_id"].rpartition(":")[2]
        wait_for(lambda: squeue_state(job_id) == "RUNNING", 120, f"RUNNING state of Slurm job {job_id}")
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(parent.id, Cancelling(message="cancelled by the test"), force=True)

            def ended(flow_run_id: uuid.UUID, expected: str) -> bool:
                state = client.read_flow_run(flow_run_id).state
                return state is not None and state.type.value == expected

            wait_for(lambda: ended(parent.id, "CANCELLED"), 120, "cancellation of the parent run")
            wait_for(lambda: ended(uuid.UUID(record["flow_run_id"]), "CANCELLED"), 120, "cancellation of the child")
        wait_for(lambda: not squeue_state(job_id), 60, f"end of Slurm job {job_id}")
        # Two correct endings race: the worker's scancel (CANCELLED), or Prefect inside the batch job seeing the
        # Cancelling state first, killing the flow's process and ending the batch script (COMPLETED); its log
        # then says so ("is cancelling, marking as cancelled", or "Flow run was cancelled." and "Cancelled flow run").
        shown = scontrol_job(job_id)
        output = Path(slurm_pool["AOI_PIPELINE_HOME"], "slurm-logs", f"{record['job_name']}-{job_id}.out")
        ended_inside = re.search(r"marking as cancelled|Flow run was cancelled", output.read_text()) is not None
        assert "JobState=CANCELLED" in shown or ("JobState=COMPLETED" in shown and ended_inside), re.findall(
            r"(?:JobState|Reason|ExitCode)=\S+", shown
        )
        user_jobs = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
        assert record["job_name"] not in user_jobs.split()
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
