"""A Kubernetes API stand-in on 127.0.0.1 for the worker's calls and the pre-flight's reads (aiohttp).

No real API server can run here. This small application answers the few endpoints involved: create a Job (as
the API server does, it names it from generateName and gives it a uid), read a Job's status, list its pods by
the `job-name` label, delete a Job; and for the pre-flight: read a namespace, a PersistentVolumeClaim and a
Secret (metadata only when the client asks for PartialObjectMetadata, as a real server does), list nodes by
label selector. It stores objects verbatim and records every request; `forbidden` makes a resource answer 403,
as RBAC would. What it cannot show is anything a real cluster adds: scheduling, GPU accounting, kubelet
evictions, the Job controller, volume binding.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class KubernetesStandIn:
    """Jobs and pods in memory, behind the batch/v1 and core/v1 paths the worker and `read_job_outcome` call."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.accepted: list[tuple[str, str]] = []  # (path, Accept header) of every request
        self._suffix = itertools.count(1)
        self.app = web.Application(middlewares=[self._record])
        jobs = "/apis/batch/v1/namespaces/{namespace}/jobs"
        self.app.router.add_post(jobs, self._create_job)
        self.app.router.add_get(jobs + "/{name}/status", self._read_job)
        self.app.router.add_get(jobs + "/{name}", self._read_job)
        self.app.router.add_delete(jobs + "/{name}", self._delete_job)
        self.app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._list_pods)
        # What the pre-flight reads: a cluster with namespace, claim, GPU node and Secrets is set by `ready`.
        self.namespaces: set[str] = set()
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: list[dict[str, Any]] = []
        self.forbidden: set[str] = set()
        self.app.router.add_get("/api/v1/namespaces/{name}", self._read_namespace)
        self.app.router.add_get("/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}", self._read_claim)
        self.app.router.add_get("/api/v1/namespaces/{namespace}/secrets/{name}", self._read_secret)
        self.app.router.add_get("/api/v1/nodes", self._list_nodes)

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, dict(request.query), body))
        self.accepted.append((request.path, request.headers.get("Accept", "")))
        return await handler(request)

    async def _create_job(self, request: web.Request) -> web.Response:
        namespace, body = request.match_info["namespace"], await request.json()
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("name", f"{metadata.pop('generateName', 'job-')}s{next(self._suffix):04d}")
        metadata.update(namespace=namespace, uid=str(uuid.uuid4()))
        self.jobs[(namespace, metadata["name"])] = body
        return web.json_response(body, status=201)

    async def _read_job(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.jobs:
            return _not_found(key[1])
        return web.json_response(self.jobs[key])

    async def _delete_job(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.jobs:
            return _not_found(key[1])
        self.jobs.pop(key)
        self.pods.pop(key, None)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})

    async def _list_pods(self, request: web.Request) -> web.Response:
        selector = request.query.get("labelSelector", "")
        name = selector.removeprefix("job-name=") if selector.startswith("job-name=") else None
        items = self.pods.get((request.match_info["namespace"], name), []) if name else []
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def ready(self, namespace: str = "default", claim: str = "aoi-workspace", secrets: tuple[str, ...] = ()) -> None:
        """A cluster where the run's Jobs can start: namespace, a bound claim, one 8-GPU node, the Secrets."""
        self.namespaces.add(namespace)
        self.claims[(namespace, claim)] = {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {"volumeName": "pv-nfs-1"},
            "status": {"phase": "Bound"},
        }
        self.nodes = [node("cpu-1", {}), node("gpu-1", {"nvidia.com/gpu": "8"}, {"nvidia.com/gpu.present": "true"})]
        for name in secrets:
            self.secrets[(namespace, name)] = {
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "c2VjcmV0LXZhbHVlLW5ldmVyLXJlYWQ="},
            }

    def _refuse(self, resource: str) -> web.Response | None:
        if resource not in self.forbidden:
            return None
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403}
        return web.json_response({**body, "message": f"{resource} is forbidden for this user"}, status=403)

    async def _read_namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if refused := self._refuse("namespaces"):
            return refused
        if name not in self.namespaces:
            return _not_found(name, "namespaces")
        return web.json_response({"kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}})

    async def _read_claim(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if refused := self._refuse("persistentvolumeclaims"):
            return refused
        if key not in self.claims:
            return _not_found(key[1], "persistentvolumeclaims")
        return web.json_response(self.claims[key])

    async def _read_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if refused := self._refuse("secrets"):
            return refused
        if key not in self.secrets:
            return _not_found(key[1], "secrets")
        secret = self.secrets[key]
        if "as=PartialObjectMetadata" in request.headers.get("Accept", ""):
            return web.json_response({"kind": "PartialObjectMetadata", "metadata": secret["metadata"]})
        return web.json_response(secret)

    async def _list_nodes(self, request: web.Request) -> web.Response:
        if refused := self._refuse("nodes"):
            return refused
        wanted = dict(pair.split("=", 1) for pair in request.query.get("labelSelector", "").split(",") if pair)
        items = [
            item
            for item in self.nodes
            if all(item["metadata"].get("labels", {}).get(key) == value for key, value in wanted.items())
        ]
        return web.json_response({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items})

    def set_state(self, namespace: str, name: str, status: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self.jobs[(namespace, name)]["status"] = status
        labelled = [{**pod, "metadata": {**pod.get("metadata", {}), "labels": {"job-name": name}}} for pod in pods]
        self.pods[(namespace, name)] = labelled


def node(name: str, allocatable: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A node as the API server lists it (only what the pre-flight reads)."""
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", **allocatable}},
    }


def _not_found(name: str, resource: str = "jobs.batch") -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    return web.json_response({**body, "message": f'{resource} "{name}" not found'}, status=404)


def kubeconfig(url: str) -> dict[str, Any]:
    """A kubeconfig whose one context is the stand-in at `url`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stand-in", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "stand-in-token"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester"}}],
        "current-context": "stand-in",
    }
