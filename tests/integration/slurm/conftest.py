"""The Slurm cluster for the integration tests, and the `gpu-slurm` pool `aoi-pipeline pools setup` creates.

Needs the one-node cluster of `bash .ci/services.sh start slurm` (CI starts it): munged, slurmctld and slurmd
on 127.0.0.1 with two fake GPUs. The tests skip with that command as the reason when no cluster answers.
`slurm_pool` runs `aoi-pipeline pools setup --platform slurm` against the test's Prefect server, so the pool,
the deployments and the worker are the ones a user gets; `fake_node_bin` is a folder of stand-ins the jobs
put first on PATH through the config's `slurm.setup_commands`: `visual_changenet` (tests/fake_runtime.py)
and an `nvidia-smi` listing the node's two fake GPUs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE_RUNTIME = Path(__file__).resolve().parents[2] / "fake_runtime.py"


def slurm_answers() -> bool:
    """Whether sinfo answers and every node is up (idle, mixed or allocated)."""
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, check=False)
    states = set(done.stdout.split())
    return done.returncode == 0 and bool(states) and states <= {"idle", "mix", "alloc"}


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    if not slurm_answers():
        pytest.skip("no Slurm cluster answers here: start it with `bash .ci/services.sh start slurm`")


@pytest.fixture(scope="session")
def fake_node_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`visual_changenet` (the fake runtime) and an `nvidia-smi` with the node's two fake GPUs."""
    fakebin = tmp_path_factory.mktemp("fakebin")
    tao = fakebin / "visual_changenet"
    tao.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_RUNTIME} "$@"\n')
    smi = fakebin / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, GPU-fake-0, Fake GPU, 16384\\n1, GPU-fake-1, Fake GPU, 16384\\n'\n")
    for program in (tao, smi):
        program.chmod(0o755)
    return fakebin


@pytest.fixture(scope="session")
def slurm_pool(
    slurm_cluster: None, prefect_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """`aoi-pipeline pools setup --platform slurm` on the test server; yields the environment of the command."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server_url,
        "AOI_PIPELINE_HOME": str(tmp_path_factory.mktemp("aoi-home")),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    aoi = str(Path(sys.executable).parent / "aoi-pipeline")
    setup = subprocess.run([aoi, "pools", "setup", "--platform", "slurm"], env=env, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "started a slurm worker for pool gpu-slurm" in setup.stdout
    worker_pid = int(setup.stdout.split("(pid ")[1].split(",")[0])
    with temporary_settings({PREFECT_API_URL: prefect_server_url}):
        yield env
    _stop(worker_pid)


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGINT)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def squeue_state(job_id: str) -> str:
    """The job's state in squeue, empty once it left the queue."""
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def scontrol_job(job_id: str) -> str:
    """`scontrol show job -o` of a job (kept MinJobAge seconds after its end)."""
    return subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
