"""Read-only checks of the Kubernetes cluster a run's Jobs will be created in, asked before the run is approved.

What a Job of the run references must be there: its namespace, the workspace's PersistentVolumeClaim (bound:
the workspace's data is already on it), nodes with allocatable `nvidia.com/gpu` for a GPU job (those matching
the job's node selector, with at least one job's share), and the image pull and environment Secrets it names.
`ClusterTargets.from_config` reads those names from the job variables a job gets (`workers.kubernetes`) over
the base job template's defaults, so the check looks at exactly what the worker will submit. Each check ends
OK, WRONG (a blocker: the Job could not start) or UNKNOWN: what the API server did not answer, or refused to
show (RBAC), is never reported OK. Only GET and LIST requests are sent; of a Secret only its metadata is asked
for (`PartialObjectMetadata`), so no Secret value is ever read. The client is `kubernetes_asyncio`, the one the
prefect-kubernetes worker uses; it connects with the kubeconfig in KUBECONFIG (else ~/.kube/config; its
context TAO_K8S_CONTEXT, else the current one) or, inside a pod, its service account.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.jobs.job import TaoJob

CheckStatus = Literal["ok", "wrong", "unknown"]
GPU_RESOURCE = "nvidia.com/gpu"
_JSON = "application/json"
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_BLOCK_REFERENCE = "{{"


@dataclass(frozen=True)
class ClusterCheck:
    """One thing a Job needs, as the API server showed it; `fix` says what to do when it is not OK."""

    subject: str
    status: CheckStatus
    seen: str
    fix: str = ""

    def describe(self) -> str:
        shown = {"ok": "OK", "wrong": "WRONG", "unknown": "UNKNOWN"}[self.status]
        return f"{self.subject}: {shown} ({self.seen}{f'; {self.fix}' if self.fix else ''})"


@dataclass(frozen=True)
class ClusterTargets:
    """What the run's Jobs reference in the cluster."""

    namespace: str
    volume: Mapping[str, Any]
    pull_secrets: tuple[str, ...] = ()
    env_secrets: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    gpus_per_job: int = 0

    @classmethod
    def from_config(cls, config: PipelineConfig, template: Mapping[str, Any]) -> ClusterTargets:
        """The targets of a GPU job of the run (a CPU job when the run uses none), template defaults included."""
        from aoi_pipeline.workers.kubernetes import job_variables

        gpus = 0 if config.gpus == 0 else config.gpus_per_job
        job = TaoJob(
            name="preflight",
            action="train",
            image=config.images.train,
            spec={},
            results_dir=config.resolved_results_root / "preflight",
            gpus=gpus,
        )
        properties = template["variables"]["properties"]
        defaults = {key: value["default"] for key, value in properties.items() if "default" in value}
        values = {**defaults, **job_variables(job, config)}
        return cls(
            namespace=str(values.get("namespace") or "default"),
            volume=values.get("workspace_volume") or {},
            pull_secrets=tuple(str(entry["name"]) for entry in values.get("image_pull_secrets") or ()),
            env_secrets=tuple(
                str(entry["secretRef"]["name"]) for entry in values.get("env_from") or () if "secretRef" in entry
            ),
            node_selector=dict(values.get("node_selector") or {}),
            gpus_per_job=int(values.get("gpu_limit") or 0),
        )


class _Unreachable(Exception):
    """The API server did not answer at all: every check is UNKNOWN."""


async def check_cluster(api_client: Any, targets: ClusterTargets, *, timeout_s: float) -> list[ClusterCheck]:
    """Every check of the targets, in order: namespace, workspace volume, GPU nodes, Secrets."""
    reader = _Reader(api_client, timeout_s)
    try:
        checks = [await _namespace(reader, targets), await _volume(reader, targets), await _gpu_nodes(reader, targets)]
        for name in targets.pull_secrets:
            checks.append(await _secret(reader, targets.namespace, name, "image pull Secret"))
        for name in targets.env_secrets:
            checks.append(await _secret(reader, targets.namespace, name, "environment Secret"))
    except _Unreachable as error:
        return unknown_checks(targets, str(error))
    return checks


def unknown_checks(targets: ClusterTargets, why: str) -> list[ClusterCheck]:
    """Every check UNKNOWN, for a cluster that could not be asked."""
    subjects = [f"namespace {targets.namespace}", _volume_subject(targets), "GPU nodes"]
    subjects += [f"image pull Secret {name}" for name in targets.pull_secrets]
    subjects += [f"environment Secret {name}" for name in targets.env_secrets]
    return [ClusterCheck(subject, "unknown", why) for subject in subjects]


def summarize(checks: Sequence[ClusterCheck]) -> tuple[bool | None, str]:
    """(False: something is wrong, None: nothing wrong but something unknown, True: all OK) and every check."""
    statuses = {check.status for check in checks}
    verdict = False if "wrong" in statuses else None if "unknown" in statuses else True
    return verdict, "; ".join(check.describe() for check in checks)


class _Reader:
    """GETs that return the object as JSON, None for 404, or raise `_Refused` (RBAC) / `_Unreachable`."""

    def __init__(self, api_client: Any, timeout_s: float) -> None:
        self.api_client = api_client
        self.timeout_s = timeout_s

    async def get(
        self, path: str, *, query: Sequence[tuple[str, str]] = (), accept: str = _JSON
    ) -> dict[str, Any] | None:
        """GET `path` (our own Accept header: the generated methods overwrite one that is passed to them)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            response = await asyncio.wait_for(
                self.api_client.call_api(
                    path,
                    "GET",
                    query_params=list(query),
                    header_params={"Accept": accept},
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _preload_content=False,
                    _request_timeout=self.timeout_s,
                ),
                self.timeout_s,
            )
            # Without preloading the client checks no status: a 404 or a 403 comes back as a response.
            body = await response.read()
            if response.status == 404:
                return None
            if not 200 <= response.status <= 299:
                raise _Refused(f"the API server answered {response.status} {response.reason}")
            return dict(json.loads(body))
        except ApiException as error:
            if error.status == 404:
                return None
            raise _Refused(f"the API server answered {error.status} {error.reason}") from None
        except (TimeoutError, OSError, ValueError) as error:
            raise _Unreachable(f"the API server did not answer ({type(error).__name__}: {error})") from None
        except Exception as error:  # aiohttp's client errors: no connection, TLS, a broken response
            if type(error).__module__.startswith("aiohttp"):
                raise _Unreachable(f"the API server did not answer ({type(error).__name__}: {error})") from None
            raise


class _Refused(Exception):
    """The API server answered but would not show the object (401/403, or another error status)."""


async def _namespace(reader: _Reader, targets: ClusterTargets) -> ClusterCheck:
    subject = f"namespace {targets.namespace}"
    try:
        found = await reader.get(f"/api/v1/namespaces/{quote(targets.namespace)}")
    except _Refused as error:
        return ClusterCheck(subject, "unknown", f"not readable here: {error}")
    if found is None:
        fix = f"create it (kubectl create namespace {targets.namespace}) or set kubernetes.namespace"
        return ClusterCheck(subject, "wrong", "does not exist", fix)
    return ClusterCheck(subject, "ok", "exists")


def _volume_subject(targets: ClusterTargets) -> str:
    claim = (targets.volume.get("persistentVolumeClaim") or {}).get("claimName")
    return f"PVC {claim}" if claim else "workspace volume"


async def _volume(reader: _Reader, targets: ClusterTargets) -> ClusterCheck:
    subject = _volume_subject(targets)
    claim = (targets.volume.get("persistentVolumeClaim") or {}).get("claimName")
    if not claim:
        kinds = ", ".join(key for key in targets.volume if key != "name") or "none"
        return ClusterCheck(subject, "unknown", f"a {kinds} volume, not a PersistentVolumeClaim: not checked")
    try:
        found = await reader.get(
            f"/api/v1/namespaces/{quote(targets.namespace)}/persistentvolumeclaims/{quote(str(claim))}"
        )
    except _Refused as error:
        return ClusterCheck(subject, "unknown", f"not readable here: {error}")
    if found is None:
        fix = f"create it in namespace {targets.namespace} with the workspace on it, or set kubernetes.workspace_pvc"
        return ClusterCheck(subject, "wrong", f"does not exist in namespace {targets.namespace}", fix)
    phase = (found.get("status") or {}).get("phase") or "no phase"
    if phase != "Bound":
        fix = f"the workspace must already be on a bound volume: kubectl -n {targets.namespace} describe pvc {claim}"
        return ClusterCheck(subject, "wrong", f"is {phase}, not Bound", fix)
    volume = (found.get("spec") or {}).get("volumeName")
    return ClusterCheck(subject, "ok", f"Bound{f' to {volume}' if volume else ''}")


async def _gpu_nodes(reader: _Reader, targets: ClusterTargets) -> ClusterCheck:
    subject = "GPU nodes"
    if targets.gpus_per_job == 0:
        return ClusterCheck(subject, "ok", "not needed: the run's jobs use no GPU")
    selector = ",".join(f"{key}={value}" for key, value in sorted(targets.node_selector.items()))
    try:
        found = await reader.get("/api/v1/nodes", query=[("labelSelector", selector)] if selector else ())
    except _Refused as error:
        return ClusterCheck(subject, "unknown", f"nodes are not readable here: {error}")
    nodes = (found or {}).get("items") or []
    gpus = [_allocatable_gpus(node) for node in nodes]
    matching = f"nodes matching {selector}" if selector else "nodes"
    enough = [count for count in gpus if count >= targets.gpus_per_job]
    if enough:
        return ClusterCheck(
            subject, "ok", f"{len(enough)} of {len(nodes)} {matching} have {GPU_RESOURCE} >= {targets.gpus_per_job}"
        )
    most = max(gpus, default=0)
    fix = (
        f"add GPU nodes with the NVIDIA device plugin, or lower gpus_per_job to {most}"
        if most
        else "add GPU nodes with the NVIDIA device plugin, fix kubernetes.node_selector, or set gpus: 0"
    )
    seen = f"{len(nodes)} {matching}, none with {targets.gpus_per_job} allocatable {GPU_RESOURCE} (most: {most})"
    return ClusterCheck(subject, "wrong", seen, fix)


def _allocatable_gpus(node: Mapping[str, Any]) -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0)
    try:
        return int(str(value))
    except ValueError:
        return 0


async def _secret(reader: _Reader, namespace: str, name: str, role: str) -> ClusterCheck:
    subject = f"{role} {name}"
    if _BLOCK_REFERENCE in name:
        return ClusterCheck(subject, "unknown", "its name comes from a Prefect block the worker resolves: not checked")
    try:
        found = await reader.get(f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}", accept=_METADATA_ONLY)
    except _Refused as error:
        return ClusterCheck(subject, "unknown", f"not readable here: {error}")
    if found is None:
        fix = f"create it in namespace {namespace} (kubectl -n {namespace} create secret ...) or correct the name"
        return ClusterCheck(subject, "wrong", f"does not exist in namespace {namespace}", fix)
    return ClusterCheck(subject, "ok", "exists")


async def connect(environ: Mapping[str, str]) -> Any:
    """An API client from KUBECONFIG (else ~/.kube/config; context TAO_K8S_CONTEXT, else the current one) or the
    pod's service account; None when neither is there."""
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient, Configuration

    kubeconfig = environ.get("KUBECONFIG") or str(Path(environ.get("HOME") or Path.home()) / ".kube" / "config")
    if any(Path(part).is_file() for part in kubeconfig.split(":") if part):
        context = environ.get("TAO_K8S_CONTEXT") or None  # the reference's variable; None: the current context
        return await config.new_client_from_config(config_file=kubeconfig, context=context, persist_config=False)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return ApiClient(configuration)
    return None


async def probe_cluster(targets: ClusterTargets, environ: Mapping[str, str], *, timeout_s: float) -> list[ClusterCheck]:
    """Connect as `connect` does and run every check; a cluster that cannot be asked gives UNKNOWN checks."""
    try:
        client = await connect(environ)
    except Exception as error:  # a broken kubeconfig: kubernetes_asyncio raises ConfigException and others
        return unknown_checks(targets, f"the kubeconfig could not be loaded ({type(error).__name__}: {error})")
    if client is None:
        why = "no kubeconfig (KUBECONFIG, ~/.kube/config) and not inside a pod: the cluster was not asked"
        return unknown_checks(targets, why)
    async with client:
        return await check_cluster(client, targets, timeout_s=timeout_s)


def probe_cluster_now(targets: ClusterTargets, environ: Mapping[str, str], *, timeout_s: float) -> list[ClusterCheck]:
    """`probe_cluster` from synchronous code, also where an event loop already runs (then in its own thread)."""
    coroutine = probe_cluster(targets, environ, timeout_s=timeout_s)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


__all__ = [
    "ClusterCheck",
    "ClusterTargets",
    "check_cluster",
    "connect",
    "probe_cluster",
    "probe_cluster_now",
    "summarize",
    "unknown_checks",
]
