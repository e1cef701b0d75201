"""The Docker pool for the integration tests: a real dockerd, the job image, a Prefect server and a worker.

Needs a Docker engine and the job image (`bash .ci/services.sh start docker` provides both; CI runs it). The
tests use a variant of the job image whose `aoi-changenet` is tests/fake_runtime.py, except the one real
training run. Blocks with sentinel secret values are registered before the pool is set up, so the pool's
template refers to the registry block and every tao-job run hands the NGC key to its job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

JOB_IMAGE = "localhost/aoi-pipeline-job:latest"
FAKE_IMAGE = "localhost/aoi-pipeline-job-fake:test"
SENTINEL_NGC = "ngcSENTINEL" + uuid.uuid4().hex
SENTINEL_REGISTRY = "regSENTINEL" + uuid.uuid4().hex
FAKE_RUNTIME = Path(__file__).resolve().parents[2] / "fake_runtime.py"
REPO = Path(__file__).resolve().parents[3]


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if shutil.which("docker") is None or _docker("version").returncode != 0:
        pytest.skip("no Docker engine here: start one with `bash .ci/services.sh start docker`")
    if _docker("image", "inspect", JOB_IMAGE).returncode != 0:
        pytest.skip(f"no job image {JOB_IMAGE}: build it with `bash .ci/services.sh start docker`")


@pytest.fixture(scope="session")
def fake_image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The job image with tests/fake_runtime.py standing in for the reference runtime."""
    context = tmp_path_factory.mktemp("fake-image")
    shutil.copy(FAKE_RUNTIME, context / "fake_runtime.py")
    (context / "Dockerfile").write_text(
        f"FROM {JOB_IMAGE}\n"
        "COPY fake_runtime.py /opt/aoi/fake_runtime.py\n"
        "RUN printf '#!/opt/aoi/bin/python\\nimport runpy\\n"
        'runpy.run_path("/opt/aoi/fake_runtime.py", run_name="__main__")\\n\' > /opt/aoi/bin/aoi-changenet '
        "&& chmod +x /opt/aoi/bin/aoi-changenet\n",
        encoding="utf-8",
    )
    built = _docker("build", "-q", "-t", FAKE_IMAGE, str(context), timeout=300)
    assert built.returncode == 0, built.stderr
    return FAKE_IMAGE


@pytest.fixture(scope="session")
def docker_pool(
    prefect_server_url: str, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """`aoi-pipeline blocks register` + `pools setup --platform docker` on the test server; yields the env."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("aoi-home")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server_url,
        "AOI_PIPELINE_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    aoi = str(Path(sys.executable).parent / "aoi-pipeline")
    secrets = {
        "NGC_API_KEY": SENTINEL_NGC,
        "AOI_REGISTRY_URL": "localhost:5999",
        "AOI_REGISTRY_USERNAME": "ci",
        "AOI_REGISTRY_PASSWORD": SENTINEL_REGISTRY,
    }
    registered = subprocess.run([aoi, "blocks", "register"], env={**env, **secrets}, capture_output=True, text=True)
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert SENTINEL_NGC not in registered.stdout + registered.stderr
    setup = subprocess.run([aoi, "pools", "setup", "--platform", "docker"], env=env, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "started a docker worker for pool aoi-docker" in setup.stdout
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


def set_tao_job_env(values: dict[str, str]) -> None:
    """Environment every tao-job/docker container gets (non-secret test settings such as FAKE_RUNTIME_CALLS)."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("tao-job/docker")
        variables = {**(deployment.job_variables or {}), "env": values}
        client.update_deployment(deployment.id, DeploymentUpdate(job_variables=variables))


def job_containers() -> list[str]:
    return _docker("ps", "-aq", "--filter", "label=io.prefect.version").stdout.split()


def wait_for_no_containers(timeout_s: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := job_containers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


class ContainerInspector:
    """Records `docker inspect` of every job container while it exists (they are removed when they end)."""

    def __init__(self) -> None:
        self.inspected: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ContainerInspector:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for container in job_containers():
                if container not in self.inspected:
                    found = _docker("inspect", container)
                    if found.returncode == 0:
                        self.inspected[container] = found.stdout
            time.sleep(0.2)

    def env_of_all(self) -> list[list[str]]:
        return [json.loads(text)[0]["Config"]["Env"] for text in self.inspected.values()]
