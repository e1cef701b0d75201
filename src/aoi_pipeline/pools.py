"""Work pools on a Prefect server: create a platform's pool and deployments, and start a worker if none runs.

`setup_platform("docker")` creates (or updates) the `aoi-docker` pool from `deployments/docker/
base-job-template.json` (its registry credentials refer to the `aoi-registry` block when one exists) and the
`local-process` pool the pipeline's own deployment runs on, deploys `aoi-pipeline/docker` and `tao-job/docker`
from the checkout's `prefect.yaml`, and starts `prefect worker start --pool aoi-docker` in the background when
no worker of the pool is online. `setup_platform("kubernetes")` creates `aoi-kubernetes` from
`deployments/kubernetes/base-job-template.json` the same way, but its worker belongs where the cluster is
reachable, so it prints the exact worker command instead of starting one. `setup_platform("slurm")` creates
`gpu-slurm` and starts our `slurm` worker here, as on a login node (runner none: the jobs run in this Python
environment, which the nodes share). It returns what it did, in words, so the command can say what it started.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aoi_pipeline.errors import ConfigError

PARENT_POOL = "local-process"
# Platform -> (work pool, worker type). A platform joins when its template, worker and deployment exist.
POOLS: dict[str, tuple[str, str]] = {
    "docker": ("aoi-docker", "docker"),
    "kubernetes": ("aoi-kubernetes", "kubernetes"),
    "slurm": ("gpu-slurm", "slurm"),
}
# Platforms whose worker must run where the cluster is reachable: the setup prints its command instead.
REMOTE_WORKERS: dict[str, str] = {
    "kubernetes": "in the cluster (a service account that may create Jobs and read pods) or with a kubeconfig "
    "that reaches it, where prefect-kubernetes and aoi-pipeline are installed",
}
# Seconds between a worker's polls of its pool: Prefect's 10 s default would add ~5 s to every job.
WORKER_QUERY_SECONDS = "1"
_WORKER_ONLINE_TIMEOUT_S = 60.0


@dataclass
class Setup:
    """What `setup_platform` found and did."""

    platform: str
    pool: str
    actions: list[str] = field(default_factory=list)
    worker_pid: int | None = None
    worker_log: Path | None = None


def project_root() -> Path:
    """The checkout (or installed tree) that holds `prefect.yaml`, `flows/` and `deployments/`."""
    spec = importlib.util.find_spec("flows")
    root = Path(spec.origin).resolve().parent.parent if spec and spec.origin else Path.cwd()
    if not (root / "prefect.yaml").is_file():
        raise ConfigError.at(
            str(root / "prefect.yaml"),
            "is missing: the pools and deployments are created from a checkout of aoi-pipeline",
            "install aoi-pipeline from a checkout (pip install -e .) and run the command again",
        )
    return root


def base_job_template(platform: str, root: Path) -> dict[str, Any]:
    """The platform's base job template from deployments/, wired to the registry block when one exists."""
    from blocks import registry_credentials_ref

    template = json.loads((root / "deployments" / platform / "base-job-template.json").read_text(encoding="utf-8"))
    if platform == "docker" and (reference := registry_credentials_ref()) is not None:
        template["variables"]["properties"]["registry_credentials"]["default"] = reference
    if platform == "slurm":
        _slurm_defaults(template["variables"]["properties"])
    return template


def _slurm_defaults(properties: dict[str, Any]) -> None:
    """Runner none runs the flow in this Python environment (the nodes share it with this login node) and
    writes each job's output under the data directory instead of the worker's working directory."""
    from aoi_pipeline.server import data_dir

    for name, value in (("python_env", sys.prefix), ("log_dir", str(data_dir() / "slurm-logs"))):
        if properties[name].get("default") is None:
            properties[name]["default"] = value


def setup_platform(platform: str, *, concurrency_limit: int | None = None, start_worker: bool = True) -> Setup:
    """Create the platform's pool and deployments on the current Prefect server; start a worker if needed."""
    if platform not in POOLS:
        raise ConfigError.at(
            "--platform",
            f"{platform!r} has no work pool in this version",
            f"use one of: {', '.join(POOLS)} (platform local needs no pool)",
        )
    pool, worker_type = POOLS[platform]
    root = project_root()
    setup = Setup(platform, pool)
    setup.actions.append(_upsert_pool(pool, worker_type, base_job_template(platform, root), concurrency_limit))
    setup.actions.append(_upsert_pool(PARENT_POOL, "process", None, None))
    _deploy(root, [f"aoi-pipeline/{platform}", f"tao-job/{platform}"])
    setup.actions.append(f"deployed aoi-pipeline/{platform} and tao-job/{platform} from {root / 'prefect.yaml'}")
    if not start_worker:
        return setup
    if platform in REMOTE_WORKERS:
        setup.actions.append(remote_worker_instructions(platform))
        return setup
    if _online_workers(pool):
        setup.actions.append(f"a worker of pool {pool} is already online: using it")
        return setup
    setup.worker_pid, setup.worker_log = _start_worker(pool, worker_type, root)
    setup.actions.append(
        f"started a {worker_type} worker for pool {pool} (pid {setup.worker_pid}, log {setup.worker_log}); "
        f"stop it with: kill -INT {setup.worker_pid}"
    )
    return setup


def worker_command(platform: str) -> str:
    """The exact command that starts the platform's worker (with this session's Prefect API URL)."""
    from prefect.settings import PREFECT_API_URL

    pool, worker_type = POOLS[platform]
    api = PREFECT_API_URL.value()
    prefix = f"PREFECT_API_URL={api} " if api else ""
    return f"{prefix}prefect worker start --pool {pool} --type {worker_type}"


def remote_worker_instructions(platform: str) -> str:
    """What a user does to start a worker this machine cannot start: where, and the exact command."""
    pool = POOLS[platform][0]
    online = "a worker of the pool is online" if _online_workers(pool) else "no worker of the pool is online yet"
    return (
        f"{online}; this machine does not start one for pool {pool}: run it {REMOTE_WORKERS[platform]}:\n"
        f"    {worker_command(platform)}"
    )


def _upsert_pool(name: str, worker_type: str, template: dict[str, Any] | None, limit: int | None) -> str:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is None:
            create: dict[str, Any] = {"name": name, "type": worker_type, "concurrency_limit": limit}
            if template is not None:
                create["base_job_template"] = template
            client.create_work_pool(WorkPoolCreate(**create))
            return f"created work pool {name} ({worker_type})"
        if existing.type != worker_type:
            raise ConfigError.at(
                f"work pool {name}",
                f"exists with type {existing.type!r}, not {worker_type!r}",
                f"delete it (prefect work-pool delete {name}) and run the setup again",
            )
        if template is None and limit is None:
            return f"work pool {name} exists"
        update: dict[str, Any] = {}
        if template is not None:
            update["base_job_template"] = template
        if limit is not None:
            update["concurrency_limit"] = limit
        client.update_work_pool(name, WorkPoolUpdate(**update))
        return f"updated work pool {name} ({worker_type}) with the template from deployments/"


def _deploy(root: Path, names: list[str]) -> None:
    command = [_prefect(), "--no-prompt", "deploy", "--prefect-file", str(root / "prefect.yaml")]
    for name in names:
        command += ["--name", name]
    done = subprocess.run(command, cwd=root, env=_child_env(), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ConfigError.at(
            str(root / "prefect.yaml"),
            f"prefect deploy failed: {(done.stdout + done.stderr).strip()[-1500:]}",
            "fix the deployment named above, then run the setup again",
        )


def _online_workers(pool: str) -> list[Any]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(pool)
    return [worker for worker in workers if str(getattr(worker, "status", "")).upper().endswith("ONLINE")]


def _start_worker(pool: str, worker_type: str, root: Path) -> tuple[int, Path]:
    from aoi_pipeline.server import data_dir

    log_path = data_dir() / "workers" / f"{pool}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**_child_env(), "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS}
    command = [_prefect(), "worker", "start", "--pool", pool, "--type", worker_type]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + _WORKER_ONLINE_TIMEOUT_S
    while not _online_workers(pool):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise ConfigError.at(
                str(log_path),
                f"the {worker_type} worker for pool {pool} did not come online",
                "read the worker log; for Docker check that `docker version` reaches the engine, for Slurm `sinfo`",
            )
        time.sleep(0.5)
    return process.pid, log_path


def _prefect() -> str:
    beside = Path(sys.executable).parent / "prefect"
    return str(beside) if beside.is_file() else "prefect"


def _child_env() -> dict[str, str]:
    """This environment with this Python's bin directory first, so workers and pull steps find it."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def running_job_containers(settle_s: float = 30.0) -> list[str]:
    """Ids of the containers Prefect's Docker worker started that still exist after up to `settle_s` (a
    child run is Completed a moment before its container is removed); none are expected after a run."""
    deadline = time.monotonic() + settle_s
    while True:
        done = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=io.prefect.version"], capture_output=True, text=True, timeout=60
        )
        left = done.stdout.split() if done.returncode == 0 else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def queued_slurm_jobs(run_dir: Path, settle_s: float = 30.0) -> list[str]:
    """Slurm job ids of the run's jobs (from their dispatch records) still in squeue after up to `settle_s` (a
    child run is Completed a moment before its batch job exits); none are expected after a run."""
    from aoi_pipeline.jobs.dispatch import DISPATCH_SUFFIX, read_dispatch

    records = (
        read_dispatch(path.with_name(path.name.removesuffix(DISPATCH_SUFFIX)))
        for path in run_dir.rglob(f"*{DISPATCH_SUFFIX}")
    )
    job_ids = sorted({r.infrastructure_id.rpartition(":")[2] for r in records if r is not None and r.infrastructure_id})
    deadline = time.monotonic() + settle_s
    while job_ids:
        done = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=60
        )
        left = done.stdout.split() if done.returncode == 0 else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
    return []
