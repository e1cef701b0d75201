"""TAO jobs on the Kubernetes work pool: the job variables of a job, the Job manifest the worker creates, its state.

The work pool runs the `tao-job` deployment with our base job template (`deployments/kubernetes/
base-job-template.json`): GPUs as the `nvidia.com/gpu` limit, GPU node selector and tolerations, the workspace
volume mounted at the workspace path the experiment specs use, a memory-backed `/dev/shm`, image pull secrets
and environment from Kubernetes Secrets. `job_variables` turns a `TaoJob` and the config into the flow run's job
variables; `render_job_manifest` renders them with the template exactly as the prefect-kubernetes worker does
(`KubernetesWorkerJobConfiguration.from_template_and_values`, then `prepare_for_flow_run`), so what a user
reviews is what the worker submits. `read_job_outcome` reads a Job and its pods from the API server and
classifies them (`jobs.kubernetes_status`). Secret values never enter a manifest: only Secret names.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import ConfigError, InfrastructureJobError
from aoi_pipeline.jobs.failures import REDACTED, Failure, classify_failure, is_credential_name
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.jobs.kubernetes_status import KubernetesJobOutcome, classify_job_status

TEMPLATE_RELATIVE_PATH = Path("deployments/kubernetes/base-job-template.json")
JOB_LABEL = "aoi-pipeline/job"
_DNS_LABEL_MAX = 63
# generateName gets a 5-character suffix from the API server; keep room for it and the dash.
_GENERATE_NAME_MAX = _DNS_LABEL_MAX - 6
_NON_DNS = re.compile(r"[^a-z0-9-]+")
_NON_LABEL = re.compile(r"[^A-Za-z0-9._-]+")
_PREFECT_SECRET_ENV = frozenset({"PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"})


def find_base_job_template(start: Path | None = None) -> Path:
    """The repository's Kubernetes base job template, looked up from `start` (default: this module) upwards."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        candidate = folder / TEMPLATE_RELATIVE_PATH
        if candidate.is_file():
            return candidate
    raise ConfigError.at(
        str(TEMPLATE_RELATIVE_PATH),
        "the Kubernetes base job template was not found above the installed package",
        "pass --template PATH (the file in the repository, or `prefect work-pool inspect` output of your pool)",
    )


def load_base_job_template(path: Path | None = None) -> dict[str, Any]:
    """The base job template as a dict with `job_configuration` and `variables`."""
    path = path or find_base_job_template()
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError.at(str(path), f"is not a readable JSON file ({error})", "pass a base job template") from None
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= template.keys():
        raise ConfigError.at(
            str(path),
            "is not a base job template (needs job_configuration and variables)",
            "pass the file from deployments/kubernetes or `prefect work-pool inspect` output",
        )
    return template


def kubernetes_name(name: str) -> str:
    """A job name as a DNS label prefix (lower case, digits, '-'), for the Job's generateName."""
    slug = _NON_DNS.sub("-", name.lower()).strip("-")[:_GENERATE_NAME_MAX].strip("-")
    return slug or "tao-job"


def label_value(name: str) -> str:
    """A job name as a label value (at most 63 characters, alphanumeric at both ends)."""
    return _NON_LABEL.sub("-", name)[:_DNS_LABEL_MAX].strip("-._") or "tao-job"


def job_variables(job: TaoJob, config: PipelineConfig) -> dict[str, Any]:
    """The job variables of the job's `tao-job/kubernetes` flow run; unset config keys keep the pool's defaults."""
    _check_results_on_workspace(config)
    _check_no_extra_mounts(job)
    kube = config.kubernetes
    values: dict[str, Any] = {
        "name": kubernetes_name(job.name),
        "image": job.image,
        "labels": {JOB_LABEL: label_value(job.name)},
        "workspace_mount_path": str(config.workspace),
    }
    if job.gpus > 0:
        values["gpu_limit"] = job.gpus
        if kube.node_selector is not None:
            values["node_selector"] = dict(kube.node_selector)
        if kube.tolerations is not None:
            values["tolerations"] = [dict(toleration) for toleration in kube.tolerations]
    else:
        # A job without GPUs must not occupy (or wait for) a GPU node.
        values["node_selector"] = {}
        values["tolerations"] = []
    optional = {"namespace": kube.namespace, "service_account_name": kube.service_account, "shm_size": kube.shm_size}
    values.update({key: value for key, value in optional.items() if value is not None})
    if kube.workspace_pvc is not None:
        values["workspace_volume"] = {"name": "workspace", "persistentVolumeClaim": {"claimName": kube.workspace_pvc}}
    elif kube.workspace_volume is not None:
        values["workspace_volume"] = {**kube.workspace_volume, "name": "workspace"}
    if kube.image_pull_secret is not None:
        values["image_pull_secrets"] = [{"name": kube.image_pull_secret}]
    elif kube.image_pull_secret_block is not None:
        # The worker resolves the block reference when it builds the Job, as for any block in job variables.
        values["image_pull_secrets"] = [{"name": f"{{{{ prefect.blocks.string.{kube.image_pull_secret_block} }}}}"}]
    if kube.env_secrets:
        values["env_from"] = [{"secretRef": {"name": name}} for name in kube.env_secrets]
    return values


def _check_results_on_workspace(config: PipelineConfig) -> None:
    results = config.resolved_results_root
    if not results.is_relative_to(config.workspace):
        raise ConfigError.at(
            "pipeline config key results_root",
            f"{results} lies outside the workspace {config.workspace}; on Kubernetes only the workspace volume "
            "is mounted into the job",
            "put results_root inside the workspace (or leave it unset)",
        )


def _check_no_extra_mounts(job: TaoJob) -> None:
    if job.mounts:
        listed = ", ".join(f"{mount.host} -> {mount.container}" for mount in job.mounts)
        raise ConfigError.at(
            f"job {job.name} mounts",
            f"{listed}: a Kubernetes Job mounts only the workspace volume, not folders of this machine",
            "put the files inside the workspace (they are then on the volume at the same path)",
        )


class _OfflineClient:
    """Stands in for a Prefect client when no server is configured: any request is a clear error."""

    def __getattr__(self, name: str) -> Any:
        raise ConfigError.at(
            "kubernetes job variables",
            "they reference a Prefect block or variable, which only a Prefect server can resolve",
            "set PREFECT_API_URL to the server that holds the block (or name the Secret directly)",
        )


async def render_job_configuration(
    job: TaoJob, config: PipelineConfig, *, template: Mapping[str, Any] | None = None, client: Any = None
) -> Any:
    """The worker's job configuration for the job: the template filled with the job variables, as the worker does.

    Without a client, a server is asked only when PREFECT_API_URL is set (for block references).
    """
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = dict(template) if template is not None else load_base_job_template()
    if client is None and not os.environ.get("PREFECT_API_URL"):
        client = _OfflineClient()
    try:
        return await KubernetesWorkerJobConfiguration.from_template_and_values(
            template, job_variables(job, config), client=client
        )
    except ValueError as error:
        raise ConfigError.at(
            "kubernetes base job template", f"renders no valid Job ({error})", "fix the template or the job variables"
        ) from None


def render_job_manifest(
    job: TaoJob, config: PipelineConfig, *, template: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Job manifest the worker would create for the job's flow run (values of credential env vars hidden).

    The flow run is a stand-in (a fixed name and id), so the Prefect labels and env name it; the worker uses the
    real run's.
    """
    from prefect.client.schemas.objects import FlowRun

    configuration = asyncio.run(render_job_configuration(job, config, template=template))
    flow_run = FlowRun(id=uuid.UUID(int=0), name=job.name, flow_id=uuid.UUID(int=0))
    configuration.prepare_for_flow_run(flow_run)
    manifest = configuration.job_manifest
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env") or ():
            name = str(entry.get("name", ""))
            if "value" in entry and (name in _PREFECT_SECRET_ENV or is_credential_name(name)):
                entry["value"] = REDACTED
    return manifest


async def read_job_outcome(api_client: Any, namespace: str, name: str) -> KubernetesJobOutcome:
    """Read the Job and its pods (`kubernetes_asyncio` client, read-only) and classify where the Job stands."""
    from kubernetes_asyncio.client import BatchV1Api, CoreV1Api

    # With _preload_content=False the calls return the raw responses, not the models the stubs name.
    job: Any = await BatchV1Api(api_client).read_namespaced_job_status(name, namespace, _preload_content=False)
    pods: Any = await CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"job-name={name}", _preload_content=False
    )
    # Unpreloaded responses are not status-checked by the client: a Job that is gone answers 404 with a Status.
    if job.status == 404:
        return KubernetesJobOutcome("failed", _lost_job(namespace, name))
    for response, what in ((job, f"Job {namespace}/{name}"), (pods, f"the pods of Job {namespace}/{name}")):
        if not 200 <= response.status <= 299:
            raise InfrastructureJobError.at(
                what,
                f"the API server answered {response.status} {response.reason} when asked for it",
                "check the worker's kubeconfig or service account (it must read Jobs and pods in the namespace)",
            )
    job_body = json.loads(await job.read())
    pod_items = json.loads(await pods.read()).get("items") or []
    return classify_job_status(job_body, pod_items)


def _lost_job(namespace: str, name: str) -> Failure:
    evidence = f"Job {namespace}/{name} not found"
    lost = classify_failure(exit_code=None, log_tail=evidence, status_lines=(), wrote_checkpoint=None)
    assert lost is not None  # an unknown exit status is always a failure
    return Failure(lost.kind, f"the Job no longer exists (deleted, or removed after its TTL); {lost.reason}", evidence)
