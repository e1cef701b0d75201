"""The Slurm worker on a real Slurm cluster (`bash .ci/services.sh start slurm`): flow runs through sbatch.

A `prefect worker start --type slurm` process serves a `slurm` pool whose jobs run the `tao-job` flow with
runner `none` (this repository's virtual environment on the node). The TAO command is the fake runtime,
except one real training run with the reference runtime. Faults are made with the cluster's own tools:
`scontrol requeue`, a node set DOWN, time limits, and a cancellation in Prefect; each must end in the
state the worker's classification promises, with no job left in squeue.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import slurm_answers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
FAKE_RUNTIME = REPO / "tests" / "fake_runtime.py"
POOL = "gpu-slurm-test"
DEPLOYMENT = "tao-job/slurm-test"


def _pool_template(log_dir: Path, fakebin: Path) -> dict[str, Any]:
    from aoi_pipeline.workers.slurm import SlurmWorker

    template = SlurmWorker.get_default_base_job_template()
    defaults = {
        "python_env": sys.prefix,
        "working_dir": str(REPO),
        "log_dir": str(log_dir),
        "poll_interval_seconds": 1.0,
        "setup_commands": [f'export PATH={fakebin}:"$PATH"'],
    }
    for name, value in defaults.items():
        template["variables"]["properties"][name]["default"] = value
    return template


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@pytest.fixture(scope="module")
def slurm_worker(
    slurm_cluster: None, prefect_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A slurm pool, the tao-job deployment on it and a running `prefect worker start --type slurm`."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("slurm")
    fakebin = root / "fakebin"
    fakebin.mkdir()
    # The fake runtime stands in for TAO's `visual_changenet` on the node's PATH.
    tao = fakebin / "visual_changenet"
    tao.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_RUNTIME} "$@"\n')
    tao.chmod(0o755)
    # The node's two GPUs are fake GRES: an nvidia-smi that lists two, narrowed by Slurm's CUDA_VISIBLE_DEVICES.
    smi = fakebin / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, GPU-fake-0, Fake GPU, 16384\\n1, GPU-fake-1, Fake GPU, 16384\\n'\n")
    smi.chmod(0o755)
    with temporary_settings({PREFECT_API_URL: prefect_server_url}), _client() as client:
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type="slurm", base_job_template=_pool_template(root / "logs", fakebin)),
            overwrite=True,
        )
        flow_id = client.create_flow_from_name("tao-job")
        client.create_deployment(
            flow_id=flow_id,
            name="slurm-test",
            work_pool_name=POOL,
            entrypoint="flows.tao_job:tao_job",  # a module path: a script path would put flows/ first on sys.path
            path=str(REPO),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
        )
    env = {**os.environ, "PREFECT_API_URL": prefect_server_url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = (root / "worker.log").open("wb")
    prefect = str(Path(sys.executable).parent / "prefect")
    worker = subprocess.Popen(
        [prefect, "worker", "start", "--pool", POOL, "--type", "slurm", "--name", "slurm-test-worker"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    with temporary_settings({PREFECT_API_URL: prefect_server_url}):
        yield str(root)
    worker.send_signal(signal.SIGINT)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    log.close()


def _tao_job(root: Path, name: str, *, runtime: str = "tao", spec: dict | None = None) -> dict[str, Any]:
    from aoi_pipeline.jobs.job import TaoJob

    results = root / name / "train"
    job = TaoJob(
        name=name,
        action="train",
        image="nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt",
        spec=spec or {"train": {"results_dir": str(results), "num_epochs": 2}},
        results_dir=results,
        runtime=runtime,  # type: ignore[arg-type]
        gpus=1 if runtime == "tao" else 0,
    )
    return job.to_record()


def _start(job: dict[str, Any], **job_variables: Any) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(DEPLOYMENT, parameters={"job": job}, job_variables=job_variables, timeout=0)


def _wait_final(flow_run_id: Any, timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    with _client() as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, f"flow run still {run.state} after {timeout_s} s"
            time.sleep(1)


def _slurm_job_id(flow_run_id: Any, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    with _client() as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.infrastructure_pid:
                return run.infrastructure_pid.rpartition(":")[2]
            assert time.monotonic() < deadline, "the worker never submitted the flow run"
            time.sleep(0.5)


def _squeue_state(job_id: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _wait_gone(job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _squeue_state(job_id):
        assert time.monotonic() < deadline, f"Slurm job {job_id} is still in squeue"
        time.sleep(0.5)


def _wait_running(job_id: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while _squeue_state(job_id) != "RUNNING":
        assert time.monotonic() < deadline, f"Slurm job {job_id} never ran"
        time.sleep(0.5)


def test_a_tao_job_runs_through_sbatch_with_a_gpu_and_records_its_slurm_job(slurm_worker: str) -> None:
    root = Path(slurm_worker)
    started = _start(_tao_job(root, "fake-train"), gpus=1)
    run = _wait_final(started.id)
    assert run.state.is_completed(), run.state
    where, _, job_id = run.infrastructure_pid.rpartition(":")
    assert (where, job_id.isdigit()) == ("local", True)
    assert run.labels["slurm.job-id"] == job_id
    results = root / "fake-train" / "train"
    assert (results / "model_epoch_001_step_00020.pth").is_file()
    # The flow run ends before its batch job does (the engine still exits): wait for the job to leave squeue.
    _wait_gone(job_id)
    scontrol = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    assert "TresPerNode=gres:gpu:1" in scontrol.stdout
    assert "JobState=COMPLETED" in scontrol.stdout
    # The job's output file: the launcher inside the allocation got the fake GPU that --gres=gpu:1 asked for.
    output = next((root / "logs").glob(f"*-{job_id}.out")).read_text()
    assert "starting on GPUs [0]" in output


def test_a_real_training_run_through_sbatch(slurm_worker: str, tmp_path: Path) -> None:
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.core.workspace import Workspace
    from aoi_pipeline.pipeline.run_specs import training_spec, workspace_base_spec
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=6, size=32, seed=5))
    overrides = ["dataset.classify.image_width=32", "dataset.classify.image_height=32"]
    config = config_from_mapping({"workspace": str(workspace), "spec_overrides": overrides})
    base = workspace_base_spec(config, Workspace.at(workspace))
    results = tmp_path / "real" / "train"
    spec = training_spec(base, results_dir=results, num_epochs=1, batch_size=4)
    job = _tao_job(tmp_path, "real-train", runtime="reference", spec=spec)
    job["results_dir"] = str(results)
    run = _wait_final(_start(job).id, timeout_s=400)
    assert run.state.is_completed(), run.state
    assert list(results.glob("model_epoch_000_step_*.pth")), sorted(p.name for p in results.iterdir())


def test_a_program_error_fails_the_flow_run_with_the_exit_code(slurm_worker: str) -> None:
    run = _wait_final(_start(_tao_job(Path(slurm_worker), "exit-3"), command="bash -c 'exit 3'").id)
    assert run.state.is_failed(), run.state
    assert "exited with code 3" in run.state.message


def test_cancelling_the_flow_run_scancels_the_job(slurm_worker: str) -> None:
    from prefect.states import Cancelling

    started = _start(_tao_job(Path(slurm_worker), "cancel-me"), command="sleep 300")
    job_id = _slurm_job_id(started.id)
    _wait_running(job_id)
    with _client() as client:
        client.set_flow_run_state(started.id, Cancelling(), force=True)
    run = _wait_final(started.id)
    assert run.state.is_cancelled(), run.state
    assert _squeue_state(job_id) == ""
    assert (
        "JobState=CANCELLED"
        in subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    )


def test_a_requeued_job_is_cancelled_and_the_run_crashes_as_an_infrastructure_fault(slurm_worker: str) -> None:
    started = _start(_tao_job(Path(slurm_worker), "requeue-me"), command="sleep 300", requeue=True)
    job_id = _slurm_job_id(started.id)
    _wait_running(job_id)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    run = _wait_final(started.id)
    assert run.state.is_crashed(), run.state
    assert "requeued" in run.state.message
    assert _squeue_state(job_id) == ""


def test_a_node_set_down_under_a_running_job_crashes_the_run(slurm_worker: str) -> None:
    started = _start(_tao_job(Path(slurm_worker), "node-down"), command="sleep 300")
    job_id = _slurm_job_id(started.id)
    _wait_running(job_id)
    reason = f"aoi-test-{uuid.uuid4().hex[:6]}"
    subprocess.run(["scontrol", "update", "nodename=localhost", "state=down", f"reason={reason}"], check=True)
    try:
        run = _wait_final(started.id)
    finally:
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], check=False)
        deadline = time.monotonic() + 60
        while not slurm_answers() and time.monotonic() < deadline:
            time.sleep(0.5)
    assert run.state.is_crashed(), run.state
    assert "NODE_FAIL" in run.state.message
    assert _squeue_state(job_id) == ""


def test_time_limits_ours_is_a_hard_stop_the_clusters_an_infrastructure_fault(slurm_worker: str) -> None:
    # Slurm enforces limits every ~30 s, so both jobs run side by side (about 80 s for the two).
    root = Path(slurm_worker)
    ours = _start(_tao_job(root, "our-limit"), command="sleep 300", partition="short", time_limit="1")
    clusters = _start(_tao_job(root, "cluster-limit"), command="sleep 300", partition="short")
    ours_run, clusters_run = _wait_final(ours.id, 300), _wait_final(clusters.id, 300)
    assert ours_run.state.is_failed(), ours_run.state
    assert ours_run.state.name == "TimedOut"
    assert clusters_run.state.is_crashed(), clusters_run.state
    assert "cluster's time limit 00:01:00" in clusters_run.state.message


@pytest.fixture
def sshd_on_loopback(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private sshd on 127.0.0.1 that accepts one generated key for the current user."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).is_file() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    (tmp_path / "authorized").write_text((tmp_path / "user.pub").read_text())
    port = _free_port()
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(tmp_path / "sshd_config")], stderr=subprocess.DEVNULL)
    host_key = " ".join((tmp_path / "host.pub").read_text().split()[:2])
    try:
        yield {
            "port": port,
            "private_key": (tmp_path / "user").read_text(),
            "known_hosts": f"[127.0.0.1]:{port} {host_key}\n",
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_flow_run_is_submitted_and_watched_over_ssh_with_a_login_block(
    slurm_worker: str, sshd_on_loopback: dict[str, Any]
) -> None:
    import getpass

    from aoi_pipeline.workers.slurm import SlurmLogin

    block = SlurmLogin(hostname="127.0.0.1", user=getpass.getuser(), **sshd_on_loopback)
    block_id = block.save("ci-loopback", overwrite=True)
    job = _tao_job(Path(slurm_worker), "over-ssh")
    run = _wait_final(_start(job, login={"$ref": {"block_document_id": str(block_id)}}).id)
    assert run.state.is_completed(), run.state
    where, _, job_id = run.infrastructure_pid.rpartition(":")
    assert where == f"{getpass.getuser()}@127.0.0.1"
    assert run.labels["slurm.login"] == where
    _wait_gone(job_id)
    with _client() as client:
        logs = " ".join(log.message for log in client.read_logs())
    assert sshd_on_loopback["private_key"].split("\n")[1] not in logs


def test_the_preflight_checks_the_real_cluster_read_only(slurm_cluster: None) -> None:
    from aoi_pipeline.pipeline.preflight.probe import HostProbe

    before = subprocess.run(["squeue", "-h", "-t", "all"], capture_output=True, text=True, check=True).stdout
    assert HostProbe({**os.environ, "SLURM_PARTITION": "debug"}).platform_reachable("slurm") == (
        True,
        "partition debug: 1 node(s), gpu:2 per node, no time limit",
    )
    ok, seen = HostProbe({**os.environ, "SLURM_PARTITION": "short", "SLURM_TIME_HOURS": "4"}).platform_reachable(
        "slurm"
    )
    assert not ok
    assert "time limit 240 exceeds the partition's maximum of 5 min" in seen
    assert subprocess.run(["squeue", "-h", "-t", "all"], capture_output=True, text=True, check=True).stdout == before
